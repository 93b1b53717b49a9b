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
the one a virtual disk's request path uses while worlds run (vdisk.py);
requests beyond the free request blocks wait here, in order, until one
frees. `read` and `write` wait for their requests by running the machine
(board.run) until the completion arrives, so they are for code that runs
between machine slices (the tools-like callers, tests, notebooks), never
from inside a trap. They keep IN_FLIGHT requests of REQUEST_BYTES queued at
once, so the controller goes from one to the next inside its completion
IRQ, with no slice of the machine run between them.

Its pages come from where VM memory does (`take_pages`): the
kernel's own 64 pages are too few for a DMA window worth the name.
"""
import struct
from collections import deque

from ..hw.scsi import GOOD, RB_FORMAT, RB_SIZE, READ_10, READ_CAPACITY_10, WRITE_10
from . import layout
from .vmfs_errors import VmfsError
from .vmfs_format import SECTOR

NAMES = {READ_10: "READ(10)", WRITE_10: "WRITE(10)", READ_CAPACITY_10: "READ CAPACITY(10)"}
REQUEST_BYTES = 512 << 10          # one READ(10)/WRITE(10) of the blocking path: 1024 sectors
IN_FLIGHT = 4                      # requests of the blocking path queued at once (a 2 MiB window)
PAGES = 1 + IN_FLIGHT * REQUEST_BYTES // layout.PAGE    # a page of request blocks, the data window
RB_STRIDE = 64                     # request blocks (36 bytes) 64 apart in the first page
RB_SLOTS = layout.PAGE // RB_STRIDE
WAIT_SLICE, WAIT_LIMIT = 500, 2_000_000


class ScsiError(VmfsError):
    """A SCSI request of the kernel's ended in CHECK CONDITION, or never completed."""


def take_pages(kernel, count, what):
    """`count` zeroed pages of kernel memory, taken where VM memory is (worlds.py
    `vm_top`: from the top of RAM down to the kernel's end, above the COS's
    segment limit), so the COS can never reach them and no VM's page directory
    maps them."""
    worlds, memory = kernel.worlds, kernel.memory
    top, floor = worlds.vm_top, kernel.end
    base = top - count * layout.PAGE
    if count <= 0 or base < floor:
        raise ScsiError("kernel memory", f"no room for {what} ({count} pages): "
                        f"{max(0, top - floor) // layout.PAGE} pages are left between the kernel's "
                        f"end {floor:#x} and the last VM's base {top:#x}")
    worlds.vm_top = base
    memory.write(base, bytes(count * layout.PAGE), code=False)
    return base


class ScsiDisk:
    def __init__(self, kernel, controller="scsi0", sectors=None):
        """Take PAGES pages of kernel memory; `sectors` defaults to the disk's capacity."""
        self.kernel, self.board = kernel, kernel.board
        if controller not in kernel.shared:
            raise ScsiError("SCSI controller", f"{controller} is not a device the kernel shares")
        self.shared = kernel.shared[controller]
        self.rb = take_pages(kernel, PAGES, "VMFS's SCSI buffers")
        self.buffer = self.rb + layout.PAGE
        self._free_slots = [self.rb + i * RB_STRIDE for i in reversed(range(RB_SLOTS))]
        self._backlog = deque()         # requests waiting for a request block
        self.per_request = REQUEST_BYTES // SECTOR
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
            self._backlog.append((op, lba, count, done, buffer, length))
            return
        rb = self._free_slots.pop()
        cdb = bytes([op, 0]) + struct.pack(">IBHB", lba, 0, count, 0)
        length = count * SECTOR if length is None else length
        buffer = self.buffer if buffer is None else buffer
        self.board.memory.write(rb, struct.pack(RB_FORMAT, 10, 0, 0xFF, 0, 0, 0, 0, buffer,
                                                length, 0, cdb.ljust(16, b"\0")), code=False)
        self.requests += 1

        def complete(rb):
            self._free_slots.append(rb)
            result = tuple(self.board.memory.read(rb + 2, 4))
            if self._backlog:
                self.start(*self._backlog.popleft())
            done(result)
        self.shared.submit(rb, complete)

    @property
    def free_slots(self):
        return len(self._free_slots)

    def _wait(self, requests, length=None):
        """Queue every (op, lba, count, buffer) at once; wait for all; raise on the first error."""
        results = [None] * len(requests)
        for i, (op, lba, count, buffer) in enumerate(requests):
            self.start(op, lba, count, lambda r, i=i: results.__setitem__(i, r), buffer, length)
        end = self.board.clock + WAIT_LIMIT
        while None in results:
            if self.board.clock >= end:
                op, lba, count, _ = requests[results.index(None)]
                raise ScsiError("SCSI controller", f"{NAMES[op]} "
                                f"of sectors {lba}+{count} did not complete in {WAIT_LIMIT} instructions")
            self.board.run(WAIT_SLICE)
        for (op, lba, count, _), (status, key, asc, ascq) in zip(requests, results):
            if status != GOOD:
                raise ScsiError("SCSI controller", f"{NAMES[op]} of sectors {lba}+{count}: "
                                f"CHECK CONDITION, sense {key:x}/{asc:02x}/{ascq:02x}")

    def _run(self, op, lba, count, length=None, buffer=None):
        self._wait([(op, lba, count, self.buffer if buffer is None else buffer)], length)

    def transfer(self, op, lba, count, buffer):
        """One READ(10)/WRITE(10) with the data at `buffer` (kernel memory), waited for."""
        self._run(op, lba, count, buffer=buffer)

    def _windows(self, lba, count):
        """[(lba, sectors, buffer)] per window of IN_FLIGHT requests of per_request sectors."""
        pieces = [(at, min(self.per_request, lba + count - at), self.buffer + i % IN_FLIGHT * REQUEST_BYTES)
                  for i, at in enumerate(range(lba, lba + count, self.per_request))]
        return [pieces[i:i + IN_FLIGHT] for i in range(0, len(pieces), IN_FLIGHT)]

    # ---- the block-device interface (vmfs_disk.py) ----------------------------------------------
    def read(self, lba, count):
        windows = self._windows(lba, count)
        out = bytearray(count * SECTOR) if len(windows) > 1 else None   # one copy, not a join
        done = 0
        for window in windows:
            self._wait([(READ_10, at, n, buffer) for at, n, buffer in window])
            sectors = sum(n for _, n, _ in window)
            data = self.board.memory.read(self.buffer, sectors * SECTOR)
            if out is None:
                return data
            out[done:done + len(data)] = data
            done += len(data)
        return out

    def write(self, lba, data):
        view, done = memoryview(data), 0
        for window in self._windows(lba, len(data) // SECTOR):
            sectors = sum(n for _, n, _ in window)
            self.board.memory.write(self.buffer, view[done:done + sectors * SECTOR], code=False)
            self._wait([(WRITE_10, at, n, buffer) for at, n, buffer in window])
            done += sectors * SECTOR


assert RB_SIZE <= layout.PAGE
