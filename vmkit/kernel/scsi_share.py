"""The SCSI controller as a shared device (claims 6-7, 32).

Both the COS and the kernel use the one controller. Its ports are not in
the COS's I/O bitmap, so every COS access traps here and lands on a
*virtual* controller with the same registers; the kernel's own requests
come through `submit`. A queue feeds the real controller one request at a
time (its doorbell is never rung while it is busy), so requests from the
two never interleave. The completion IRQ is the kernel's; a COS request's
completion sets the virtual DONE and, if the COS enabled interrupts on its
virtual controller, becomes a forwarded IRQ.

A bus master checks no segment limit, so the kernel checks for it: at the
COS's doorbell its request block is copied into kernel memory (the COS
cannot change it after the check) and its data buffer must lie inside the
COS's memory (contain.py). A refused request completes at once for the COS:
CHECK CONDITION / ILLEGAL REQUEST with the DMA-error flag in its block (or
RBERR in STATUS when the block itself is not in its memory), never reaching
the controller. The real controller gets the copy; its status, sense and
byte count are copied back into the COS's block when it completes.
"""
import struct
from collections import deque

from vmkit.hw.scsi import (RB_SIZE, CHECK_CONDITION, ILLEGAL_REQUEST,
                           ASC_INVALID_FIELD, FLAG_DMA_ERROR)
from . import contain, layout

RB_ADDR, DOORBELL, STATUS, CONTROL = 0x0, 0x4, 0x8, 0xC
BUSY, DONE, RBERR = 1, 2, 4
ANSWER = slice(2, 8), slice(16, 20)    # what the controller writes into a block: status..flags, transferred


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
        self.cos_block = None             # the COS's request block in flight (its answer goes there)
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
            copy = self._cos_request(self.cos_rb)
            if copy is None:                   # refused: done at once, no real interrupt will say so
                if self.cos_control:
                    self.kernel.irqs.cos.queue(self.device.irq)
                return
            self.cos_status = BUSY
            self.queue.append(("cos", copy, None))
            self._start()
        elif offset == STATUS:
            self.cos_status &= ~(value & DONE)
        elif offset == CONTROL:
            self.cos_control = value & 1

    def _cos_request(self, rb):
        """The kernel's checked copy of the COS's request block, or None (refused)."""
        memory, kernel = self.kernel.memory, self.kernel
        try:
            contain.check_dma(kernel, rb, RB_SIZE, "SCSI request block")
        except contain.OutsideCOS as e:
            kernel.trace.emit("scsi.cos_refused", rb=rb, why=str(e))
            self.cos_status = DONE | RBERR
            return None
        raw = memory.read(rb, RB_SIZE)
        address, length = struct.unpack_from("<II", raw, 8)
        try:
            contain.check_dma(kernel, address, length, "SCSI data buffer")
        except contain.OutsideCOS as e:
            kernel.trace.emit("scsi.cos_refused", rb=rb, why=str(e))
            memory.write(rb + 2, struct.pack("<BBBBH", CHECK_CONDITION, ILLEGAL_REQUEST,
                                              ASC_INVALID_FIELD, 0, FLAG_DMA_ERROR), code=False)
            memory.write(rb + 16, bytes(4), code=False)
            self.cos_status = DONE
            return None
        copy = kernel.base + layout.SCSI_COS_RB
        memory.write(copy, raw, code=False)
        self.cos_block = rb
        return copy

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
            answer = self.kernel.memory.read(rb, RB_SIZE)
            for part in ANSWER:                  # into the COS's own block, checked at its doorbell
                self.kernel.memory.write(self.cos_block + part.start, answer[part], code=False)
            self.cos_status = DONE
            forward = bool(self.cos_control)
        elif done is not None:
            done(rb)
        self._start()
        return forward
