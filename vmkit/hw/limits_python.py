"""The limit checks without the C library (no C compiler: counter.library() is None).

The same ranges as the C filter's (limits_prepared.py's `_decode`: past the limit of every
segment that can be loaded), each hooked with a Python memory hook that hands every access
there to the slow path (limits_decode.py) whole, where the C filter lets the accesses inside
every loaded segment's limit through first; and the fetch check made before each instruction
by the Python counter (counter.py), as counter.c makes it with limits.c's `fetch_past_limit`.
The same answers, slower: each access in a range is decoded. Paging on: no hook, as with C
(limits_paging.py). Not kept as the C filter keeps them: a refresh that finds the GDT, CR0
and the CPL as they were does nothing, any other hooks its ranges anew.
"""
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

from . import unicorn_quirks
from .limits_decode import FLAT, holds, inside
from .limits_prepared import SELECTORS, _decode, _merge
from .x86 import CR0_PG

FS_GS = (0x64, 0x65)
PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))


def _through_fs_gs(head):
    """May the instruction whose first bytes are `head` access memory through FS or GS (a
    segment prefix for one of them; or only prefixes seen: not known)?"""
    for byte in head:
        if byte in FS_GS:
            return True
        if byte not in PREFIXES:
            return False
    return True


class PythonChecks:
    """A part of SegmentLimits (limits.py) where `lib` is None. Uses its `cpu`, and the slow
    path's `_on_slow` and `_descriptor` (limits_decode.py)."""

    def _python_start(self):
        self._py_key, self._py_hooks, self._py_ranges, self._py_held = None, [], (), {}
        self.cpu.counter.state.limits = self._fetch_past_limit     # the Python counter asks it

    def _python_refresh(self, cpl, paging, loading):
        cpu = self.cpu
        _, base, limit, _ = cpu["gdtr"]
        paged = bool(cpu["cr0"] & CR0_PG) if paging is None else bool(paging)
        least = cpl or 0
        table = self._table(base, limit)
        other = self._table(*loading) if loading else None
        key = (base, limit, table, least, paged, loading, other)
        if key == self._py_key:
            return
        self._py_key, self._py_held = key, {}    # the descriptors the filter holds, read anew
        _, _, _, ranges, fetch_from = _decode(table, limit, least)
        if loading:
            ranges = _merge(list(ranges) + list(_decode(other, loading[1], least)[3]))
        cpu.counter.set_fetch_from(fetch_from)
        uc = cpu.uc
        for handle in self._py_hooks:
            uc.hook_del(handle)
        if self._py_hooks:
            unicorn_quirks.clear_exception_record(uc)   # (as stubs.remove: a hook_del under paging)
        self._py_ranges = () if paged else tuple(ranges)
        self._py_hooks = [uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._python_access, None,
                                      first, last) for first, last in self._py_ranges]

    def _table(self, base, limit):
        """The GDT's bytes the filter decodes (at most SELECTORS entries, as C holds)."""
        n = min((limit + 1) // 8, SELECTORS) * 8
        try:
            return self.cpu.read_linear(base, n) if n else b""
        except ValueError:
            return b""

    def _python_access(self, uc, kind, address, size, value, data):
        """As limits.c's filter, first: an access inside the limit of every segment register
        the instruction may use goes through (without an FS or GS prefix, those are CS, DS,
        ES, SS: the kernel's stores past the COS's limit, while FS and GS still hold the
        COS's segment); anything else is decoded (limits_decode.py)."""
        if self.violation is not None:
            return
        cpu = self.cpu
        cr0, eip, *selectors = cpu.read("cr0", "eip", "cs", "ds", "es", "ss")
        if cr0 & CR0_PG:
            return                          # paging on: a physical address (limits_paging.py)
        held = self._py_held
        for sel in selectors:
            if sel not in held:
                held[sel] = self._descriptor(sel)
        cs = held[selectors[0]]
        if not holds(cs, selectors[0] & 3):
            return                          # CS was not loaded from this GDT: no limit judged
        try:
            head = cpu.read_linear(((cs.base if cs else 0) + eip) & FLAT, 4)
        except ValueError:
            head = bytes(FS_GS)             # unreadable: decode it
        if not _through_fs_gs(head) and all(d is None or inside(d, (address - d.base) & FLAT, size)
                                            for d in map(held.get, selectors)):
            return
        self._on_slow(kind, address, size)

    def _fetch_past_limit(self, address, size):
        """limits.c's fetch_past_limit: does the instruction at `address` (linear) end past
        CS's limit? Only for a CS this GDT describes as code the CPL may run."""
        cs = self.cpu["cs"]
        if cs & 4 or cs >> 3 == 0:
            return False
        d = self._descriptor(cs)
        if not holds(d, cs & 3):
            return False
        if size == 0 or size > 15:
            size = 1
        return ((address - d.base) & FLAT) + size - 1 > d.limit
