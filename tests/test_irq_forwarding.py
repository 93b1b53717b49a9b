"""Claims 9-11, 26: host-managed IRQs go to the COS through the kernel,
masked from the kernel's first sight until the COS acknowledges, and
delivered only when the COS next runs."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.lessons import takeover

SERIAL = 4


@pytest.fixture
def displaced():
    board, cos, loader = takeover.takeover()
    return board, cos, loader.kernel


def kinds_for_line(events, line):
    return [e for e in events if e.data.get("line") == line or e.data.get("vector") == 0x20 + line]


def test_a_host_managed_irq_reaches_the_cos_handler_through_the_kernel(displaced):
    board, cos, kernel = displaced
    mark = board.trace.mark()
    serial_irqs = board.memory.read_u32(cos_layout.SERIAL_IRQS)
    cos.type("x")
    board.run(300_000)
    assert board.memory.read_u32(cos_layout.SERIAL_IRQS) == serial_irqs + 1
    events = kinds_for_line(board.trace.since(mark), SERIAL)
    order = [e.kind for e in events if e.kind in ("irq.raise", "cpu.deliver", "irq.masked", "irq.queued",
                                                  "kernel.inject", "irq.cos_eoi", "irq.unmasked")]
    assert order == ["irq.raise", "cpu.deliver", "irq.masked", "irq.queued", "kernel.inject",
                     "irq.cos_eoi", "irq.unmasked"]
    first = events[[e.kind for e in events].index("cpu.deliver")]
    assert kernel.contains(first["handler"])                      # the kernel's handler first
    inject = events[[e.kind for e in events].index("kernel.inject")]
    assert not kernel.contains(inject["handler"])                 # then the COS's own


def test_the_line_is_masked_from_the_kernels_sight_until_the_cos_acknowledges(displaced):
    board, cos, kernel = displaced
    mark = board.trace.mark()
    cos.type("y")
    board.run(300_000)
    events = board.trace.since(mark)
    masked_at = next(i for i, e in enumerate(events) if e.kind == "irq.masked" and e["line"] == SERIAL)
    acked_at = next(i for i, e in enumerate(events) if e.kind == "irq.cos_eoi" and e["line"] == SERIAL)
    masks = [e["imr"] for e in events[masked_at:acked_at + 3] if e.kind == "pic.mask" and e["chip"] == "master"]
    assert masks[0] & (1 << SERIAL)                               # masked at the PIC ...
    assert not masks[-1] & (1 << SERIAL)                          # ... and unmasked after the EOI
    assert all(m & (1 << SERIAL) for m in masks[:-1])
    assert not board.pic.masked(SERIAL)


def test_delivery_waits_until_the_cos_next_runs(displaced):
    board, cos, kernel = displaced
    for _ in range(4000):                                         # find the kernel at its own work
        board.run(500)
        if kernel.away == "work":
            break
    assert kernel.away == "work"
    work_before = kernel.work_done()
    mark = board.trace.mark()
    cos.type("z")                                                 # arrives while the kernel works
    board.run(200_000)
    events = board.trace.since(mark)
    queued = next(e for e in events if e.kind == "irq.queued" and e["line"] == SERIAL)
    runs = next(e for e in events if e.kind == "kernel.cos_runs")
    inject = next(e for e in events if e.kind == "kernel.inject" and e["vector"] == 0x20 + SERIAL)
    assert queued.time < runs.time <= inject.time
    assert kernel.work_done() >= work_before + 3000               # the kernel finished its work first


def test_without_masking_a_stuck_line_would_recur_but_the_kernel_still_serves(displaced):
    """The serial line is edge-triggered: even unmasked, one character, one IRQ."""
    board, cos, kernel = displaced
    kernel.irqs.masking = False
    mark = board.trace.mark()
    cos.type("q")
    board.run(300_000)
    assert len([e for e in board.trace.since(mark, "irq.queued") if e["line"] == SERIAL]) == 1
    assert not board.trace.since(mark, "irq.masked")
