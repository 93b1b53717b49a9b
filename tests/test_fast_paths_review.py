"""Where this round's fast paths in C (the switch's sealing step, switch_seal.c; the VMM
entry passed by, pass_by.c; the interrupt hook, intr.c) could part from their Python
references, each case run both ways on a real machine and compared: what a handler
added later sees, the trace's order, the registers and memory."""
import pytest

from vmkit.hw.counter import library
from vmkit.kernel import switch
from vmkit.kernel.frame import Frame

from test_switch_seal import machine, counts

pytestmark = pytest.mark.skipif(library() is None, reason="the fast paths need the C library")


def _armed_machine(in_c, steps=None):
    """The teaching machine stopped (between two board.run calls) inside a switch's save:
    the step in C armed for it. `steps`: run that many 50-instruction slices (the other
    path's count), else until armed. Returns (board, kernel, steps)."""
    board, kernel, _ = machine()
    board.run(100_000)
    n = 0
    while (n < steps) if steps is not None else not kernel._sealing.seals[0].armed:
        board.run(50)
        n += 1
    return board, kernel, n


def test_a_probe_added_while_a_switch_is_armed_sees_its_saved_step(monkeypatch):
    """A lesson's probe at the dispatcher, added between two runs while a switch's save is
    under way (the step in C armed for it at `begin`), is called at the SAVED stop as with
    the step in Python: adding a handler disarms the step, as it disarms the pass."""
    seen, steps = {}, None
    for in_c in (True, False):
        monkeypatch.setattr(switch, "SEAL_IN_C", in_c)
        board, kernel, steps = _armed_machine(in_c, steps)
        calls = seen[in_c] = []
        board.cpu.on_execute(kernel.base + kernel.image.dispatch,
                             lambda cpu: calls.append((board.now(), Frame(board.memory, cpu["esp"]).vector)))
        board.run(30_000)
    assert seen[True] == seen[False] and len(seen[False]) > 3


def test_a_local_apic_store_after_an_interrupt_c_delivered_is_told_after_it():
    """x86 at CPL 0 takes `int 0x80` (intr.c delivers it, its handler an iretd), then programs
    its local APIC's timer with a store (Unicorn's MMIO callback, which traces lapic.timer):
    the trace holds the delivery first, at its time, then the store, as with the Python hook."""
    from test_intr_c import run, INT_80, IRETD
    store = b"\xc7\x05\x80\x03\xe0\xfe\x00\x10\x00\x00"      # mov dword ptr [0xfee00380], 0x1000
    code = INT_80 + store + b"\xeb\xfe"
    fast, took = run(True, {"cpl": 0}, code, handler=IRETD)
    slow, _ = run(False, {"cpl": 0}, code, handler=IRETD)
    assert took == (1, 0)
    kinds = [line.split()[2] for line in fast[0]["trace"]]
    assert kinds[-2:] == ["cpu.deliver", "lapic.timer"]
    assert fast == slow


def test_step_by_step_begun_while_a_switch_is_armed_stops_at_its_saved_step():
    """switch.step_by_step entered between two runs while a switch's save is under way (its
    step in C armed at `begin`, before): inside, that switch's SAVED step too is a stop, the
    Python's (a tool reading the machine at each step needs the stop)."""
    board, kernel, _ = _armed_machine(True)
    (done, declined), = counts(kernel, board)
    with switch.step_by_step(kernel):
        board.run(30_000)
    assert counts(kernel, board) == [(done, declined)] and len(board.trace.of("switch.check")) > 1


def _state(board):
    import hashlib
    from test_switch_seal import REGISTERS
    return ([str(e) for e in board.trace.events], [c.read(*REGISTERS) for c in board.cpus],
            hashlib.sha1(bytes(board.memory.buffer)).hexdigest())


def test_a_step_in_c_inside_a_run_that_waits_for_if_is_the_pythons(monkeypatch):
    """CPU 0's local APIC timer asks for an interrupt while its switch's save runs with IF
    clear: the board runs it until IF is set (counter.c's wait_if), the step in C done in that
    run. The interrupt is taken where it was with the step in Python, the machine the same."""
    from vmkit.hw import counter as counter_module
    from vmkit.kernel import smp
    waking, real = [], counter_module.Counter.run

    def run(self, begin, budget, until, skip=None, wake=False):
        done = self._arming.done if wake and getattr(self, "_arming", None) else None
        got = real(self, begin, budget, until, skip, wake)
        if done is not None:
            waking.append(self._arming.done - done)
        return got
    monkeypatch.setattr(counter_module.Counter, "run", run)
    seen, steps = {}, None
    for in_c in (True, False):
        monkeypatch.setattr(switch, "SEAL_IN_C", in_c)
        board, kernel, steps = _armed_machine(in_c, steps)
        board.cpus[0].lapic.accept(smp.TIMER_VECTOR)
        board.run(30_000)
        seen[in_c] = _state(board)
        if in_c:
            assert sum(waking) == 1                    # the step was C's, in a run waiting for IF
    assert seen[True] == seen[False]
    assert any("vector=0xf0 kind=irq" in line for line in seen[True][0])


def test_every_fast_path_on_or_off_with_slices_ending_anywhere(monkeypatch):
    """Two CPUs, two busy VMs each, the board run in slices of 1 to 1000 instructions (a slice
    can end at, just before or just after the dispatcher's and the VMM's breakpoints): the
    step in C, the pass and the C interrupt hook all on, or all off, leave the same machine."""
    import itertools
    from vmkit.hw.pass_by import PassBy
    seen, used = {}, {}
    for fast in (True, False):
        monkeypatch.setattr(switch, "SEAL_IN_C", fast)
        monkeypatch.setattr(PassBy, "enabled", fast)
        board, kernel, _ = machine(2)
        for cpu in board.cpus:
            cpu._intr.off = not fast
        board.run(300_000)
        before = [(cpu._intr.in_c, cpu.counter.state.passed) for cpu in board.cpus]
        ran, slices = 0, itertools.cycle([1, 2, 3, 5, 7, 11, 13, 97, 1000])
        while ran < 100_000:
            step = next(slices)
            board.run(step)
            ran += step
        seen[fast] = _state(board)
        used[fast] = (sum(d for d, _ in counts(kernel, board)),
                      [(cpu._intr.in_c - c, cpu.counter.state.passed - p)
                       for cpu, (c, p) in zip(board.cpus, before)])
    assert used[True][0] > 10 and all(c > 5 and p > 5 for c, p in used[True][1])
    assert used[False] == (0, [(0, 0), (0, 0)])
    assert seen[True] == seen[False]
