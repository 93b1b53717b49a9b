"""Grades exercise 04: the kernel forwards host-managed IRQs with the
learner's two functions; the order of the claims is read from the PIC when
the COS's handler starts (masked, acknowledged) and after (unmasked), and a
jammed level-triggered device must not storm the kernel while masking is on
(and must, caught by the kernel's detector, when the teaching switch is off).

A wrong answer is diagnosed from the real 8259A, read through its ports as a
driver reads it (IMR at 0x21; ISR at 0x20 after OCW3 0x0B): at the moment
the COS's own handler starts, and after the run. pic.eoi(line) is a specific
EOI (OCW2 0x60 | line), so an EOI for the wrong line leaves the right one in
service; the PIC's own record of the EOIs it took (`pic.eoi`) names which.

Inside kernel_sees_irq the order of mask, EOI and queue is free: the kernel's
handler runs with IF clear and the COS runs only after it, so no order of
the three can be told from another by the machine, and none is refused."""
from vmkit.hw.x86 import decode_gate
from vmkit.kernel.kernel import IRQ_BASE
from vmkit.lessons import interrupts

SERIAL = interrupts.SERIAL
OCW3_READ_ISR, OCW3_READ_IRR = 0x0B, 0x0A


def _machine(module):
    board, cos, kernel = interrupts.displaced()
    board.eois = []                              # the lines the PIC took EOI for inside kernel_sees_irq

    def kernel_sees_irq(line, *args, **kwargs):
        mark = board.trace.mark()
        try:
            return module.kernel_sees_irq(line, *args, **kwargs)
        finally:
            board.eois += [e["line"] for e in board.trace.since(mark, "pic.eoi")]
    kernel.irqs.kernel_sees_irq = kernel_sees_irq
    kernel.irqs.cos_acknowledged = module.cos_acknowledged
    return board, cos, kernel


def read_pic(board):
    """(IMR, ISR) of the master 8259A, through its ports."""
    ports = board.ports
    imr = ports.read(0x21, 1)
    ports.write(0x20, 1, OCW3_READ_ISR)
    isr = ports.read(0x20, 1)
    ports.write(0x20, 1, OCW3_READ_IRR)          # back to the power-on choice
    return imr, isr


def _no_eoi(board, line, isr, then):
    """Why `line` is still in service (ISR `isr`): the EOIs the PIC took inside the learner's
    kernel_sees_irq name other lines (None if they name none)."""
    others = sorted(set(board.eois) - {line})
    if others:
        return (f"{then} the real PIC still had IRQ {line} in service (ISR {isr:#04x}): the kernel sent "
                f"a specific EOI for IRQ {others[0]}, not IRQ {line}, and that leaves IRQ {line} in service. "
                f"Acknowledge the line that interrupted: pic.eoi(line)")
    return None


def _at_cos_handler(board, kernel, line, seen, what=None):
    """Record (IMR, ISR), or what(), each time the COS's own handler for `line` starts."""
    v = kernel.vcpu
    gate = decode_gate(board.memory.read(v.idt_base + 8 * (IRQ_BASE + line), 8))
    what = what or (lambda: read_pic(board))
    board.cpu.on_execute(gate.offset, lambda cpu: seen.append(what()))


def _again_before_handled(board, mark, vector, started):
    """How many times `vector` entered the kernel (through its IDT: the CPU's delivery) with
    no start of the COS's handler for it since the entry before (`started`: their times)."""
    entries = [e.time for e in board.trace.since(mark, "cpu.deliver") if e.data.get("vector") == vector]
    return sum(1 for a, b in zip(entries, entries[1:]) if not any(a <= t < b for t in started))


def check_order(module):
    board, cos, kernel = _machine(module)
    seen = []
    _at_cos_handler(board, kernel, SERIAL, seen)
    mark = board.trace.mark()
    cos.type("x")
    board.run(300_000)
    bit = 1 << SERIAL
    if not seen:
        if not any(e["line"] == SERIAL for e in board.trace.since(mark, "irq.queued")):
            return ("a key typed on the serial console entered the kernel (IRQ 4), but the COS's handler never "
                    "ran: nothing was queued for the COS (cos.queue(line))")
        return "a key typed on the serial console was queued for the COS, but its handler never ran"
    imr, isr = seen[0]
    if isr & bit:
        return _no_eoi(board, SERIAL, isr, "when the COS's handler for IRQ 4 started,") or (
                f"when the COS's handler for IRQ 4 started, the real PIC still had IRQ 4 in service "
                f"(ISR {isr:#04x}): the kernel never sent it EOI, so the PIC delivers nothing of lower "
                f"priority again. Acknowledge the PIC (pic.eoi) in kernel_sees_irq")
    if not imr & bit:
        return (f"when the COS's handler for IRQ 4 started, the line was not masked at the real PIC "
                f"(IMR {imr:#04x}): mask it from the moment the kernel senses the IRQ until the COS "
                f"has handled it (claim 11)")
    imr, isr = read_pic(board)
    if imr & bit:
        return (f"the COS's handler acknowledged IRQ 4 (EOI to its virtual PIC), yet the line is still "
                f"masked at the real PIC (IMR {imr:#04x}): unmask it in cos_acknowledged, or the serial "
                f"port never interrupts again")
    return None


def check_storm(module):
    for masking in (True, False):
        board, cos, kernel = _machine(module)
        kernel.irqs.masking = masking
        at_handler, started = [], []
        _at_cos_handler(board, kernel, board.sensor.irq, at_handler)
        _at_cos_handler(board, kernel, board.sensor.irq, started, lambda: board.now())
        work = kernel.work_done()
        mark = board.trace.mark()
        board.sensor.sample()
        board.sensor.jam()
        if masking:
            cos.type("keys")                # the serial line's EOIs come while the sensor's line is masked
        board.run(100_000)
        storms = board.trace.of("irq.storm")
        line, bit = board.sensor.irq, 1 << board.sensor.irq
        if masking and storms:
            return (f"with masking on, the jammed sensor stormed the kernel ({storms[0]['interrupts']} IRQs "
                    f"with no acknowledgement from the COS): mask the line (pic.mask) when its IRQ "
                    f"enters the kernel")
        if masking and kernel.work_done() - work < 3000:      # at least one piece of kernel work
            return "with masking on, the kernel's own work did not progress during the jam"
        again = masking and _again_before_handled(board, mark, IRQ_BASE + line, started)
        if again:
            return (f"with masking on, the jammed sensor's IRQ {line} entered the kernel again before the "
                    f"COS's handler had run for it, {again} times, while keys typed on the serial console "
                    f"(IRQ 4) were acknowledged: its line was unmasked before the COS handled it (claim 11). "
                    f"cos_acknowledged is told the line the COS acknowledged: unmask that line only")
        if not masking and not at_handler:
            entered = sum(e.data.get("vector") == IRQ_BASE + line for e in board.trace.since(mark, "cpu.deliver"))
            return (f"with masking switched off, the COS's handler for IRQ {line} never ran: the jammed "
                    f"sensor's IRQ entered the kernel {entered} times and was never queued for the COS. "
                    f"Forward it whether or not you mask: cos.queue(line)")
        if not masking and not storms:
            imr, isr = read_pic(board)
            if isr & bit:
                return _no_eoi(board, line, isr, "with masking switched off there was no storm:") or (
                        f"with masking switched off there was no storm: the real PIC still has IRQ {line} "
                        f"in service (ISR {isr:#04x}), so it cannot interrupt again. The kernel never sent "
                        f"it EOI: acknowledge the PIC (pic.eoi) whether or not you mask")
            masked = [imr for imr, _ in at_handler if imr & bit] or ([imr] if imr & bit else [])
            if masked:
                return (f"with masking switched off there was no storm: IRQ {line} was masked at the real "
                        f"PIC (IMR {masked[0]:#04x}) while the COS handled it. With `masking` False, "
                        f"kernel_sees_irq must not mask it")
            return "with masking switched off there was no storm"
    return None


CHECKS = [("forward, mask, deliver on next run, unmask", 2, check_order),
          ("a jammed level-triggered line", 2, check_storm)]
FUNCTION = None            # two functions: kernel_sees_irq and cos_acknowledged
