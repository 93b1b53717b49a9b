"""Claims 9-11, 26: host-managed IRQs go to the COS through the kernel,
masked from the kernel's first sight until the COS acknowledges, and
delivered only when the COS next runs."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.x86 import decode_gate
from vmkit.lessons import takeover
from test_unload import at_events

SERIAL = 4


@pytest.fixture
def displaced():
    board, cos, loader = takeover.takeover()
    return board, cos, loader.kernel


def test_a_host_managed_irq_reaches_the_cos_handler_through_the_kernel(displaced):
    """Claims 9-11, step by step in what the machine held as each step happened: the
    line masked at the real PIC, pending in the COS's virtual CPU, the COS's handler
    entered through its own IDT, its count up before its EOI, the line unmasked after."""
    board, cos, kernel = displaced
    serial_irqs = board.memory.read_u32(cos_layout.SERIAL_IRQS)
    steps = at_events(board, ("irq.", "cpu.deliver", "kernel.inject"), lambda: {
        "masked": board.pic.masked(SERIAL), "pending": bool(kernel.vcpu.pending & 1 << SERIAL),
        "counted": board.memory.read_u32(cos_layout.SERIAL_IRQS) - serial_irqs,
        "eip": board.cpu["eip"], "cpl": board.cpu.cpl})
    cos.type("x")
    board.run(300_000)
    del board.trace.emit
    assert board.memory.read_u32(cos_layout.SERIAL_IRQS) == serial_irqs + 1
    ours = [(e.kind, seen) for e, seen in steps
            if e.data.get("line") == SERIAL or e.data.get("vector") == 0x20 + SERIAL]
    order = ["irq.raise", "cpu.deliver", "irq.masked", "irq.queued", "kernel.inject", "irq.cos_eoi",
             "irq.unmasked"]
    at = {kind: seen for kind, seen in reversed(ours)}          # each step's first time
    assert [k for k, _ in ours if k in order] == order
    assert kernel.contains(at["cpu.deliver"]["eip"]) and at["cpu.deliver"]["cpl"] == 0   # the kernel's first
    assert not at["irq.raise"]["masked"]
    assert at["irq.queued"]["masked"] and at["irq.queued"]["pending"]     # masked at the real PIC
    inject = at["kernel.inject"]                                 # taken from pending; the COS's
    assert (inject["masked"], inject["pending"], inject["counted"]) == (True, False, 0)   # handler: not yet
    eoi = at["irq.cos_eoi"]                                      # its handler counted, then EOI'd,
    assert (eoi["counted"], eoi["masked"], eoi["pending"]) == (1, True, False)   # the line still masked
    assert not board.pic.masked(SERIAL)                          # and unmasked after
    handler = next(e for e, _ in steps if e.kind == "kernel.inject")["handler"]
    assert handler == cos.symbols["serial_handler"]              # the COS's own, from its IDT


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
    v = kernel.vcpu
    handler = decode_gate(board.memory.read(v.idt_base + 8 * (0x20 + SERIAL), 8)).offset
    imr_at_handler = []                         # the real 8259A's mask, read through its port
    board.cpu.on_execute(handler, lambda cpu: imr_at_handler.append(board.ports.read(0x21, 1)))
    serial_irqs = board.memory.read_u32(cos_layout.SERIAL_IRQS)
    mark = board.trace.mark()
    cos.type("q")
    board.run(300_000)
    assert len(imr_at_handler) == 1 and not imr_at_handler[0] & (1 << SERIAL)   # unmasked, once
    assert board.memory.read_u32(cos_layout.SERIAL_IRQS) == serial_irqs + 1     # the COS's own count
    assert len([e for e in board.trace.since(mark, "irq.queued") if e["line"] == SERIAL]) == 1


# ---- the COS's virtual PIC (vmkit/kernel/vpic.py) -----------------------------------
def mask_tick_then_unmask(spin=200_000):
    """COS x86: read the IMR, mask IRQ 0 and read it back, program the slave's IMR and
    read it back, spin with interrupts on, then unmask IRQ 0. Ticks noted at each step."""
    t = cos_layout.TICKS
    return f"""
init:   sti
        in al, 0x21
        mov [0x5000], al                ; the IMR as the COS programmed it at boot
        or al, 1
        out 0x21, al                    ; mask IRQ 0, its timer
        in al, 0x21
        mov [0x5001], al
        mov al, 0xf3
        out 0xa1, al
        in al, 0xa1
        mov [0x5002], al
        mov al, 0xff
        out 0xa1, al
        mov eax, [{t:#x}]
        mov [0x5004], eax
        mov ecx, {spin}
spin:   loop spin
        mov eax, [{t:#x}]
        mov [0x5008], eax
        in al, 0x21
        and al, 0xfe
        out 0x21, al                    ; unmask: the tick it held goes in here
        mov eax, [{t:#x}]
        mov [0x500c], eax
        ret
"""


def test_the_cos_masks_a_line_at_its_virtual_pic_reads_it_back_and_gets_it_on_unmask(displaced):
    board, cos, kernel = displaced
    real = (board.pic.master.imr, board.pic.slave.imr)
    mark = takeover.run_module(board, cos, mask_tick_then_unmask())
    m = board.memory
    boot_imr = m.read(0x5000, 1)[0]
    assert boot_imr & 1 == 0                                      # the COS had its timer unmasked
    assert (m.read(0x5001, 1)[0], m.read(0x5002, 1)[0]) == (boot_imr | 1, 0xF3)
    before, masked, unmasked = m.read_u32(0x5004), m.read_u32(0x5008), m.read_u32(0x500C)
    ticks = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 0x20]
    assert len(ticks) > 10                                        # the kernel got the timer all along
    assert masked == before                                       # the COS's handler did not run
    assert unmasked == masked + 1                                 # held, not lost: in at the unmask
    assert (board.pic.master.imr, board.pic.slave.imr) == real    # the real PIC stays the kernel's
    assert kernel.vcpu.imr == boot_imr | 0xFF00                   # kept in its virtual CPU, in kernel memory
    board.run(100_000)
    assert cos.ticks() > unmasked


def test_the_cos_reinitialising_its_pic_clears_its_mask_and_keeps_the_kernels_vectors(displaced):
    board, cos, kernel = displaced
    takeover.run_module(board, cos, """
init:   mov al, 0x11
        out 0x20, al                    ; ICW1: cascade, ICW4 follows
        mov al, 0x40
        out 0x21, al                    ; ICW2 (the kernel keeps vectors 0x20-0x27)
        in al, 0x21
        mov [0x5000], al                ; an 8259A clears its IMR at ICW1
        mov al, 4
        out 0x21, al                    ; ICW3
        mov al, 1
        out 0x21, al                    ; ICW4
        mov al, 0xb8
        out 0x21, al                    ; OCW1 at last
        in al, 0x21
        mov [0x5001], al
        ret
""")
    assert (board.memory.read(0x5000, 1)[0], board.memory.read(0x5001, 1)[0]) == (0, 0xB8)
    assert board.pic.master.vector_base == 0x20
    ticks = cos.ticks()
    board.run(100_000)
    assert cos.ticks() > ticks                                    # IRQ 0 unmasked: ticks still come
