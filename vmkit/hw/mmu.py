"""Memory as one CPU sees it: linear addresses through its MMU, and what it caches.

The board's memory (memory.py) is physical. A CPU reaches it through its page tables
at its CR3, with its privilege (the user/supervisor check), and through its TLB; and it
runs code Unicorn translated from it. So reading what a program sees, or what an
instruction at EIP is, goes through *this* CPU (read_linear: a VM's guest sees its
memory from 0, not at its physical address), and a write from outside the CPU (a device,
the loader, another CPU) must drop what this one cached: its translated code
(invalidate_code), its TLB (flush_tlb, as invlpg or a CR3 reload would).

A mixin of CPU (cpu.py), as delivery.py and io.py are: it uses the CPU's `uc`, `_uch`,
`index` and registers, and `_buffers` (a dict it fills: read_linear's buffers, this
CPU's own, as its bytes are copied out before the read returns).
"""
import ctypes

import unicorn
from unicorn import UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE
from unicorn.unicorn_py3 import unicorn as _uc

from .x86 import CR0_PG, CR4_PSE

# uc_vmem_read/uc_vmem_write/uc_vmem_translate are exported by libunicorn 2.1.4 but not wrapped
# by its Python binding: declared here once (see read_linear).
_lib = _uc.uclib
_lib.uc_vmem_read.argtypes = _lib.uc_vmem_write.argtypes = [
    ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_lib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_uint64)]
_vmem_read, _vmem_write = _lib.uc_vmem_read, _lib.uc_vmem_write   # (looked up once, not per call)
_READ, _WRITE = unicorn.UC_PROT_READ, unicorn.UC_PROT_WRITE
_SMALL = 64          # read_linear keeps a buffer for each length up to this (its `_buffers`)


class LinearFault(ValueError):
    """A linear address this CPU's MMU does not let it reach now (not present, or
    supervisor-only while the CPU runs at CPL 3, or paging off and no such RAM)."""


class MMU:
    """A CPU's view of memory (see the module's docstring)."""

    def read_linear(self, address, length):
        """Bytes at a linear address, translated by *this* CPU's MMU as its own next
        load would be: the page tables at its CR3, its current privilege (the
        user/supervisor check), and its TLB. Measured (Unicorn 2.1.4,
        uc_vmem_read): a translation cached in the TLB, by an instruction or by
        an earlier read_linear, is used even after the page-table entry changed,
        until this CPU's TLB drops it (flush_tlb, or an `invlpg` it executes). (A small
        read goes into a buffer kept for its length: making one cost a third of the read.)"""
        buf = self._buffers.get(length)
        if buf is None:
            buf = ctypes.create_string_buffer(length)
            if 0 < length <= _SMALL:
                self._buffers[length] = buf
        if _vmem_read(self._uch, address, _READ, buf, length):
            raise LinearFault(self._linear_why("read", address, length))
        return buf.raw

    def write_linear(self, address, data):
        """Store at a linear address through this CPU's MMU (see read_linear). A
        store's TLB entry is cached separately from a load's (QEMU sets the
        dirty bit on the first store), so a page only read so far is walked again."""
        if type(data) is not bytes:
            data = bytes(data)
        err = _vmem_write(self._uch, address, _WRITE, data, len(data))
        if err:
            raise LinearFault(self._linear_why("write", address, len(data)))

    def translate_linear(self, address):
        """The physical address this CPU's MMU gives a read of `address` (its TLB first)."""
        out = ctypes.c_uint64()
        if _lib.uc_vmem_translate(self._uch, address, unicorn.UC_PROT_READ, ctypes.byref(out)):
            raise LinearFault(self._linear_why("translate", address, 1))
        return out.value

    def supervisor_present(self, address, length, cr3):
        """Are the pages of [address, address + length) present in the page directory at
        `cr3` (physical), as the CPU's own accesses while it delivers an interrupt see them:
        supervisor accesses, which the U/S bit does not refuse? Walked here in the board's
        memory, not through Unicorn: a lookup Unicorn makes itself (uc_vmem_translate does
        not say supervisor; a register load reading the GDT does) raises a #PF by leaving
        its caller with a longjmp, and from inside a hook that leaves the Python frames
        above it unfinished (measured: the interpreter's recursion depth grew by 5 with each
        such #PF until a RecursionError). 4 MiB pages (PS) count only with CR4.PSE."""
        memory, end = self.memory, address + max(length, 1) - 1
        pse = None
        for page in range(address >> 12, (end >> 12) + 1):
            pde_at = (cr3 & ~0xFFF) + 4 * ((page >> 10) & 0x3FF)
            if pde_at + 4 > memory.size:
                return False
            pde = memory.read_u32(pde_at)
            if not pde & 1:
                return False
            if pde & 0x80:
                if pse is None:
                    pse = bool(self["cr4"] & CR4_PSE)
                if pse:
                    continue
            pte_at = (pde & ~0xFFF) + 4 * (page & 0x3FF)
            if pte_at + 4 > memory.size or not memory.read_u32(pte_at) & 1:
                return False
        return True

    def _linear_why(self, what, address, length):
        paging = "on" if self["cr0"] & CR0_PG else "off"
        return (f"CPU {self.index} cannot {what} {length} bytes at linear {address:#x}: its MMU "
                f"refuses it (not present or not for CPL {self.cpl}; paging {paging}, CR3 {self['cr3']:#x})")

    def invalidate_code(self, begin, end):
        """Drop translated code for a physical range written from outside the CPU.
        Unicorn 2.1.4 takes the range as *virtual* and translates it through the
        page tables (measured): with paging on and the range not mapped, that
        leaves a #PF in Unicorn's exception record (the CPU's next two faults
        then become #DF and a silent stop). So with paging on, drop it all."""
        if self["cr0"] & CR0_PG:
            self.uc.ctl_flush_tb()
        else:
            self.uc.ctl_remove_cache(begin, end)

    def flush_tlb(self):
        """This CPU's TLB, as invlpg or a CR3 reload would drop it. Unicorn 2.1.4
        (measured) keeps translating through a cached entry after the page-table
        entry in memory changes, until this is done on *that* CPU: another CPU's
        write to a page table does not reach this one's TLB."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _reads(self, address, n):
        """n bytes at linear `address` as this CPU reads them (read_linear: a VM's
        guest sees its memory from 0, not at its physical address), or b"" where
        its MMU refuses them or past the end of memory."""
        try:
            return self.read_linear(address, n)
        except LinearFault:
            return b""
