"""fsck for VMFS: find what a power cut or a damaged byte left wrong, say exactly what, repair it.

What it checks, in order (docs/vmfs.md lists the same):
  1. the superblock (magic, version, checksum, regions): without it nothing
     else can be found, so a bad one is a VmfsError, not a repair;
  2. every file descriptor (checksum, own address, type, name, length against
     blocks, pointer_blocks against blocks, every address's type and range);
     names are unique;
  3. every pointer block a file reaches: entries up to the file's end are
     file-block addresses in range; entries past it are zero;
  4. no pointer block or file block is reached twice;
  5. each bitmap marks exactly the resources reached, and nothing past its count.

The library's write order (vmfs.py) means a power cut can leave only two
kinds of damage: bits marked in use that no file reaches (leaked: freed) and
pointer-block entries past a file's end (zeroed). Everything else found is
damage from outside (a flipped byte); its repair is to clear the descriptor
of the file it belongs to (the file is lost, and says so) so that the rest
stays consistent.
"""
from collections import namedtuple

from . import vmfs_address as A
from . import vmfs_check as check
from .vmfs import KINDS, Volume
from .vmfs_errors import Corrupt
from .vmfs_format import FD_SIZE, PB_ADDRESSES, REGULAR, SECTOR, FileDescriptor, bitmap_bytes, sealed

Problem = namedtuple("Problem", "structure field what repair")
NAMES = {"fd": "descriptor", "pb": "pointer block", "fb": "file block"}


class Report:
    def __init__(self, problems, files, repaired):
        self.problems, self.files, self.repaired = problems, files, repaired

    @property
    def clean(self):
        return not self.problems

    def lines(self):
        out = []
        for p in self.problems:
            where = f"{p.structure} ({p.field})" if p.field else p.structure
            fix = (" -> " + p.repair) if self.repaired else f" (repair: {p.repair})"
            out.append(f"{where}: {p.what}{fix}")
        return out


def fsck(device, repair=False):
    """Check the volume on `device` (a Partition); with repair=True, also fix what was found."""
    sb = check.superblock(device.read(0, 1), device.sectors)     # a bad one raises, naming it
    vol = Volume(device, sb)
    raw = vol._read(sb.fd_table, sb.fd_count * FD_SIZE)
    problems, files, clear, pb_fixes = [], {}, {}, {}

    def lose(n, fd, structure, field, what):
        problems.append(Problem(structure, field, what, f"descriptor {n} cleared"
                                + (f", file '{_name(fd)}' lost" if fd else "")))
        clear[n] = fd.generation if fd else 0

    for n in range(sb.fd_count):
        try:
            fd = check.descriptor(raw[n * FD_SIZE:(n + 1) * FD_SIZE], n, sb)
        except Corrupt as e:
            lose(n, None, e.structure, e.field, e.reason)
            continue
        if fd.type == REGULAR:
            files[n] = fd

    owners, names, kept = {"pb": {}, "fb": {}}, {}, {}
    for n, fd in files.items():
        where = f"file descriptor {n}"
        name = _name(fd)
        if name in names:
            lose(n, fd, where, "name", f"'{name}' is also descriptor {names[name]}'s name")
            continue
        try:
            pbs, fbs, past = _reach(vol, fd)
        except Corrupt as e:
            lose(n, fd, e.structure, e.field, e.reason + f" (in file '{name}')")
            continue
        shared = _first_shared(owners, pbs, fbs)
        if shared:
            kind, k, other = shared
            lose(n, fd, where, "addresses", f"{NAMES[kind]} {k} is also reached by descriptor "
                 f"{other} ('{_name(files[other])}')")
            continue
        names[name], kept[n] = n, fd
        for p in pbs:
            owners["pb"][p] = n
        for b in fbs:
            owners["fb"][b] = n
        for p, entries in past.items():
            problems.append(Problem(f"pointer block {p}", f"addresses[{entries[0]}..{entries[-1]}]",
                                    f"{len(entries)} entries past the end of file '{name}' "
                                    f"(a grow or truncate was cut)", "zeroed"))
            pb_fixes[p] = entries[0]

    expected = {"fd": set(kept), "pb": set(owners["pb"]), "fb": set(owners["fb"])}
    for kind in KINDS:
        problems += _bitmap_problems(vol, kind, expected[kind])

    if repair and problems:
        for n, generation in clear.items():              # 1. descriptors that cannot stand
            vol._write(sb.fd_table + n * FD_SIZE,
                       _free_descriptor(n, generation))
        for p, first in pb_fixes.items():                # 2. entries past a file's end
            entries = list(vol._pointer_block(p))[:first]
            vol._put_pointer_block(p, entries)
        for kind in KINDS:                               # 3. bitmaps to what is reached
            _write_bitmap(vol, kind, expected[kind])
    return Report(problems, {n: _name(fd) for n, fd in kept.items()}, repair and bool(problems))


def _name(fd):
    return fd.name.rstrip(b"\0").decode(errors="replace")


def _reach(vol, fd):
    """(pointer blocks, file blocks, {pb: [indexes past the end that are not zero]}) of a file."""
    if not fd.pointer_blocks:
        return [], [A.number(a) for a in fd.addresses[:fd.blocks]], {}
    pbs, fbs, past = [], [], {}
    for i in range(fd.pointer_blocks):
        p = A.number(fd.addresses[i])
        pbs.append(p)
        entries = vol._pointer_block(p)
        used = min(fd.blocks - i * PB_ADDRESSES, PB_ADDRESSES)
        for j in range(used):
            fbs.append(check.pointer_entry(entries[j], p, j, vol.sb))
        extra = [j for j in range(used, PB_ADDRESSES) if entries[j]]
        if extra:
            past[p] = extra
    return pbs, fbs, past


def _first_shared(owners, pbs, fbs):
    for kind, numbers in (("pb", pbs), ("fb", fbs)):
        seen = set()
        for k in numbers:
            if k in owners[kind]:
                return kind, k, owners[kind][k]
            if k in seen:
                return kind, k, "itself"
            seen.add(k)
    return None


def _bitmap_problems(vol, kind, expected):
    bitmap, count = vol.bitmap[kind], vol.count[kind]
    marked = bitmap.marked()
    beyond = {k for k in marked if k >= count}
    kinds = (("marked in use, but no file reaches {it} (leaked)", "freed", marked - expected - beyond),
             ("reached by a file, but marked free", "marked in use", expected - marked),
             (f"set past the bitmap's {count} {NAMES[kind]}s", "cleared", beyond))
    out = []
    for what, fix, numbers in kinds:
        for lo, hi in _ranges(sorted(numbers)):
            field = f"bit {lo}" if lo == hi else f"bits {lo}..{hi}"
            out.append(Problem(bitmap.name, field, what.format(it="it" if lo == hi else "them"), fix))
    return out


def _ranges(numbers):
    out = []
    for k in numbers:
        if out and out[-1][1] == k - 1:
            out[-1][1] = k
        else:
            out.append([k, k])
    return [tuple(r) for r in out]


def _write_bitmap(vol, kind, expected):
    size = bitmap_bytes(vol.count[kind])
    new = bytearray(size)
    for k in expected:
        new[k // 8] |= 1 << (k % 8)
    base, old = getattr(vol.sb, kind + "_bitmap"), vol.bitmap[kind].bits
    for s in range(0, size, SECTOR):
        if new[s:s + SECTOR] != old[s:s + SECTOR]:
            vol._write(base + s, bytes(new[s:s + SECTOR]))
    old[:] = new


def _free_descriptor(n, generation):
    return sealed(FileDescriptor(address=A.fd(n), generation=generation)).pack()
