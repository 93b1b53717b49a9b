"""Which linear ranges the segment-limit checks hook, and the configurations the C filter
keeps (limits.py says what is checked, and where).

With paging off, the linear ranges past the limit of every code/data descriptor in the
GDT that can be loaded (with `cpl`: DPL >= that CPL, and DPL 0, which the CPL 0 software
it enters loads for itself) and that does not reach 4 GiB get a memory hook limited to
that range (measured, Unicorn 2.1.4: it costs nothing for code that never touches the
range); the filter in C (limits.c) runs in the hook. With paging on, none.

A world switch tells the platform twice (at its load's start, `loading` the next world's
GDT, and at its end), and goes between a few configurations: a world's own, and the load's
from one world's GDT to the next's. So the C filter keeps each configuration it has been in
(limits_prepared.c: `vmkit_limits_refresh`, PREPARED of them, the least recently used
replaced): its key (GDTR, the GDT's bytes, the CPL and paging the software will run at, the
loading GDT's GDTR and bytes) and what this module decoded from it once (the arrays, the
lowest fetch checked, the ranges). A refresh reads GDTR, CR0 and the tables' bytes in C and
installs the configuration they match byte for byte, or hands the new key to Python to
decode: a GDT edited in place under the same GDTR (an accessed bit the CPU set, a
descriptor the kernel rewrote) is a new key, never a stale one. Measured (a world switch
between two VMs and the COS): a refresh ~2 µs, of which C ~0.7 (the hooks' add and delete
0.4); reading, comparing and installing it all from Python cost 13-19 µs. Deleting a memory
hook while paging is on leaves nothing in Unicorn's exception record (uc_hook_del
invalidates the translated code a hook instrumented, which only a code or block hook has:
Unicorn 2.1.4's `hooked_regions_check`; tests/test_limits_prepared.py), so none is cleared.
"""
import ctypes
import functools
import struct

from .limits_decode import FLAT, expand_down
from .x86 import decode_segment

SELECTORS = 64                              # as LIMIT_SELECTORS in vmkit.h
RANGES = 4 * SELECTORS                      # as LIMIT_RANGES: two tables' ranges, two an entry at most
PREPARED = 32                               # as LIMIT_PREPARED: configurations kept
REFRESH_MISS, HOOK_FAILED = -1, -2          # as in limits_prepared.c
NO_FETCH_CHECK = 0xFFFFFFFFFFFFFFFF
CONFORMING, NOT_CODE = 0x10, 0xFF                # as in vmkit.h
# Unicorn matches a hook's range against an access's first byte: the range starts this
# much below the limit, so an access that straddles it is seen too (the filter then checks
# its last byte); 15: the longest operand of a 32-bit instruction (fxsave's is bigger).
STRADDLE = 15


class _Prepared(ctypes.Structure):
    """struct vmkit_prepared in vmkit.h, field for field: one configuration of the filter."""
    _fields_ = [("stamp", ctypes.c_uint64), ("gdt_base", ctypes.c_uint64), ("gdt_limit", ctypes.c_uint64),
                ("table_len", ctypes.c_uint64), ("cpl", ctypes.c_uint64), ("paging", ctypes.c_uint64),
                ("loading", ctypes.c_uint64), ("load_base", ctypes.c_uint64), ("load_limit", ctypes.c_uint64),
                ("other_len", ctypes.c_uint64), ("nsel", ctypes.c_uint64), ("fetch_from", ctypes.c_uint64),
                ("nranges", ctypes.c_uint64),
                ("first", ctypes.c_uint64 * RANGES), ("last", ctypes.c_uint64 * RANGES),
                ("base", ctypes.c_uint64 * SELECTORS), ("limit", ctypes.c_uint64 * SELECTORS),
                ("code", ctypes.c_uint64 * SELECTORS),
                ("table", ctypes.c_ubyte * (8 * SELECTORS)), ("other", ctypes.c_ubyte * (8 * SELECTORS))]


class Configurations:
    """A part of SegmentLimits (limits.py): which ranges are hooked, and the configuration
    installed. Uses its `state` (the C filter's), `lib`, and the C functions it looked up."""

    def refresh(self, cpl=None, paging=None, loading=None):
        """Read the GDT the CPU's GDTR names and hook the ranges past the limits of the
        segments that can be loaded: with `cpl`, those a program at that CPL may load
        (DPL >= cpl: a CPL 3 world cannot load the COS's DPL 1 segments) and the DPL 0
        ones the CPL 0 software it enters loads for itself; without, all. With paging on,
        none: a hook sees physical addresses then (limits_paging.py); `paging`: as
        the software will have it (the hooks' filter passes any access made while paging
        is still on). `loading`: (base, limit) of a GDT the software's x86 is about to load
        with lgdt before it tells the platform again (a world switch's next world's): the
        ranges past its segments' limits are hooked too, and the filter judges an access
        made after that lgdt from the GDT GDTR then names (limits.c: `gdt_now`), so a
        segment the load loads is judged by its own descriptor. Nothing to do if nothing
        changed. GDTR, CR0 and the tables' bytes are read in C (limits_prepared.c:
        `vmkit_limits_refresh`), which installs a configuration it has held before if they
        match it byte for byte (a world switch goes between a few); only a new one is
        decoded here."""
        if self.lib is None:
            return self._python_refresh(cpl, paging, loading)     # (limits_python.py)
        paging = -1 if paging is None else 1 if paging else 0
        if loading:
            base, limit = loading
            got = self._refresh(self._uch, self._at, cpl or 0, paging, 1, base, limit)
        else:
            got = self._refresh(self._uch, self._at, cpl or 0, paging, 0, 0, 0)
        if got == REFRESH_MISS:
            got = self._prepare()
        if got <= HOOK_FAILED:
            raise RuntimeError(f"cannot hook the ranges past the segment limits (unicorn error {HOOK_FAILED - got})")

    def _prepare(self):
        """A configuration C has not held (its key left in `pending`): decode it, and let C
        keep it and install it."""
        p = self.state.pending
        at = ctypes.addressof(p)
        table = ctypes.string_at(at + _Prepared.table.offset, p.table_len)
        other = ctypes.string_at(at + _Prepared.other.offset, p.other_len) if p.loading else None
        block = _prepared(table, p.gdt_limit, p.cpl, other, p.load_limit)
        ctypes.memmove(at + _Prepared.nsel.offset, block, len(block))
        return self._install(self._uch, self._at)

    @property
    def ranges(self):
        """The linear ranges hooked (wanted hooked: during a flat stretch they are off), (first, last)."""
        s = self.state
        if s is None:
            return self._py_ranges          # (limits_python.py)
        return tuple(zip(s.first[:s.nranges], s.last[:s.nranges]))

    @property
    def _hooks(self):
        """Unicorn's handles of the hooks installed now."""
        s = self.state
        return [] if s is None else list(s.hooks[:s.nhooks])

    def _held(self):
        """(GDTR base, limit, the table's bytes) of the configuration installed, or None."""
        s = self.state
        if s is None or s.current < 0:
            return None
        p = s.prepared[s.current]
        return p.gdt_base, p.gdt_limit, ctypes.string_at(ctypes.addressof(p) + _Prepared.table.offset, p.table_len)


@functools.lru_cache(maxsize=256)
def _prepared(table, limit, least, other, other_limit):
    """What the C filter holds of a configuration, decoded (struct vmkit_prepared from `nsel`
    to `code`), packed for one memmove: every machine of a run (each CPU, each board) goes
    between the same few GDTs, so each configuration is decoded once in a process (a pure
    function of its arguments). `other`: the bytes of a GDT about to be loaded, or None."""
    bases, limits, code, ranges, fetch_from = _decoded(table, limit, least)
    if other is not None:
        ranges = _union(ranges, _decoded(other, other_limit, least)[3])
    firsts = [first for first, _ in ranges] + [0] * (RANGES - len(ranges))
    lasts = [last for _, last in ranges] + [0] * (RANGES - len(ranges))
    pad = bytes(8 * SELECTORS - len(bases))
    return (struct.pack(f"<3Q{RANGES}Q{RANGES}Q", len(table) // 8, fetch_from, len(ranges), *firsts, *lasts)
            + bases + pad + limits + pad + code + pad)


@functools.lru_cache(maxsize=256)
def _decoded(table, limit, least):
    """_decode's arrays packed as the C filter holds them (u64 each), for a memmove: a world
    switch goes between a few GDTs, and every machine of a run between the same few, so
    each is decoded once (a pure function of its arguments)."""
    bases, limits, code, ranges, fetch_from = _decode(table, limit, least)
    pack = lambda values: struct.pack(f"<{len(values)}Q", *values)
    return pack(bases), pack(limits), pack(code), tuple(ranges), fetch_from


@functools.lru_cache(maxsize=256)
def _union(ranges, more):
    return tuple(_merge(ranges + more))


def _decode(table, limit, least):
    """(bases, limits, code DPLs) of every entry for the C filter, the merged ranges past the limits
    of the segments within the GDT's limit of DPL >= least or DPL 0, and the lowest linear
    address an instruction of such a code segment may start at and still cross its limit
    (NO_FETCH_CHECK: every such code segment is flat)."""
    bases, limits, code, ranges, fetch_from = [], [], [], [], NO_FETCH_CHECK
    for i in range(len(table) // 8):
        d = decode_segment(table[8 * i:8 * i + 8])
        segment = d.s and d.present
        down = segment and expand_down(d)
        bases.append(d.base if segment else 0)
        limits.append(0 if down else d.limit if segment else FLAT)   # expand-down: always decoded
        if 8 * i + 7 > limit:               # not loadable now: no range of its own, and
            code.append(NOT_CODE)           # not the CS of a CPU that runs on this table
            continue
        code.append(d.dpl | (CONFORMING if d.type & 4 else 0) if segment and d.type & 8 else NOT_CODE)
        loadable = d.dpl >= least or d.dpl == 0
        if segment and loadable and d.type & 8 and d.limit < FLAT:    # code: its fetches
            fetch_from = min(fetch_from, 0 if d.base else max(0, d.limit + 1 - STRADDLE))
        if down and loadable:               # valid offsets lie *above* its limit
            ranges.append((d.base, min(FLAT, d.base + d.limit)))
        elif segment and loadable and d.limit < FLAT and d.base + d.limit < FLAT:
            ranges.append((max(d.base, d.base + d.limit + 1 - STRADDLE), FLAT))
            if d.base:                      # an offset past the limit may wrap below the base
                ranges.append((0, d.base - 1))
    if (limit + 1) // 8 > len(table) // 8:  # loadable entries past the SELECTORS held: their
        ranges.append((0, FLAT))            # limits unknown here, every access is filtered (one
                                            # through such a selector goes to Python: limits.c)
    return bases, limits, code, _merge(ranges), fetch_from



def _merge(ranges):
    out = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out
