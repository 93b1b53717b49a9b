"""in/out below the I/O privilege level: the CPU's check, in C (io.c).

Unicorn checks neither IOPL nor the TSS's I/O permission bitmap. With the C
library (counter.py builds it) its in/out hooks are io.c's: a refused access
is noted there and the run stops, and only an allowed one calls into Python,
for the port bus. Without it, CPU._io_denied makes the same check in Python.
"""
import ctypes

from unicorn import UC_HOOK_INSN, UcError
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_IN_CFUNC, HOOK_INSN_OUT_CFUNC
from unicorn.unicorn_py3.unicorn import uc_hook_h


class IoCheck(ctypes.Structure):
    """struct vmkit_io in io.c, field for field."""
    _fields_ = [("reg_read", ctypes.c_void_p), ("stop", ctypes.c_void_p),
                ("device_in", ctypes.c_void_p), ("device_out", ctypes.c_void_p),
                ("memory", ctypes.c_void_p), ("memory_size", ctypes.c_uint64),
                ("count", ctypes.c_void_p),
                ("cs_id", ctypes.c_int64), ("eflags_id", ctypes.c_int64), ("eip_id", ctypes.c_int64),
                ("tr_id", ctypes.c_int64), ("eax_id", ctypes.c_int64),
                ("refused", ctypes.c_uint64), ("eip", ctypes.c_uint64), ("at_count", ctypes.c_uint64)]


def install(cpu, lib, device_in, device_out):
    """io.c's in/out hooks on `cpu`'s Unicorn, behind them the port bus (device_in and
    device_out: ctypes callbacks of the binding's in/out hook types). Returns the check's
    state: its `refused` is set when a run stopped for a refused in/out."""
    check = IoCheck(ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p).value,
                    ctypes.cast(_uc.uclib.uc_emu_stop, ctypes.c_void_p).value,
                    ctypes.cast(device_in, ctypes.c_void_p).value,
                    ctypes.cast(device_out, ctypes.c_void_p).value,
                    cpu.memory.address, cpu.memory.size,
                    ctypes.addressof(cpu.counter.state),       # its first field: the count
                    X.UC_X86_REG_CS, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_EIP, X.UC_X86_REG_TR,
                    X.UC_X86_REG_EAX, 0, 0, 0)
    for hook, instruction in ((lib.vmkit_io_in, X.UC_X86_INS_IN), (lib.vmkit_io_out, X.UC_X86_INS_OUT)):
        handle = uc_hook_h()
        err = _uc.uclib.uc_hook_add(cpu.uc._uch, ctypes.byref(handle), UC_HOOK_INSN,
                                    ctypes.cast(hook, ctypes.c_void_p), ctypes.byref(check),
                                    ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(instruction))
        if err:
            raise UcError(err)
    return check


DEVICE_HOOKS = (HOOK_INSN_IN_CFUNC, HOOK_INSN_OUT_CFUNC)
