"""Interrupts of host-managed devices, forwarded to the COS (claims 9-11, 26).

  raised   the device's line goes up; the PIC interrupts the CPU
  kernel   the IRQ enters through the kernel's IDT, never the COS's (claim 9)
  masked   the kernel masks the line at the PIC at once (claim 11), so a
           device that keeps its line asserted cannot interrupt again
  queued   pending for the COS; delivered when the COS next runs, not at
           once (claim 10): if the kernel is busy with its own work, the COS
           waits until the kernel returns to it
  delivered through the COS's own IDT, to its own handler
  EOI      the COS acknowledges to its (virtual) PIC
  unmasked the kernel unmasks the real line

Masking can be switched off (`masking = False`) to show why it is there:
a level-triggered device whose line stays asserted then interrupts the
kernel again after every EOI. The storm is detected (more than
STORM_LIMIT interrupts of one line with no COS acknowledgement between)
and reported with counts, and the line is masked to end it.
"""
STORM_LIMIT = 200


class IrqRouter:
    def __init__(self, kernel):
        self.kernel = kernel
        self.routes = {}                 # line -> device class ("host-managed", "reserved", "shared")
        self.masking = True
        self.masked = 0                  # lines the kernel masked for the COS (bitmask)
        self.cos_in_service = 0          # lines injected into the COS, not yet acknowledged
        self.unacknowledged = {}         # line -> IRQs since the COS last acknowledged it
        self.storms = {}                 # line -> count when the storm was stopped

    # the real PIC, driven as the kernel's code would with in/out
    def _pic_mask(self, line, masked):
        ports = self.kernel.board.ports
        port = 0x21 if line < 8 else 0xA1
        bit = 1 << (line % 8)
        imr = ports.read(port, 1)
        ports.write(port, 1, imr | bit if masked else imr & ~bit)

    def _pic_eoi(self, line):
        ports = self.kernel.board.ports
        if line >= 8:
            ports.write(0xA0, 1, 0x20)
        ports.write(0x20, 1, 0x20)

    def irq(self, line):
        """An IRQ entered the kernel. True if it is now pending for the COS."""
        trace, route = self.kernel.trace, self.routes.get(line, "host-managed")
        if route == "host-managed":
            if self.masking:
                trace.emit("irq.masked", line=line)
                self._pic_mask(line, True)
                self.masked |= 1 << line
            count = self.unacknowledged[line] = self.unacknowledged.get(line, 0) + 1
            if not self.masking and count > STORM_LIMIT and line not in self.storms:
                self.storms[line] = count
                self._pic_mask(line, True)
                self.masked |= 1 << line
                trace.emit("irq.storm", line=line, interrupts=count,
                           kernel_work=self.kernel.work_done(), cos_ticks=self.kernel.cos_ticks())
        self._pic_eoi(line)
        if route == "reserved" and line != 0:
            trace.emit("irq.kernel", line=line)
            return False
        self.kernel.vcpu.pending |= 1 << line
        trace.emit("irq.queued", line=line, cos_vif=self.kernel.vcpu.vif)
        return True

    def delivered(self, line):
        self.cos_in_service |= 1 << line

    def cos_eoi(self):
        """The COS sent EOI to its (virtual) master PIC: its handler is done with
        the line it was given last. (Its slave EOIs come first and add nothing.)"""
        if not self.cos_in_service:
            return
        line = (self.cos_in_service & -self.cos_in_service).bit_length() - 1
        self.cos_in_service &= ~(1 << line)
        self.unacknowledged[line] = 0
        self.kernel.trace.emit("irq.cos_eoi", line=line)
        if self.masked >> line & 1 and line not in self.storms:
            self.masked &= ~(1 << line)
            self.kernel.trace.emit("irq.unmasked", line=line)
            self._pic_mask(line, False)
