"""Exercise 04 — forward a host-managed device's interrupt to the COS (claims 9-11).

The kernel calls `kernel_sees_irq` when an IRQ of a host-managed device
(the COS's: its serial port, keyboard, sensor) enters the kernel's IDT,
and `cos_acknowledged` when the COS's own handler sends EOI to its
(virtual) PIC.

    pic.mask(line) / pic.unmask(line)   mask or unmask the line at the real 8259A
    pic.eoi(line)                       specific end of interrupt for `line` at the real
                                        8259A (OCW2 0x60 | line: only that line leaves service)
    pic.is_masked(line)                 whether the kernel has it masked
    cos.queue(line)                     pending for the COS: delivered through its
                                        own IDT when it next runs and wants interrupts

Claim 9: forward to the COS, which handles it. Claim 10: not at once, but
when the COS next runs (queue it; the kernel delivers queued lines on its
way back to the COS). Claim 11: from the moment the kernel senses it until
the COS has handled it, mask the line, so a level-triggered device whose
line stays up does not interrupt again and again. `masking` is a teaching
switch: when False, do not mask (and watch the storm in notebook 04).
Acknowledge the PIC in either case, or nothing on that controller of lower
priority is delivered again.
"""


def kernel_sees_irq(line, pic, cos, masking=True):
    """The IRQ of host-managed `line` has entered the kernel."""
    raise NotImplementedError("not attempted: write this (see the docstring)")


def cos_acknowledged(line, pic):
    """The COS's handler acknowledged `line` (EOI to its virtual PIC)."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
