"""The kernel's work loop (kernel/image.py `work:`) in the COS's world is a flat stretch
(limits.py): its stores, past the COS's limit, no longer go through the limit hooks; and the
COS, resumed right after it, still cannot store past its limit."""
import pytest

from vmkit.kernel import layout
from vmkit.lessons import takeover
from test_cos_contained import displaced, run_module  # noqa: F401 (a fixture)

pytestmark = pytest.mark.needs_c("the limit filter's flat stretch")


def test_the_kernels_work_loop_runs_with_the_limit_hooks_off():
    """Each iteration of the loop stores past the COS's limit twice (`inc dword ptr
    [WORK_DONE]`'s read and write): with the hooks on, the filter saw each (and every other
    kernel access above the COS); now fewer than one per iteration reach it."""
    board, cos, loader = takeover.takeover()
    kernel, lim = loader.kernel, board.cpu.limits
    board.run(50_000)
    calls, done, stretches = lim.state.calls, kernel.work_done(), lim.stretches
    mark = board.trace.mark()
    board.run(300_000)
    iterations = kernel.work_done() - done
    pieces = len(board.trace.since(mark, "kernel.work"))
    assert pieces >= 5 and iterations >= 5 * 3000 - 3000       # (the last piece may be unfinished)
    assert lim.stretches - stretches >= pieces - 1
    assert lim.state.calls - calls < iterations
    assert board.cpu.shutdown is None and not lim.suspended


def test_the_cos_storing_past_its_limit_right_after_the_kernels_work_is_refused(displaced):
    """The COS halts (the kernel idles), a tick brings the kernel's work (a stretch), then
    the COS resumes and its next store goes into the kernel's IDT: refused, each time."""
    board, cos, loader = displaced
    kernel = loader.kernel
    gate = kernel.base + layout.IDT + 13 * 8
    before = board.memory.read(gate, 8)
    stretches = board.cpu.limits.stretches
    mark = run_module(board, cos, f"""
init:   mov ecx, 12
l:      hlt
        mov dword ptr [{gate:#x}], 0xdeadbeef
        loop l
        xor eax, eax
        ret""")
    assert board.memory.read(gate, 8) == before
    assert cos.var("MODULE_RESULT") == 0 and board.cpu.shutdown is None
    refused = board.trace.since(mark, "kernel.cos_limit")
    assert len(refused) == 12 and {e["address"] for e in refused} == {gate}
    work = board.trace.since(mark, "kernel.work")
    assert work and board.cpu.limits.stretches - stretches >= len(work)
    # right after each piece of work, the COS's first store past its limit was refused
    events = board.trace.since(mark, "kernel.work", "kernel.cos_limit", "kernel.idle")
    after = [b.kind for a, b in zip(events, events[1:]) if a.kind == "kernel.work"]
    assert after == ["kernel.cos_limit"] * len(work)
