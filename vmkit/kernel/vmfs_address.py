"""VMFS block addresses: one u32 that says what kind of block and which one.

As in VMFS-3 (vmfs-tools' vmfs_block.h, dissect.vmfs's address.py: "Address
type is encoded in the lower 3 bits"), the low three bits give the type and
the rest say where:

    file block (FB)        number << 6            | TBZ << 5 | 1
    sub-block (SB)         entry << 6 | item << 28           | 2
    pointer block (PB)     entry << 6 | item << 28           | 3
    file descriptor (FD)   entry << 6 | item << 22           | 4

A resource that is counted in clusters (SB, PB, FD) is named by the cluster
(entry) and its place in the cluster (item). This kit's clusters are as wide
as the item field, so resource number = entry * 16 + item for SB and PB and
entry * 1024 + item for FD. TBZ ("to be zeroed") marks a file block that was
allocated but never written: it reads as zeros without touching the disk,
which is what lets a 512 MiB file be created without writing 512 MiB.
Address 0 (type NONE) means "no block". The kit never allocates sub-blocks
(VMFS keeps small files in them); the type is decoded so a reader meets it by name.
"""
from .vmfs_errors import Corrupt

NONE, FB, SB, PB, FD = 0, 1, 2, 3, 4
TYPE_MASK = 0x7
TYPE_NAMES = {NONE: "none", FB: "file block", SB: "sub-block", PB: "pointer block",
              FD: "file descriptor"}
SHORT = {NONE: "-", FB: "FB", SB: "SB", PB: "PB", FD: "FD"}

FB_SHIFT, FB_TBZ = 6, 1 << 5
FB_LIMIT = 1 << 26                            # 26 bits of number
CLUSTER_SHIFT = 6                             # entry, for SB, PB and FD
SB_PB_ITEM_SHIFT, SB_PB_ITEM_BITS, SB_PB_ENTRY_MASK = 28, 4, 0x3FFFFF
FD_ITEM_SHIFT, FD_ITEM_BITS, FD_ENTRY_MASK = 22, 10, 0x7FFF
PB_LIMIT = (SB_PB_ENTRY_MASK + 1) << SB_PB_ITEM_BITS
FD_LIMIT = (FD_ENTRY_MASK + 1) << FD_ITEM_BITS


def kind(address):
    """The type in the low three bits (NONE, FB, SB, PB, FD, or 5-7: no kind this kit knows)."""
    return address & TYPE_MASK


def fb(number, tbz=False):
    assert 0 <= number < FB_LIMIT
    return number << FB_SHIFT | (FB_TBZ if tbz else 0) | FB


def _clustered(number, item_bits, item_shift, typ):
    entry, item = divmod(number, 1 << item_bits)
    return entry << CLUSTER_SHIFT | item << item_shift | typ


def pb(number):
    assert 0 <= number < PB_LIMIT
    return _clustered(number, SB_PB_ITEM_BITS, SB_PB_ITEM_SHIFT, PB)


def sb(number):
    assert 0 <= number < PB_LIMIT
    return _clustered(number, SB_PB_ITEM_BITS, SB_PB_ITEM_SHIFT, SB)


def fd(number):
    assert 0 <= number < FD_LIMIT
    return _clustered(number, FD_ITEM_BITS, FD_ITEM_SHIFT, FD)


def number(address):
    """The resource number an address names (whatever its type)."""
    t = kind(address)
    if t == FB:
        return address >> FB_SHIFT
    if t in (SB, PB):
        entry = address >> CLUSTER_SHIFT & SB_PB_ENTRY_MASK
        return entry << SB_PB_ITEM_BITS | address >> SB_PB_ITEM_SHIFT & 0xF
    if t == FD:
        entry = address >> CLUSTER_SHIFT & FD_ENTRY_MASK
        return entry << FD_ITEM_BITS | address >> FD_ITEM_SHIFT & 0x3FF
    return 0


def tbz(address):
    return kind(address) == FB and bool(address & FB_TBZ)


def expect(address, typ, limit, structure, field):
    """The number of an address that must be of type `typ` below `limit`, or Corrupt naming where."""
    t = kind(address)
    if t != typ:
        raise Corrupt(structure, f"{address:#010x} is a {TYPE_NAMES.get(t, f'type-{t} address')}, "
                      f"expected a {TYPE_NAMES[typ]}", field)
    n = number(address)
    if n >= limit:
        raise Corrupt(structure, f"{address:#010x} names {TYPE_NAMES[typ]} {n}, but the volume "
                      f"has only {limit}", field)
    if address != (fb(n, tbz(address)) if typ == FB else {PB: pb, SB: sb, FD: fd}[typ](n)):
        raise Corrupt(structure, f"{address:#010x} has bits set that no {TYPE_NAMES[typ]} "
                      f"address uses", field)
    return n


def describe(address):
    """'FB 12 tbz', 'PB 3', '-': how the tools and notebooks print an address."""
    t = kind(address)
    if t == NONE and address == 0:
        return "-"
    if t not in SHORT:
        return f"type-{t} {address:#x}"
    return f"{SHORT[t]} {number(address)}" + (" tbz" if tbz(address) else "")
