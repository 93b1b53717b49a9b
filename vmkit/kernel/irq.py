"""Interrupts of host-managed devices, forwarded to the COS (claims 9-11, 26).

  raised   the device's line goes up; the PIC interrupts the CPU
  kernel   the IRQ enters through the kernel's IDT, never the COS's (claim 9)
  masked   the kernel masks the line at the PIC at once (claim 11), so a
           device that keeps its line asserted cannot interrupt again
  queued   pending for the COS; delivered when the COS next runs, not at
           once (claim 10): if the kernel is busy with its own work, the COS
           waits until the kernel returns to it
  delivered through the COS's own IDT, to its own handler, once the COS's
           virtual PIC does not mask the line (vpic.py: until then it stays
           pending, as in an 8259A's IRR)
  EOI      the COS acknowledges to its (virtual) PIC
  unmasked the kernel unmasks the real line

Masking can be switched off (`masking = False`) to show why it is there:
a level-triggered device whose line stays asserted then interrupts the
kernel again after every EOI. The storm is detected (more than
STORM_LIMIT interrupts of one line with no COS acknowledgement between)
and reported with counts, and the line is masked to end it.
"""
STORM_LIMIT = 200


def _line(line):
    """`line` if it names an IRQ line of the two 8259As; a clear error, before any port is
    touched, if not (exercise 04 hands these calls a learner's arguments)."""
    if isinstance(line, bool) or not isinstance(line, int) or not 0 <= line < 16:
        raise ValueError(f"IRQ line {line!r} is not one of the two 8259As' 0..15")
    return line


class PicControl:
    """What the kernel may do to the real PIC, as its code would with `out`."""
    def __init__(self, router):
        self.router = router

    def mask(self, line):
        _line(line)
        self.router.kernel.trace.emit("irq.masked", line=line)
        self.router._pic_mask(line, True)

    def unmask(self, line):
        _line(line)
        self.router.kernel.trace.emit("irq.unmasked", line=line)
        self.router._pic_mask(line, False)

    def eoi(self, line):
        """A specific end of interrupt for `line` at the real 8259A (OCW2 0x60 | level)."""
        self.router._pic_eoi(line)

    def is_masked(self, line):
        """Read back from the 8259A's mask register (OCW1), not from a note of our own."""
        _line(line)
        port = 0x21 if line < 8 else 0xA1
        return bool(self.router.kernel.board.ports.read(port, 1) >> (line % 8) & 1)


class CosQueue:
    """The COS's side: interrupts waiting until the COS next runs."""
    def __init__(self, router):
        self.router = router

    def queue(self, line):
        _line(line)
        vcpu = self.router.kernel.vcpu
        vcpu.pending |= 1 << line
        self.router.kernel.trace.emit("irq.queued", line=line, cos_vif=vcpu.vif)


def kernel_sees_irq(line, pic, cos, masking=True):
    """A host-managed device's IRQ entered the kernel (exercise 04, claims 9-11):
    mask its line (claim 11) unless masking is switched off, acknowledge the
    PIC, and queue it for the COS's next run (claims 9-10)."""
    if masking:
        pic.mask(line)
    pic.eoi(line)
    cos.queue(line)


def cos_acknowledged(line, pic):
    """The COS's handler sent EOI for `line`: let the device interrupt again."""
    if pic.is_masked(line):
        pic.unmask(line)


class IrqRouter:
    def __init__(self, kernel):
        self.kernel = kernel
        self.routes = {}                 # line -> device class ("host-managed", "reserved", "shared")
        self.masking = True
        self.unacknowledged = {}         # line -> IRQs since the COS last acknowledged it
        self.storms = {}                 # line -> count when the storm was stopped
        self.shared = {}                 # line -> a shared device's completion handler
        self.pic, self.cos = PicControl(self), CosQueue(self)
        self.kernel_sees_irq, self.cos_acknowledged = kernel_sees_irq, cos_acknowledged  # exercise 04

    # the real PIC, driven as the kernel's code would with in/out
    def _pic_mask(self, line, masked):
        ports = self.kernel.board.ports
        port = 0x21 if line < 8 else 0xA1
        bit = 1 << (line % 8)
        imr = ports.read(port, 1)
        ports.write(port, 1, imr | bit if masked else imr & ~bit)

    def _pic_eoi(self, line):
        """A specific EOI (OCW2 0x60 | level) for `line`: it clears that line's in-service bit
        and no other, so an EOI for the wrong line leaves the right one in service, as on a
        real 8259A (a non-specific 0x20 would clear whichever is highest, hiding the mistake).
        A slave line also ends the master's cascade line 2."""
        ports = self.kernel.board.ports
        _line(line)
        if line >= 8:
            ports.write(0xA0, 1, 0x60 | (line - 8))
            line = 2
        ports.write(0x20, 1, 0x60 | line)

    def irq(self, line):
        """An IRQ entered the kernel. True if it is now pending for the COS."""
        trace, route = self.kernel.trace, self.routes.get(line, "host-managed")
        if route == "host-managed":
            count = self.unacknowledged[line] = self.unacknowledged.get(line, 0) + 1
            if count > STORM_LIMIT and line not in self.storms:
                self.storms[line] = count       # a storm: report it, and stop it
                trace.emit("irq.storm", line=line, interrupts=count,
                           kernel_work=self.kernel.work_done(), cos_ticks=self.kernel.cos_ticks())
                self.pic.mask(line)
                self.pic.eoi(line)
                return False
            self.kernel_sees_irq(line, self.pic, self.cos, self.masking)
            return True
        if route == "shared" and line in self.shared:
            forward = self.shared[line]()         # the device's own acknowledgement first
            self.pic.eoi(line)
            if forward:
                self.cos.queue(line)
            return forward
        self.pic.eoi(line)
        if route == "reserved" and line != 0:
            trace.emit("irq.kernel", line=line)
            return False
        self.cos.queue(line)                      # the timer: a virtual tick for the COS too
        return True

    def delivered(self, line):
        self.kernel.vcpu.delivered(line)

    def cos_eoi(self):
        """The COS sent EOI to its (virtual) master PIC: its handler is done with
        the line it was given last. (Its slave EOIs come first and add nothing.)"""
        line = self.kernel.vcpu.eoi()
        if line is None:
            return
        self.unacknowledged[line] = 0
        self.kernel.trace.emit("irq.cos_eoi", line=line)
        if line not in self.storms:
            self.cos_acknowledged(line, self.pic)
