"""The kernel's way to its VMFS: a block device whose every read and write is a SCSI request.

ScsiDisk is VMFS's block device inside the vmkernel (claims 23, 43 over
claims 6-7): it builds READ(10)/WRITE(10) request blocks (hw/scsi.py's
layout) in pages of the kernel's own heap, queues them on the shared
controller (scsi_share.py) behind or ahead of the console OS's requests,
and the controller moves the data by DMA between the disk image and those
pages; the completion comes back through the kernel's IRQ path. Nothing here
touches the image file: the bytes VMFS reads are the bytes the controller
put in kernel memory.

`start` is the asynchronous form (a callback when the request completes),
the one a virtual disk's request path uses while worlds run. `read` and
`write` wait for their requests by running the machine (board.run) until
the completion arrives, so they are for code that runs between machine
slices (the tools-like callers, tests, notebooks), never from inside a trap.
"""
import struct

from ..hw.scsi import GOOD, RB_FORMAT, RB_SIZE, READ_10, READ_CAPACITY_10, WRITE_10
from . import layout
from .vmfs_errors import VmfsError
from .vmfs_format import SECTOR

NAMES = {READ_10: "READ(10)", WRITE_10: "WRITE(10)", READ_CAPACITY_10: "READ CAPACITY(10)"}
PAGES = 5                          # one page of request blocks, four of data (32 sectors a request)
RB_STRIDE = 64                     # request blocks (36 bytes) 64 apart in the first page
RB_SLOTS = layout.PAGE // RB_STRIDE
WAIT_SLICE, WAIT_LIMIT = 500, 2_000_000


class ScsiError(VmfsError):
    """A SCSI request of the kernel's ended in CHECK CONDITION, or never completed."""


class ScsiDisk:
    def __init__(self, kernel, controller="scsi0", sectors=None):
        """Take PAGES pages of the kernel heap; `sectors` defaults to the disk's capacity."""
        self.kernel, self.board = kernel, kernel.board
        self.shared = kernel.shared[controller]
        end = kernel.base + layout.HEAP_END
        if kernel.heap + PAGES * layout.PAGE > end:
            raise ScsiError("kernel heap", f"no room for VMFS's {PAGES} pages of SCSI buffers")
        self.rb, kernel.heap = kernel.heap, kernel.heap + PAGES * layout.PAGE
        self.buffer = self.rb + layout.PAGE
        self._free_slots = [self.rb + i * RB_STRIDE for i in reversed(range(RB_SLOTS))]
        self.per_request = (PAGES - 1) * layout.PAGE // SECTOR
        self.requests = 0
        if sectors is None:                          # asked of the disk, as a driver would
            self._run(READ_CAPACITY_10, 0, 0, length=8)
            last, size = struct.unpack(">II", self.board.memory.read(self.buffer, 8))
            if size != SECTOR:
                raise ScsiError("SCSI disk", f"sectors of {size} bytes; VMFS here needs {SECTOR}")
            sectors = last + 1
        self.sectors = sectors

    # ---- one request ---------------------------------------------------------------------------
    def start(self, op, lba, count, done, buffer=None, length=None):
        """Queue one READ(10)/WRITE(10) of `count` sectors; `done((status, key, asc, ascq))` at
        its completion. `buffer` is the physical address the controller moves the data to or
        from (default: this disk's own pages); each request in flight has its own request block,
        because the controller reads a block only when its turn on the queue comes."""
        if not self._free_slots:
            raise ScsiError("SCSI controller", f"{RB_SLOTS} requests of VMFS already in flight")
        rb = self._free_slots.pop()
        cdb = bytes([op, 0]) + struct.pack(">IBHB", lba, 0, count, 0)
        length = count * SECTOR if length is None else length
        buffer = self.buffer if buffer is None else buffer
        self.board.memory.write(rb, struct.pack(RB_FORMAT, 10, 0, 0xFF, 0, 0, 0, 0, buffer,
                                                length, 0, cdb.ljust(16, b"\0")), code=False)
        self.requests += 1

        def complete(rb):
            self._free_slots.append(rb)
            done(tuple(self.board.memory.read(rb + 2, 4)))
        self.shared.submit(rb, complete)

    def _run(self, op, lba, count, length=None):
        result = []
        self.start(op, lba, count, result.append, length=length)
        end = self.board.clock + WAIT_LIMIT
        while not result:
            if self.board.clock >= end:
                raise ScsiError("SCSI controller", f"{NAMES[op]} "
                                f"of sectors {lba}+{count} did not complete in {WAIT_LIMIT} instructions")
            self.board.run(WAIT_SLICE)
        status, key, asc, ascq = result[0]
        if status != GOOD:
            raise ScsiError("SCSI controller", f"{NAMES[op]} of "
                            f"sectors {lba}+{count}: CHECK CONDITION, sense {key:x}/{asc:02x}/{ascq:02x}")

    # ---- the block-device interface (vmfs_disk.py) ----------------------------------------------
    def read(self, lba, count):
        out = []
        for at in range(lba, lba + count, self.per_request):
            n = min(self.per_request, lba + count - at)
            self._run(READ_10, at, n)
            out.append(self.board.memory.read(self.buffer, n * SECTOR))
        return b"".join(out)

    def write(self, lba, data):
        for i, at in enumerate(range(lba, lba + len(data) // SECTOR, self.per_request)):
            chunk = data[i * self.per_request * SECTOR:(i + 1) * self.per_request * SECTOR]
            self.board.memory.write(self.buffer, chunk, code=False)
            self._run(WRITE_10, at, len(chunk) // SECTOR)


assert RB_SIZE <= layout.PAGE
