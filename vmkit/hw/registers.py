"""A CPU's registers by name, read and written through Unicorn's C API.

Through Unicorn's Python binding a register read costs ~10x more than the C call, and a
write of ESP or EFLAGS ~30-50 µs (measured), while one delivery reads a dozen and writes
five, and a world switch's check reads more: so plain registers go to uc_reg_read and
uc_reg_write straight, several at once through uc_reg_read_batch / uc_reg_write_batch with
ctypes arrays made once per set of names, and the table registers (GDTR IDTR LDTR TR) as
(selector, base, limit, flags). The hidden part of a segment register, which Unicorn does
not give, is read from a saved context (segment; unicorn_quirks.py).

A mixin of CPU (cpu.py), as delivery.py and io.py are: it uses the scratch buffers
CPU.__init__ makes (`_scratch`, `_scratch_ref`, `_mmr`, `_batches`, `_readers`) and its `_uch`.
"""
import ctypes
import operator
import struct

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
_reg_write_batch = _uc.uclib.uc_reg_write_batch
_MMR = struct.Struct("<H6xQII")             # uc_x86_mmr: selector, base, limit, flags (24 bytes)
assert _MMR.size == ctypes.sizeof(UcRegMMR)


def _table_batch(plain, tables):
    """read_with_tables' arrays for one set of names: the ids, the pointers into one buffer
    (plain values first, 8 bytes each, then a uc_x86_mmr per table register), the buffer,
    zeros to clear it with, the struct that reads it all, and the getter that cuts what it
    read into the plain values and a 4-tuple per table register."""
    names = plain + tables
    size = 8 * len(plain) + _MMR.size * len(tables)
    buf = ctypes.create_string_buffer(size)
    at = ctypes.addressof(buf)
    ptrs = [at + 8 * i for i in range(len(plain))] + [at + 8 * len(plain) + _MMR.size * i
                                                      for i in range(len(tables))]
    unpack = struct.Struct("<" + "Q" * len(plain) + _MMR.format[1:] * len(tables)).unpack_from
    return ((ctypes.c_int * len(names))(*(REG[x] for x in names)),
            (ctypes.c_void_p * len(names))(*ptrs), len(names), buf, bytes(size), unpack,
            operator.itemgetter(slice(0, len(plain)), *(slice(len(plain) + 4 * i, len(plain) + 4 * i + 4)
                                                       for i in range(len(tables))))
            if tables else lambda got: (got,))


class Registers:
    """A CPU's registers (see the module's docstring)."""

    def __getitem__(self, name):
        """Plain registers go straight to Unicorn's C API: through the Python
        binding a read costs ~10x more and a write of ESP or EFLAGS ~30-50 µs
        (measured), and one delivery reads a dozen and writes five. Each into a
        scratch of the register's own width (`_readers`), which Unicorn fills whole:
        nothing to clear first."""
        reader = self._readers.get(name)
        if reader is not None:               # (the C function and the pointer looked up once)
            reg, scratch, ref = reader
            _reg_read(self._uch, reg, ref)
            return scratch.value
        mmr = self._mmr                      # a table register, or a KeyError naming no register
        mmr.selector = mmr.base = mmr.limit = mmr.flags = 0   # Unicorn fills only some fields
        _reg_read(self._uch, REG[name], ctypes.byref(mmr))
        return (mmr.selector, mmr.base, mmr.limit, mmr.flags)

    def _make_readers(self):
        """__getitem__'s (register id, scratch, pointer to it) by name, the scratch as wide as
        Unicorn 2.1.4 writes the register in 32-bit mode (measured: a segment register's 2
        bytes, every other plain register's 4, the rest of a wider scratch left as it was)."""
        wide, narrow = ctypes.c_uint32(), ctypes.c_uint16()
        refs = {id(wide): ctypes.byref(wide), id(narrow): ctypes.byref(narrow)}
        return {name: (reg, s, refs[id(s)]) for name, reg in _PLAIN_REG.items()
                for s in (narrow if name in SEGMENTS else wide,)}

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
        """ctypes arrays for one set of register names, made once and reused: (the ids,
        the values, pointers to them, how many, zeros to clear the values with, and the
        struct that packs them)."""
        batch = self._batches.get(names)
        if batch is None:
            n = len(names)
            vals = (ctypes.c_uint64 * n)()
            batch = ((ctypes.c_int * n)(*(REG[x] for x in names)), vals,
                     (ctypes.c_void_p * n)(*(ctypes.addressof(vals) + 8 * i for i in range(n))), n,
                     (0,) * n, struct.Struct(f"<{n}Q").pack_into)
            self._batches[names] = batch
        return batch

    def read(self, *names):
        """Several plain registers in one call into Unicorn (uc_reg_read_batch). The values
        cleared in one slice assignment (Unicorn fills only a register's own width)."""
        ids, vals, ptrs, n, zeros, _ = self._batches.get(names) or self._batch(names)
        vals[:] = zeros
        _reg_read_batch(self._uch, ids, ptrs, n)
        return vals[:]

    def read_with_tables(self, plain, tables):
        """Plain registers and table registers (GDTR IDTR LDTR TR, as (selector, base,
        limit, flags)) in one uc_reg_read_batch call: a call into C costs about as
        much as the read itself, and a delivery or a switch's verify reads eight or more.
        The values land in one buffer made once per set of names (u64 each, then
        uc_x86_mmr's 24 bytes each), zeroed by setting its bytes (Unicorn fills only some
        of an entry's bytes) and read back with one struct unpack: zeroing ctypes
        structures' fields and reading them one by one cost twice this."""
        batch = self._batches.get((plain, tables))
        if batch is None:
            batch = self._batches[(plain, tables)] = _table_batch(plain, tables)
        ids, ptrs, n, buf, zeros, unpack, split = batch
        buf.raw = zeros
        _reg_read_batch(self._uch, ids, ptrs, n)
        plain, *tables = split(unpack(buf))
        return list(plain), tables

    def write(self, **values):
        """Several plain registers in one call into Unicorn (uc_reg_write_batch). The values
        packed in one struct call (a value that does not fit 64 bits unsigned: masked, as
        one register's write is)."""
        ids, vals, ptrs, n, _, pack = self._batches.get(tuple(values)) or self._batch(tuple(values))
        try:
            pack(vals, 0, *values.values())
        except struct.error:
            for i, v in enumerate(values.values()):
                vals[i] = v & 0xFFFFFFFFFFFFFFFF
        err = _reg_write_batch(self._uch, ids, ptrs, n)
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
        reg, scratch, ref = self._readers["cs"]        # (__getitem__'s, inlined: the board
        _reg_read(self._uch, reg, ref)                  # asks these at every round)
        return scratch.value & 3

    @property
    def interrupts_enabled(self):
        reg, scratch, ref = self._readers["eflags"]
        _reg_read(self._uch, reg, ref)
        return bool(scratch.value & EFLAGS_IF)

    def state(self):
        """Every register a widget or test looks at, as plain ints / tuples."""
        s = {name: self[name] for name in GENERAL + SEGMENTS + ("eip", "eflags", "cr0", "cr3")}
        for t in TABLES:
            s[t] = self[t]            # (selector, base, limit, flags)
        s["cpl"] = self.cpl
        return s
