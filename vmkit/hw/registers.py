"""A CPU's registers by name, read and written through Unicorn's C API.

Through Unicorn's Python binding a register read costs ~10x more than the C call, and a
write of ESP or EFLAGS ~30-50 µs (measured), while one delivery reads a dozen and writes
five, and a world switch's check reads more: so plain registers go to uc_reg_read and
uc_reg_write straight, several at once through uc_reg_read_batch / uc_reg_write_batch with
ctypes arrays made once per set of names, and the table registers (GDTR IDTR LDTR TR) as
(selector, base, limit, flags). The hidden part of a segment register, which Unicorn does
not give, is read from a saved context (segment; unicorn_quirks.py).

A mixin of CPU (cpu.py), as delivery.py and io.py are: it uses the scratch buffers
CPU.__init__ makes (`_scratch`, `_scratch_ref`, `_mmr`, `_batches`) and its `_uch`.
"""
import ctypes

from unicorn import UcError
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.arch.intel import UcRegMMR

from . import unicorn_quirks
from .x86 import EFLAGS_IF

GENERAL = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp")
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss")
SEGMENT_ATTRIBUTES = 0x00F0FF00     # a descriptor's second dword without its base and limit bits
REG = {name: getattr(X, "UC_X86_REG_" + name.upper()) for name in
       GENERAL + SEGMENTS + ("eip", "eflags", "cr0", "cr2", "cr3", "cr4",
                             "gdtr", "idtr", "ldtr", "tr")}
TABLES = ("gdtr", "idtr", "ldtr", "tr")
_PLAIN_REG = {name: reg for name, reg in REG.items() if name not in TABLES}
_reg_read = _uc.uclib.uc_reg_read      # (looked up once, not per register read)
_reg_read_batch = _uc.uclib.uc_reg_read_batch


class Registers:
    """A CPU's registers (see the module's docstring)."""

    def __getitem__(self, name):
        """Plain registers go straight to Unicorn's C API: through the Python
        binding a read costs ~10x more and a write of ESP or EFLAGS ~30-50 µs
        (measured), and one delivery reads a dozen and writes five."""
        reg = _PLAIN_REG.get(name)
        if reg is not None:                  # (the C function and the pointer looked up once)
            scratch = self._scratch
            scratch.value = 0
            _reg_read(self._uch, reg, self._scratch_ref)
            return scratch.value
        mmr = self._mmr                      # a table register, or a KeyError naming no register
        mmr.selector = mmr.base = mmr.limit = mmr.flags = 0   # Unicorn fills only some fields
        _reg_read(self._uch, REG[name], ctypes.byref(mmr))
        return (mmr.selector, mmr.base, mmr.limit, mmr.flags)

    def __setitem__(self, name, value):
        if name in TABLES:                   # (selector, base, limit, flags), as __getitem__ gives
            mmr = self._mmr
            mmr.selector, mmr.base, mmr.limit, mmr.flags = value
            err = _uc.uclib.uc_reg_write(self._uch, REG[name], ctypes.byref(mmr))
            if err:
                raise UcError(err)
            return
        self._scratch.value = value & 0xFFFFFFFFFFFFFFFF
        err = _uc.uclib.uc_reg_write(self._uch, REG[name], ctypes.byref(self._scratch))
        if err:
            raise UcError(err)

    def _batch(self, names):
        """ctypes arrays for one set of register names, made once and reused."""
        batch = self._batches.get(names)
        if batch is None:
            n = len(names)
            vals = (ctypes.c_uint64 * n)()
            batch = ((ctypes.c_int * n)(*(REG[x] for x in names)), vals,
                     (ctypes.c_void_p * n)(*(ctypes.addressof(vals) + 8 * i for i in range(n))), n)
            self._batches[names] = batch
        return batch

    def read(self, *names):
        """Several plain registers in one call into Unicorn (uc_reg_read_batch)."""
        ids, vals, ptrs, n = self._batches.get(names) or self._batch(names)
        for i in range(n):
            vals[i] = 0
        _reg_read_batch(self._uch, ids, ptrs, n)
        return vals[:]

    def read_with_tables(self, plain, tables):
        """Plain registers and table registers (GDTR IDTR LDTR TR, as (selector, base,
        limit, flags)) in one uc_reg_read_batch call: a call into C costs about as
        much as the read itself, and a delivery or a switch's verify reads eight or more."""
        batch = self._batches.get((plain, tables))
        if batch is None:
            names = plain + tables
            vals = (ctypes.c_uint64 * len(plain))()
            mmrs = [UcRegMMR() for _ in tables]
            ptrs = [ctypes.addressof(vals) + 8 * i for i in range(len(plain))] + [ctypes.addressof(m) for m in mmrs]
            batch = ((ctypes.c_int * len(names))(*(REG[x] for x in names)), vals, mmrs,
                     (ctypes.c_void_p * len(names))(*ptrs), len(names))
            self._batches[(plain, tables)] = batch
        ids, vals, mmrs, ptrs, n = batch
        for i in range(len(plain)):
            vals[i] = 0
        for m in mmrs:
            m.selector = m.base = m.limit = m.flags = 0     # Unicorn fills only some fields
        _reg_read_batch(self._uch, ids, ptrs, n)
        return vals[:], [(m.selector, m.base, m.limit, m.flags) for m in mmrs]

    def write(self, **values):
        """Several plain registers in one call into Unicorn (uc_reg_write_batch)."""
        ids, vals, ptrs, n = self._batch(tuple(values))
        for i, v in enumerate(values.values()):
            vals[i] = v & 0xFFFFFFFFFFFFFFFF
        err = _uc.uclib.uc_reg_write_batch(self._uch, ids, ptrs, n)
        if err:
            raise UcError(err)

    def segment(self, name):
        """(selector, base, limit, flags) of segment register `name` (cs ds es fs gs ss)
        as the CPU holds it: the selector and the *hidden* part the CPU loaded from the
        descriptor when the selector was loaded (a later edit of the GDT does not change
        it). Unicorn's reg_read gives only the selector; the rest is read from QEMU's
        CPUX86State in the saved context (unicorn_quirks.segment_cache: segs[] at context
        offset 0xE0, 24 bytes each, ES CS SS DS FS GS; measured). `limit` is in bytes (G
        applied); `flags` the descriptor's attribute bits as loaded (type, with the accessed
        bit the CPU sets, in 8-11, S 12, DPL 13-14, P 15, AVL 20, D/B 22, G 23)."""
        if name not in SEGMENTS:
            raise ValueError(f"no segment register {name!r}: one of {', '.join(SEGMENTS)}")
        selector, base, limit, flags = unicorn_quirks.segment_cache(self.uc, name)
        return selector, base, limit, flags & SEGMENT_ATTRIBUTES

    @property
    def cpl(self):
        return self["cs"] & 3

    @property
    def interrupts_enabled(self):
        return bool(self["eflags"] & EFLAGS_IF)

    def state(self):
        """Every register a widget or test looks at, as plain ints / tuples."""
        s = {name: self[name] for name in GENERAL + SEGMENTS + ("eip", "eflags", "cr0", "cr3")}
        for t in TABLES:
            s[t] = self[t]            # (selector, base, limit, flags)
        s["cpl"] = self.cpl
        return s
