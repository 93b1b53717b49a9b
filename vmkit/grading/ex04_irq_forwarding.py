"""Grades exercise 04: the kernel forwards host-managed IRQs with the
learner's two functions; the delivery order must be the claims', and a
jammed level-triggered device must not storm the kernel while masking is on
(and must, caught by the kernel's detector, when the teaching switch is off)."""
from vmkit.lessons import interrupts

ORDER = ["irq.raise", "cpu.deliver", "irq.masked", "irq.queued", "kernel.inject", "irq.cos_eoi", "irq.unmasked"]


def _machine(module):
    board, cos, kernel = interrupts.displaced()
    kernel.irqs.kernel_sees_irq = module.kernel_sees_irq
    kernel.irqs.cos_acknowledged = module.cos_acknowledged
    return board, cos, kernel


def check_order(module):
    board, cos, kernel = _machine(module)
    mark = board.trace.mark()
    cos.type("x")
    board.run(300_000)
    seen = [e.kind for e in board.trace.since(mark, *ORDER)
            if e.data.get("line") == 4 or e.data.get("vector") == 0x24]
    if seen[:len(ORDER)] != ORDER:
        return f"for a key typed on the serial console the trace shows {seen[:9]}, expected {ORDER}"
    if board.pic.masked(4):
        return "the serial line stayed masked after the COS acknowledged it"
    return None


def check_storm(module):
    for masking in (True, False):
        board, cos, kernel = _machine(module)
        kernel.irqs.masking = masking
        work = kernel.work_done()
        board.sensor.sample()
        board.sensor.jam()
        board.run(100_000)
        storms = board.trace.of("irq.storm")
        if masking and storms:
            return f"with masking on, the jammed sensor stormed the kernel ({storms[0]['interrupts']} IRQs unacknowledged)"
        if masking and kernel.work_done() - work < 3000:      # at least one piece of kernel work
            return "with masking on, the kernel's own work did not progress during the jam"
        if not masking and not storms:
            return "with masking switched off there was no storm: is the line still masked?"
    return None


CHECKS = [("forward, mask, deliver on next run, unmask", 2, check_order),
          ("a jammed level-triggered line", 2, check_storm)]
FUNCTION = None            # two functions: kernel_sees_irq and cos_acknowledged
