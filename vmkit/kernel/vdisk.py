"""A VM's virtual disk (VDISK) in the kernel: a VMFS file, reached block by block (claims 23, 43).

The kernel opens the VMFS volume through the shared SCSI controller
(vmfs_scsi.ScsiDisk: every byte comes by the controller's DMA into kernel
memory). Attaching a VDISK to a VM reads that file's descriptor and its
pointer blocks by DMA into pages of kernel memory, where they stay while the
VM runs: the kernel's in-memory copy of the on-disk structures, as VMFS keeps
an open file's metadata cached. Each guest request then resolves

    VDISK block b -> descriptor (direct address, or pointer-block address)
                  -> pointer block entry -> file block -> disk sector

with `Vdisks.resolver` (vmfs.block_address; exercise 10 plugs the learner's in)
reading those pages, and becomes READ(10)/WRITE(10) requests queued on the
shared controller, several in flight, with the data moved by DMA to or from
the VDISK's own buffer in kernel memory. Nothing here waits: `submit`
returns at once and its `done(status)` runs from the controller's completion
IRQ, so a VMM can call it from inside a guest's trap.

A TBZ block (allocated, never written: vmfs_address.py) reads as zeros
without a disk request. Its first write writes the whole block (the data,
zeros around it, from a zero page) and only after that the descriptor or
pointer block without the TBZ bit: the library's write order (vmfs.py), here
done by the kernel's own requests.

Memory: the volume's metadata path (ScsiDisk) and each VDISK's buffers are
pages taken from the top of RAM, as VM memory is (worlds.py), so the COS's
allocator can never hand them out and no VM's page directory maps them.
"""
import struct

from ..hw.scsi import GOOD, READ_10, WRITE_10
from . import layout
from . import vmfs_address as A
from .vmfs import Volume, block_address
from .vmfs_disk import find
from .vmfs_errors import BadRequest, VmfsError
from .vmfs_format import FD_SIZE, PB_ADDRESSES, PB_SIZE, SECTOR, FileDescriptor, sealed
from .vmfs_scsi import ScsiDisk, take_pages

MAX_TRANSFER = 256 << 10           # bytes one guest request may move: the VDISK's buffer
ZERO_BYTES = 64 << 10              # a page run of zeros: TBZ blocks' first writes copy from it
MAX_SECTORS = 0xFFFF               # READ(10)/WRITE(10): a 16-bit sector count


class Vdisks:
    """The kernel's VMFS volume and the VDISKs attached to VMs."""
    def __init__(self, kernel):
        self.kernel, self.memory, self.trace = kernel, kernel.memory, kernel.trace
        top = kernel.worlds.vm_top
        try:
            self.disk = ScsiDisk(kernel)             # READ CAPACITY, then the volume's metadata
            self.partition = find(self.disk)
            self.volume = Volume.open(self.partition)
            self.zeros = take_pages(kernel, ZERO_BYTES // layout.PAGE, "VMFS zero pages")
        except Exception:                            # no volume: the pages are free again
            kernel.worlds.vm_top = top
            raise
        self.resolver = block_address                # exercise 10 plugs the learner's in
        self.attached = {}                           # file name -> Vdisk

    @classmethod
    def of(cls, kernel):
        """The kernel's one Vdisks, made (and the volume opened) at the first attach."""
        if getattr(kernel, "vdisks", None) is None:
            kernel.vdisks = cls(kernel)
        return kernel.vdisks

    def attach(self, name, size=None, owner=None):
        """The VDISK `name` (created with `size` bytes if missing), its metadata read into
        kernel memory. Runs the machine (the reads wait): call it between machine slices."""
        if name in self.attached:
            raise BadRequest(f"VDISK '{name}'", f"already attached to {self.attached[name].owner}")
        if self.volume._find(name) is None:
            if size is None:
                raise BadRequest(f"VDISK '{name}'", "no such file on the volume; give its size")
            self.volume.create(name, size)
        elif size is not None and self.volume.stat(name).length != size:
            raise BadRequest(f"VDISK '{name}'", f"is {self.volume.stat(name).length} bytes, "
                             f"not {size}: resize it with the tools first")
        vdisk = Vdisk(self, name, owner)
        self.attached[name] = vdisk
        self.trace.emit("vdisk.attached", name=name, owner=owner, bytes=vdisk.length,
                        descriptor=vdisk.n, pointer_blocks=vdisk.fd.pointer_blocks)
        return vdisk

    def detach(self, vdisk):
        self.attached.pop(vdisk.name, None)


class Vdisk:
    def __init__(self, store, name, owner):
        self.store, self.name, self.owner = store, name, owner
        self.memory, self.trace, self.disk = store.memory, store.trace, store.disk
        vol = store.volume
        self.sb, self.bs = vol.sb, vol.bs
        self.first = store.partition.first           # the partition's first disk sector
        self.n, _ = vol.descriptor(name)
        pbs = vol.descriptor(name)[1].pointer_blocks
        self.fd_page = take_pages(store.kernel, 1, f"VDISK {name}'s descriptor")
        self.pb_pages = take_pages(store.kernel, pbs, f"VDISK {name}'s pointer blocks") if pbs else 0
        self.buffer = take_pages(store.kernel, MAX_TRANSFER // layout.PAGE, f"VDISK {name}'s buffer")
        self._dma_in(self.sb.fd_table + self.n * FD_SIZE, FD_SIZE, self.fd_page)
        self.fd = FileDescriptor.unpack(self.memory.read(self.fd_page, FD_SIZE))
        self.pointer_numbers = [A.number(a) for a in self.fd.addresses[:pbs]]
        for i, p in enumerate(self.pointer_numbers):
            self._dma_in(self.sb.pb_table + p * PB_SIZE, PB_SIZE, self.pb_pages + i * PB_SIZE)
        self.length = self.fd.length
        self.sectors = self.length // SECTOR

    def _dma_in(self, offset, size, address):
        """Volume bytes offset..offset+size -> kernel memory at `address` (sector-aligned)."""
        self.disk.transfer(READ_10, self.first + offset // SECTOR, size // SECTOR, address)

    # ---- resolution: through the cached descriptor and pointer blocks ------------------------
    def pointer_block(self, p):
        """The 1024 addresses of pointer block p, from its page of kernel memory."""
        i = self.pointer_numbers.index(p) if p in self.pointer_numbers else None
        if i is None:
            raise VmfsError(f"VDISK {self.name}", f"pointer block {p} is not one of this file's "
                            f"({self.pointer_numbers})")
        return struct.unpack(f"<{PB_ADDRESSES}I", self.memory.read(self.pb_pages + i * PB_SIZE, PB_SIZE))

    def address(self, block):
        """The FB address of VDISK block `block`, by the kernel's resolver, checked before use."""
        try:
            address = self.store.resolver(self.fd, block, self.pointer_block)
        except Exception as e:                       # a plugged-in resolver's bug fails the request only
            raise VmfsError(f"VDISK {self.name} block {block}",
                            f"the resolver raised {type(e).__name__}: {e}") from e
        if not isinstance(address, int):
            raise VmfsError(f"VDISK {self.name} block {block}", f"the resolver gave {address!r}, "
                            "not a block address")
        A.expect(address, A.FB, self.sb.fb_count, f"VDISK {self.name}", f"block {block}")
        return address

    def disk_sector(self, address):
        return self.first + (self.sb.fb_area + A.number(address) * self.bs) // SECTOR

    # ---- one guest request ------------------------------------------------------------------------
    def submit(self, op, sector, count, done):
        """READ(10)/WRITE(10) of VDISK sectors sector..sector+count-1 between the disk and this
        VDISK's buffer; `done(status)` at the end (GOOD, or the first error). Returns at once."""
        length, offset = count * SECTOR, sector * SECTOR
        if length > MAX_TRANSFER or offset + length > self.length:
            raise BadRequest(f"VDISK {self.name}", f"sectors {sector}+{count}: past its end or its "
                             f"{MAX_TRANSFER // SECTOR}-sector buffer")
        data, tbz = [], {}
        pos = offset
        while pos < offset + length:
            b, lo = divmod(pos, self.bs)
            n = min(self.bs - lo, offset + length - pos)
            address = self.address(b)
            at = self.buffer + pos - offset
            if not A.tbz(address):
                data.append((self.disk_sector(address) + lo // SECTOR, n // SECTOR, at))
            elif op == READ_10:                         # never written: zeros, no disk request
                self.memory.write(at, bytes(n), code=False)
            else:                                       # first write: the whole block
                start = self.disk_sector(address)
                data += self._zeros(start, lo) + [(start + lo // SECTOR, n // SECTOR, at)]
                data += self._zeros(start + (lo + n) // SECTOR, self.bs - lo - n)
                tbz[b] = A.fb(A.number(address))
            pos += n
        data = _joined(data)
        self.trace.emit("vdisk.request", vdisk=self.name, op="READ" if op == READ_10 else "WRITE",
                        sector=sector, count=count, requests=len(data), tbz=len(tbz))
        metadata = (lambda: self._clear_tbz(tbz)) if tbz else None
        Batch(self.disk, op, data, done, metadata).start()

    def _zeros(self, start, size):
        out = []
        for at in range(0, size, ZERO_BYTES):
            out.append((start + at // SECTOR, min(ZERO_BYTES, size - at) // SECTOR, self.store.zeros))
        return out

    def _clear_tbz(self, zeroed):
        """The addresses without TBZ, in the cached metadata, and the sectors that changed."""
        writes = []
        if not self.fd.pointer_blocks:
            table = list(self.fd.addresses)
            for b, address in zeroed.items():
                table[b] = address
            self.fd = sealed(self.fd.replace(addresses=tuple(table)))
            self.memory.write(self.fd_page, self.fd.pack(), code=False)
            self.store.volume.fds[self.n] = self.fd
            writes.append((self.first + (self.sb.fd_table + self.n * FD_SIZE) // SECTOR,
                           FD_SIZE // SECTOR, self.fd_page))
            return writes
        for b, address in zeroed.items():
            p_index, i = divmod(b, PB_ADDRESSES)
            page = self.pb_pages + p_index * PB_SIZE
            self.memory.write_u32(page + 4 * i, address)
            sector = (self.sb.pb_table + self.pointer_numbers[p_index] * PB_SIZE + 4 * i) // SECTOR
            writes.append((self.first + sector, 1, page + 4 * i // SECTOR * SECTOR))
        return sorted(set(writes))


def _joined(runs):
    """(sector, count, address) runs, contiguous ones joined (both on disk and in memory)."""
    out = []
    for sector, count, address in runs:
        if not count:
            continue
        if out:
            s, c, a = out[-1]
            if s + c == sector and a + c * SECTOR == address and c + count <= MAX_SECTORS:
                out[-1] = (s, c + count, a)
                continue
        out.append((sector, count, address))
    return out


class Batch:
    """Requests all queued at once on the shared controller (ScsiDisk keeps any beyond its
    request blocks until one frees); then, if all were GOOD, the metadata writes `metadata()`
    gives (after the data: the write order); then `done(status)`."""
    def __init__(self, disk, op, runs, done, metadata=None):
        self.disk, self.op, self.runs, self.done, self.metadata = disk, op, list(runs), done, metadata
        self.waiting, self.status = 0, GOOD

    def start(self):
        if not self.runs:
            return self._finished()
        self.waiting = len(self.runs)
        for sector, count, address in self.runs:
            self.disk.start(self.op, sector, count, self._one, buffer=address)

    def _one(self, result):
        if result[0] != GOOD and self.status == GOOD:
            self.status = result[0]
        self.waiting -= 1
        if not self.waiting:
            self._finished()

    def _finished(self):
        if self.metadata is not None and self.status == GOOD:
            runs, self.metadata = self.metadata(), None
            self.op, self.runs = WRITE_10, runs
            return self.start()
        self.done(self.status)
