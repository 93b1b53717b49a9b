"""in/out below the I/O privilege level: the check a CPU makes, and Unicorn does not.

Unicorn checks neither IOPL nor the TSS's I/O permission bitmap. With the C
library (counter.py builds it) the in/out hooks are io.c's: a refused access is
noted there and the run stops (CPU.run delivers its #GP), and only an allowed
one calls into Python, for the port bus. Without a C compiler the hooks are
Python's, and PortAccess._io_denied makes the same check.
"""
import ctypes

from unicorn import UC_HOOK_INSN, UcError
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.arch.intel import UcRegMMR, HOOK_INSN_IN_CFUNC, HOOK_INSN_OUT_CFUNC
from unicorn.unicorn_py3.unicorn import uc_hook_h

from .x86 import EFLAGS_IOPL_SHIFT, EFLAGS_VM, GP

_IO_REGS = (X.UC_X86_REG_CS, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_EIP, X.UC_X86_REG_TR)


class IoCheck(ctypes.Structure):
    """struct vmkit_io in io.c, field for field."""
    _fields_ = [("reg_read", ctypes.c_void_p), ("stop", ctypes.c_void_p),
                ("device_in", ctypes.c_void_p), ("device_out", ctypes.c_void_p),
                ("memory", ctypes.c_void_p), ("memory_size", ctypes.c_uint64),
                ("count", ctypes.c_void_p),
                ("cs_id", ctypes.c_int64), ("eflags_id", ctypes.c_int64), ("eip_id", ctypes.c_int64),
                ("tr_id", ctypes.c_int64), ("eax_id", ctypes.c_int64),
                ("refused", ctypes.c_uint64), ("eip", ctypes.c_uint64), ("at_count", ctypes.c_uint64)]


class PortAccess:
    """A CPU's in/out (a part of the CPU, hw/cpu.py, as delivery.py is)."""

    def _hook_ports(self, lib):
        """Unicorn's in/out hooks: io.c's, the port bus behind them, with the C library
        `lib` (returns the check's state: its `refused` set when a run stopped for a
        refused in/out); else Python's (returns None)."""
        uc = self.uc
        vals, tr = (ctypes.c_uint64 * 3)(), UcRegMMR()         # (_io_denied's one batch)
        self._io_regs = ((ctypes.c_int * 4)(*_IO_REGS), vals, tr,
                         (ctypes.c_void_p * 4)(*[ctypes.addressof(vals) + 8 * i for i in range(3)],
                                               ctypes.addressof(tr)))
        if lib is None:
            self._hooks += [self._hook(UC_HOOK_INSN, HOOK_INSN_IN_CFUNC, self._on_in, X.UC_X86_INS_IN),
                            self._hook(UC_HOOK_INSN, HOOK_INSN_OUT_CFUNC, self._on_out, X.UC_X86_INS_OUT)]
            return None
        device_in = self._callback(HOOK_INSN_IN_CFUNC, self._device_in)
        device_out = self._callback(HOOK_INSN_OUT_CFUNC, self._device_out)
        self._hooks += [device_in, device_out]                # (kept: io.c calls them)
        check = IoCheck(ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p).value,
                        ctypes.cast(_uc.uclib.uc_emu_stop, ctypes.c_void_p).value,
                        ctypes.cast(device_in, ctypes.c_void_p).value,
                        ctypes.cast(device_out, ctypes.c_void_p).value,
                        self.memory.address, self.memory.size,
                        ctypes.addressof(self.counter.state),   # its first field: the count
                        *_IO_REGS, X.UC_X86_REG_EAX, 0, 0, 0)
        for hook, instruction in ((lib.vmkit_io_in, X.UC_X86_INS_IN), (lib.vmkit_io_out, X.UC_X86_INS_OUT)):
            handle = uc_hook_h()
            err = _uc.uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INSN,
                                        ctypes.cast(hook, ctypes.c_void_p), ctypes.byref(check),
                                        ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(instruction))
            if err:
                raise UcError(err)
        return check

    def _io_denied(self, port, size):
        """IOPL, then the TSS's I/O permission bitmap, as the CPU checks them
        (Unicorn checks neither). A clear bit for every byte of the access
        lets a less privileged program use the port; past the TSS limit, no.
        Returns None (allowed) or the EIP of the refused in/out: CS, EFLAGS, EIP
        and TR in one call into Unicorn. (With the C library io.c makes this
        check in Unicorn's hook, and this is not called.)"""
        ids, vals, tr, ptrs = self._io_regs
        vals[0] = vals[1] = vals[2] = 0
        tr.selector = tr.base = tr.limit = tr.flags = 0     # Unicorn fills only some fields
        _uc.uclib.uc_reg_read_batch(self._uch, ids, ptrs, 4)
        cs, eflags, eip = vals
        cpl = cs & 3                        # (virtual-8086 mode: CPL 3, the bitmap alone decides)
        if not eflags & EFLAGS_VM and (cpl == 0 or cpl <= (eflags >> EFLAGS_IOPL_SHIFT) & 3):
            return None
        tss, limit = tr.base, tr.limit
        if limit < 103:
            return eip
        bitmap = tss + self._two_bytes(tss + 102)
        first = bitmap + port // 8
        if first + 1 > tss + limit:                         # the CPU reads two bytes from `first`
            return eip
        # the bits for up to 4 ports lie in the two bytes from `first` (the second masked
        # off when the access does not reach it)
        return eip if (self._two_bytes(first) >> (port % 8)) & ((1 << size) - 1) else None

    def _two_bytes(self, at):
        """The little-endian word at physical `at`, memory the machine lacks reading as
        all ones (as io.c reads it: the bus gives nothing there)."""
        memory = self.memory
        if 0 <= at and at + 2 <= memory.size:
            return memory.read_u16(at)
        return (memory.read(at, 1)[0] if 0 <= at < memory.size else 0xFF) | 0xFF00

    def _device_in(self, uc, port, size, _):
        return self.board.ports.read(port, size)           # (io.c allowed it)

    def _device_out(self, uc, port, size, value, _):
        self.board.ports.write(port, size, value)

    def _on_in(self, uc, port, size, _):
        eip = self._io_denied(port, size)
        if eip is not None:
            self._io_fault = (GP, 0, eip, self.counter.count)
            uc.emu_stop()
            return self["eax"] & ((1 << (8 * size)) - 1)   # the register keeps its value
        return self.board.ports.read(port, size)

    def _on_out(self, uc, port, size, value, _):
        eip = self._io_denied(port, size)
        if eip is not None:
            self._io_fault = (GP, 0, eip, self.counter.count)
            uc.emu_stop()
            return
        self.board.ports.write(port, size, value)
