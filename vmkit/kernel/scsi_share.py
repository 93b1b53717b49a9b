"""The SCSI controller as a shared device (claims 6-7, 32).

Both the COS and the kernel use the one controller. Its ports are not in
the COS's I/O bitmap, so every COS access traps here and lands on a
*virtual* controller with the same registers; the kernel's own requests
come through `submit`. A queue feeds the real controller one request at a
time (its doorbell is never rung while it is busy), so requests from the
two never interleave. The completion IRQ is the kernel's; a COS request's
completion sets the virtual DONE and, if the COS enabled interrupts on its
virtual controller, becomes a forwarded IRQ.
"""
from collections import deque

RB_ADDR, DOORBELL, STATUS, CONTROL = 0x0, 0x4, 0x8, 0xC
BUSY, DONE = 1, 2


class SharedSCSI:
    def __init__(self, kernel, device):
        self.kernel, self.device = kernel, device
        self.ports = kernel.board.ports
        self.queue = deque()              # (owner, request block address, callback)
        self.in_flight = None
        self.cos_rb = 0                   # the COS's view: its registers
        self.cos_status = 0
        self.cos_control = 0
        self.completed = {"cos": 0, "kernel": 0}
        self.ports.write(device.base + CONTROL, 4, 1)    # the real controller interrupts the kernel
        self._unmask(device.irq)

    def _unmask(self, line):
        port, bit = (0x21, 1 << line) if line < 8 else (0xA1, 1 << (line - 8))
        self.ports.write(port, 1, self.ports.read(port, 1) & ~bit)
        if line >= 8:
            self.ports.write(0x21, 1, self.ports.read(0x21, 1) & ~4)

    # ---- the kernel's own requests -------------------------------------------------
    def submit(self, rb, done=None):
        self.queue.append(("kernel", rb, done))
        self._start()

    # ---- the COS's trapped port accesses ---------------------------------------------
    def cos_write(self, offset, value):
        if offset == RB_ADDR:
            self.cos_rb = value
        elif offset == DOORBELL:
            if self.cos_status & BUSY:
                self.kernel.trace.emit("scsi.cos_busy")
                return
            self.cos_status = BUSY
            self.queue.append(("cos", self.cos_rb, None))
            self._start()
        elif offset == STATUS:
            self.cos_status &= ~(value & DONE)
        elif offset == CONTROL:
            self.cos_control = value & 1

    def cos_read(self, offset):
        return {RB_ADDR: self.cos_rb, STATUS: self.cos_status, CONTROL: self.cos_control}.get(offset, 0)

    # ---- the real controller ------------------------------------------------------------
    def _start(self):
        if self.in_flight is not None or not self.queue:
            return
        self.in_flight = self.queue.popleft()
        owner, rb, _ = self.in_flight
        self.kernel.trace.emit("scsi.share_start", owner=owner, rb=rb, queued=len(self.queue))
        self.ports.write(self.device.base + RB_ADDR, 4, rb)
        self.ports.write(self.device.base + DOORBELL, 4, 1)

    def completion(self):
        """IRQ of the real controller. True if the COS now has an interrupt coming."""
        status = self.ports.read(self.device.base + STATUS, 4)
        if not status & DONE or self.in_flight is None:
            return False
        self.ports.write(self.device.base + STATUS, 4, DONE)
        owner, rb, done = self.in_flight
        self.in_flight = None
        self.completed[owner] += 1
        self.kernel.trace.emit("scsi.share_done", owner=owner, rb=rb)
        forward = False
        if owner == "cos":
            self.cos_status = DONE
            forward = bool(self.cos_control)
        elif done is not None:
            done(rb)
        self._start()
        return forward
