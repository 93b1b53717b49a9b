"""VMFS: the kernel's file system for virtual disks (claims 23, 43).

A Volume is one VMFS partition on a block device (vmfs_disk.py): the
DiskImage file for the tools, the shared SCSI controller for the kernel
(vmfs_scsi.py). Each VM's virtual disk (VDISK) is a file; its blocks are
found through its file descriptor, and past 256 blocks through pointer
blocks: claim 23's "pointer block pointers ... sets of VDISK block
pointers", each locating one VDISK block. The bytes are declared in
vmfs_format.py and checked in vmfs_check.py; this file decides what to
write, and in what order.

The write order is the crash safety (soft updates, as in BSD's FFS): a
block is marked in use before anything points at it, a pointer block is
written before the descriptor that names it, and the descriptor write is
the one moment the change becomes visible. Freeing runs the other way: the
descriptor stops pointing first, the bitmaps are cleared after. A power cut
between any two writes therefore leaves at worst blocks marked in use that
no file reaches (or pointer-block entries past a file's end), which fsck
frees (vmfs_fsck.py); never a file that reaches a free or shared block.
"""
from collections import namedtuple

from . import vmfs_address as A
from . import vmfs_check as check
from .vmfs_bitmap import Bitmap
from .vmfs_layout import layout
from .vmfs_errors import BadRequest
from .vmfs_format import (FD_ADDRESSES, FD_SIZE, MAX_BLOCKS, NAME_SIZE, PB_ADDRESSES, PB_SIZE,
                          REGULAR, SECTOR, FileDescriptor, PointerBlock, align, bitmap_bytes, sealed)

FileInfo = namedtuple("FileInfo", "name descriptor generation length blocks pointer_blocks")
# One step of resolving a VDISK block: which descriptor entry, which pointer block entry (or
# None when the address is direct), the file-block address found, and where it is on the disk.
Resolution = namedtuple("Resolution", "block descriptor fd_index pointer_block pb_index "
                        "address file_block sector disk_sector tbz")

KINDS = ("fd", "pb", "fb")


class Volume:
    def __init__(self, device, sb):
        """Use Volume.mkfs or Volume.open: they check what this stores."""
        self.device, self.sb = device, sb
        self.bs = sb.block_size
        self.count = {"fd": sb.fd_count, "pb": sb.pb_count, "fb": sb.fb_count}
        self.bitmap = {k: Bitmap(k, self._read(getattr(sb, k + "_bitmap"), bitmap_bytes(self.count[k])),
                                 self.count[k]) for k in KINDS}
        self.fds = []

    # ---- making and opening ------------------------------------------------------------------
    @classmethod
    def mkfs(cls, device, block_size=1 << 20, fds=256, pbs=None, label=""):
        """A new, empty file system over the whole of `device` (a Partition)."""
        sb = layout(device.sectors, block_size, fds, pbs, label)
        zero_to = sb.pb_table                          # bitmaps and descriptors start all zero
        for off in range(0, zero_to, 1 << 20):
            n = min(1 << 20, zero_to - off)
            device.write(off // SECTOR, bytes(n))
        device.write(0, sealed(sb).pack())             # last: a cut mkfs leaves no volume
        return cls.open(device)

    @classmethod
    def open(cls, device):
        """The volume on `device`; NotVmfs if it holds none, Corrupt naming a damaged structure
        (every descriptor is checked here, so a damaged one stops the volume until fsck)."""
        sb = check.superblock(device.read(0, 1), device.sectors)
        vol = cls(device, sb)
        raw = vol._read(sb.fd_table, sb.fd_count * FD_SIZE)
        vol.fds = [check.descriptor(raw[n * FD_SIZE:(n + 1) * FD_SIZE], n, sb)
                   for n in range(sb.fd_count)]
        return vol

    # ---- bytes of the volume -----------------------------------------------------------------
    def _read(self, offset, size):
        first, end = offset // SECTOR, -(-(offset + size) // SECTOR)
        data = self.device.read(first, end - first)
        skip = offset - first * SECTOR
        return data if not skip and len(data) == size else data[skip:skip + size]   # no copy if whole

    def _write(self, offset, data):
        head, tail = offset % SECTOR, (offset + len(data)) % SECTOR
        if head or tail:                               # partial sectors: read, merge, write
            first = offset // SECTOR
            old = bytearray(self._read(first * SECTOR, align(head + len(data), SECTOR)))
            old[head:head + len(data)] = data
            offset, data = first * SECTOR, bytes(old)
        self.device.write(offset // SECTOR, data)

    # ---- bitmaps -------------------------------------------------------------------------------
    @property
    def free(self):
        return {k: self.bitmap[k].free for k in KINDS}

    def _alloc(self, kind, n):
        """n free resource numbers (not yet marked), or NoSpace."""
        return self.bitmap[kind].find_free(n)

    def _mark(self, kind, numbers, used):
        """Set or clear bits and write each changed bitmap sector once."""
        base = getattr(self.sb, kind + "_bitmap")
        for s in self.bitmap[kind].set(numbers, used):
            self._write(base + s * SECTOR, self.bitmap[kind].sector(s))

    # ---- descriptors and pointer blocks --------------------------------------------------------
    def _put(self, n, fd):
        fd = sealed(fd)
        self._write(self.sb.fd_table + n * FD_SIZE, fd.pack())
        self.fds[n] = fd

    def _pointer_block(self, p):
        return PointerBlock.unpack(self._read(self.sb.pb_table + p * PB_SIZE, PB_SIZE)).addresses

    def _put_pointer_block(self, p, addresses):
        addresses = list(addresses) + [0] * (PB_ADDRESSES - len(addresses))
        self._write(self.sb.pb_table + p * PB_SIZE, PointerBlock(addresses=tuple(addresses)).pack())

    def _pointer_numbers(self, fd):
        return [A.number(a) for a in fd.addresses[:fd.pointer_blocks]]

    def _block_addresses(self, fd, first=0, end=None):
        """The file-block addresses of blocks first..end-1, each checked."""
        end = fd.blocks if end is None else end
        if not fd.pointer_blocks:
            return list(fd.addresses[first:end])
        out = []
        for p_index in range(first // PB_ADDRESSES, -(-end // PB_ADDRESSES)):
            p = A.number(fd.addresses[p_index])
            entries = self._pointer_block(p)
            lo = max(first - p_index * PB_ADDRESSES, 0)
            hi = min(end - p_index * PB_ADDRESSES, PB_ADDRESSES)
            for i in range(lo, hi):
                check.pointer_entry(entries[i], p, i, self.sb)
            out.extend(entries[lo:hi])
        return out

    # ---- names ---------------------------------------------------------------------------------
    def _find(self, name):
        key = _key(name)
        for n, fd in enumerate(self.fds):
            if fd.type == REGULAR and fd.name.rstrip(b"\0") == key:
                return n, fd
        return None

    def _lookup(self, name):
        found = self._find(name)
        if found is None:
            raise BadRequest(f"file '{name}'", "no such file on the volume")
        return found

    # ---- the operations ------------------------------------------------------------------------
    def create(self, name, size):
        """A new file of `size` bytes, reading as zeros; its descriptor number."""
        key = _key(name)
        if self._find(name) is not None:
            raise BadRequest(f"file '{name}'", "already exists")
        blocks = self._blocks(name, size)
        self._need(blocks, 0, 0)
        n = self._alloc("fd", 1)[0]
        self._mark("fd", [n], True)                                    # 1. the descriptor slot
        fd = FileDescriptor(address=A.fd(n), generation=self.fds[n].generation + 1, type=REGULAR,
                            block_size=self.bs, name=key)
        fd = self._extend(fd, blocks)                                  # 2, 3. blocks, pointer blocks
        self._put(n, fd.replace(length=size))                          # 4. visible
        return n

    def resize(self, name, size):
        """Grow (new blocks read as zeros) or truncate a file to `size` bytes."""
        n, fd = self._lookup(name)
        blocks = self._blocks(name, size)
        if blocks > fd.blocks:
            self._need(blocks, fd.blocks, fd.pointer_blocks)
        if size > fd.length:
            self._zero_tail(fd)
        if blocks > fd.blocks:
            self._put(n, self._extend(fd, blocks).replace(length=size))
        elif blocks < fd.blocks:
            self._shrink(n, fd, blocks, size)
        else:
            self._put(n, fd.replace(length=size))

    def _zero_tail(self, fd):
        """Before a file grows: its last block's bytes past the old end (left by a truncate) read
        as zeros afterwards, as new bytes must."""
        used = fd.length % self.bs
        if not used:
            return
        address = self._block_addresses(fd, fd.blocks - 1, fd.blocks)[0]
        if not A.tbz(address):
            self._write(self.sb.fb_area + A.number(address) * self.bs + used, bytes(self.bs - used))

    def delete(self, name):
        n, fd = self._lookup(name)
        fbs = [A.number(a) for a in self._block_addresses(fd)]
        pbs = self._pointer_numbers(fd)
        self._put(n, FileDescriptor(address=A.fd(n), generation=fd.generation))  # 1. gone
        self._mark("fb", fbs, False)                                   # 2. its blocks
        self._mark("pb", pbs, False)
        self._mark("fd", [n], False)                                   # 3. its slot

    def _blocks(self, name, size):
        if not isinstance(size, int) or size < 0:
            raise BadRequest(f"file '{name}'", f"size {size!r} is not a whole number of bytes >= 0")
        blocks = check.blocks_for(size, self.bs)
        if blocks > MAX_BLOCKS:
            raise BadRequest(f"file '{name}'", f"{size} bytes need {blocks} blocks; a file holds "
                             f"at most {MAX_BLOCKS} ({FD_ADDRESSES} pointer blocks of {PB_ADDRESSES})")
        return blocks

    def _need(self, blocks, old_blocks, old_pbs):
        """NoSpace before any write, so a full volume is left exactly as it was."""
        want = {"fb": blocks - old_blocks,
                "pb": max(check.pointer_blocks_for(blocks) - old_pbs, 0)}
        for kind, n in want.items():
            if n > self.bitmap[kind].free:
                self._alloc(kind, n)                   # raises NoSpace with the figures

    def _extend(self, fd, blocks):
        """Allocate blocks up to `blocks`; the descriptor to write (the caller writes it)."""
        addresses = self._block_addresses(fd)
        old_pbs = self._pointer_numbers(fd)
        new_fbs = self._alloc("fb", blocks - fd.blocks)
        pointer_blocks = check.pointer_blocks_for(blocks)
        new_pbs = self._alloc("pb", max(pointer_blocks - len(old_pbs), 0))
        self._mark("fb", new_fbs, True)                                # 2. marked before named
        self._mark("pb", new_pbs, True)
        addresses += [A.fb(b, tbz=True) for b in new_fbs]
        if not pointer_blocks:
            return fd.replace(blocks=blocks, pointer_blocks=0, addresses=_pad(addresses, FD_ADDRESSES))
        pbs = old_pbs + new_pbs
        first_changed = fd.blocks // PB_ADDRESSES if old_pbs else 0
        for i in range(first_changed, pointer_blocks):                 # 3. pointer blocks
            self._put_pointer_block(pbs[i], addresses[i * PB_ADDRESSES:(i + 1) * PB_ADDRESSES])
        return fd.replace(blocks=blocks, pointer_blocks=pointer_blocks,
                          addresses=_pad([A.pb(p) for p in pbs], FD_ADDRESSES))

    def _shrink(self, n, fd, blocks, size):
        addresses = self._block_addresses(fd)
        pbs = self._pointer_numbers(fd)
        keep = check.pointer_blocks_for(blocks)
        if keep:
            table = [A.pb(p) for p in pbs[:keep]]
        else:
            table = addresses[:blocks]
        self._put(n, fd.replace(length=size, blocks=blocks, pointer_blocks=keep,
                                addresses=_pad(table, FD_ADDRESSES)))          # 1. no longer reached
        if keep and blocks % PB_ADDRESSES:                                     # 2. tidy the last one
            last = keep - 1
            self._put_pointer_block(pbs[last], addresses[last * PB_ADDRESSES:blocks])
        self._mark("fb", [A.number(a) for a in addresses[blocks:]], False)     # 3. free
        self._mark("pb", pbs[keep:], False)

    # ---- data ----------------------------------------------------------------------------------
    def _range(self, name, fd, offset, size):
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0 \
                or offset + size > fd.length:
            raise BadRequest(f"file '{name}'", f"bytes {offset}+{size} are outside its "
                             f"{fd.length} bytes")

    def _pieces(self, fd, offset, size):
        """(block index, address, offset in block, bytes) for each block the range touches."""
        if size == 0:
            return []
        first, last = offset // self.bs, (offset + size - 1) // self.bs
        addresses = self._block_addresses(fd, first, last + 1)
        out, pos = [], offset
        for b, address in zip(range(first, last + 1), addresses):
            lo = pos - b * self.bs
            n = min(self.bs - lo, offset + size - pos)
            out.append((b, address, lo, n))
            pos += n
        return out

    def extents(self, name, offset=0, size=None):
        """Where bytes offset..offset+size of a file are: [(volume byte offset, or None for
        zeros (a TBZ block), length)], contiguous runs joined. Volume offset + partition start *
        512 is the disk byte: what a request straight to the disk needs."""
        n, fd = self._lookup(name)
        size = fd.length - offset if size is None else size
        self._range(name, fd, offset, size)
        runs = []
        for _, address, lo, length in self._pieces(fd, offset, size):
            where = None if A.tbz(address) else self.sb.fb_area + A.number(address) * self.bs + lo
            last = runs[-1] if runs else None
            if last and (where is None and last[0] is None
                         or where is not None and last[0] is not None and last[0] + last[1] == where):
                last[1] += length
            else:
                runs.append([where, length])
        return [tuple(r) for r in runs]

    def read(self, name, offset=0, size=None):
        pieces = [bytes(length) if where is None else self._read(where, length)
                  for where, length in self.extents(name, offset, size)]
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def write(self, name, offset, data):
        """Write inside the file (VDISKs do not grow by writing: resize them)."""
        n, fd = self._lookup(name)
        data = bytes(data)
        self._range(name, fd, offset, len(data))
        runs, zeroed, pos = [], {}, 0                  # [volume offset, [pieces], length]
        view = memoryview(data)
        for b, address, lo, length in self._pieces(fd, offset, len(data)):
            piece = [view[pos:pos + length]]
            if A.tbz(address):                         # first write: the whole block, zero-filled
                piece = [bytes(lo)] + piece + [bytes(self.bs - lo - length)]
                lo, zeroed[b] = 0, A.fb(A.number(address))
            where = self.sb.fb_area + A.number(address) * self.bs + lo
            size = sum(len(p) for p in piece)
            if runs and runs[-1][0] + runs[-1][2] == where:
                runs[-1][1] += piece
                runs[-1][2] += size
            else:
                runs.append([where, piece, size])
            pos += length
        for where, pieces, _ in runs:                  # 1. the data
            self._write(where, pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if zeroed:                                     # 2. then the addresses lose TBZ
            self._clear_tbz(n, fd, zeroed)

    def _clear_tbz(self, n, fd, zeroed):
        if not fd.pointer_blocks:
            table = list(fd.addresses)
            for b, address in zeroed.items():
                table[b] = address
            self._put(n, fd.replace(addresses=tuple(table)))
            return
        for p_index in sorted({b // PB_ADDRESSES for b in zeroed}):
            p = A.number(fd.addresses[p_index])
            entries = list(self._pointer_block(p))
            for b, address in zeroed.items():
                if b // PB_ADDRESSES == p_index:
                    entries[b % PB_ADDRESSES] = address
            self._put_pointer_block(p, entries)

    # ---- looking -------------------------------------------------------------------------------
    def ls(self):
        return [FileInfo(fd.name.rstrip(b"\0").decode(), n, fd.generation, fd.length, fd.blocks,
                         fd.pointer_blocks) for n, fd in enumerate(self.fds) if fd.type == REGULAR]

    def stat(self, name):
        n, _ = self._lookup(name)
        return next(f for f in self.ls() if f.descriptor == n)

    def descriptor(self, name):
        """(number, FileDescriptor) of a file, as on the disk."""
        return self._lookup(name)

    def pointer_block(self, p):
        """The 1024 addresses of pointer block p, as on the disk."""
        return self._pointer_block(p)

    def resolve(self, name, block):
        """VDISK block -> (descriptor entry -> pointer block entry ->) file block -> disk sector."""
        n, fd = self._lookup(name)
        if not isinstance(block, int) or not 0 <= block < fd.blocks:
            raise BadRequest(f"file '{name}'", f"block {block!r} is outside its {fd.blocks} blocks")
        address = block_address(fd, block, self._pointer_block)
        if fd.pointer_blocks:
            fd_index, pb_index = divmod(block, PB_ADDRESSES)
            p = A.number(fd.addresses[fd_index])
            fb = check.pointer_entry(address, p, pb_index, self.sb)
        else:
            fd_index, pb_index, p = block, None, None
            fb = A.number(address)
        sector = (self.sb.fb_area + fb * self.bs) // SECTOR
        return Resolution(block, n, fd_index, p, pb_index, address, fb, sector,
                          sector + getattr(self.device, "first", 0), A.tbz(address))


def block_address(fd, block, pointer_block):
    """The file-block address of a file's block `block` (claim 23's resolution, in one place).

    Direct (pointer_blocks 0): entry `block` of the descriptor's addresses. Indirect: the
    descriptor's entry block // 1024 names a pointer block; `pointer_block(p)` gives its 1024
    addresses, and entry block % 1024 is the answer."""
    if not fd.pointer_blocks:
        return fd.addresses[block]
    p = A.number(fd.addresses[block // PB_ADDRESSES])
    return pointer_block(p)[block % PB_ADDRESSES]


def _key(name):
    if not isinstance(name, str) or not name or "/" in name or "\0" in name:
        raise BadRequest(f"file {name!r}", "a name is a non-empty string without '/' or NUL")
    key = name.encode()
    if len(key) >= NAME_SIZE:
        raise BadRequest(f"file '{name}'", f"name is {len(key)} bytes; at most {NAME_SIZE - 1}")
    return key


def _pad(values, n):
    return tuple(values) + (0,) * (n - len(values))
