"""A world switch's verify done in C (switch_verify.c): the registers, the frame, the save
area and the descriptors read and compared in one call, Python left to name what differs.

After the switch's x86 has loaded a world, the kernel reads every claim-15 item back (the
registers and table registers the CPU holds, the frame the stub's popad and iretd will load)
and compares it with the save area (kernel/switch.py: verify). In Python that is a batch
read, a frame and an area unpacked, two descriptors decoded, ~7 µs a switch; in C it is one
call. The C answers with a bit per item that differs, and the checks beside them (CHECKS);
it declines (None) where the Python would read something other than plain RAM, and the
kernel's Python verify, the reference, does it all.

The layout is the kernel's, given once (`Verifying`): per item, the frame offset it is read
from or the register value (REGISTER_VALUES) it is, its offset and width in the save area;
the frame's size and where CS, EIP and EFLAGS lie in it; where a CPL 0 frame ends (the
world's ESP then, SS the register's); which items are ESP, SS and CR3.
"""
import ctypes

from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc

from .counter import library

MAX_ITEMS = 32                           # as VERIFY_ITEMS in switch_verify.c
# the register values an item can be, as V_* in switch_verify.c
REGISTER_VALUES = ("ss", "cr3", "gdtr.limit", "gdtr.base", "idtr.limit", "idtr.base", "ldtr.sel", "tr.sel")
# the checks beside the items, from bit MAX_ITEMS on (VERIFY_TR_DESCRIPTOR ... VERIFY_IF)
CHECKS = ("tr.descriptor", "ldtr.descriptor", "cr0.pg", "IF")
_IDS = ("SS", "CR3", "CR0", "EFLAGS", "CS", "GDTR", "IDTR", "LDTR", "TR")    # as RD_* in switch_verify.c
_REG_READ_BATCH = ctypes.cast(_uc.uclib.uc_reg_read_batch, ctypes.c_void_p).value
_U64 = ctypes.c_uint64


class _Verify(ctypes.Structure):
    """struct vmkit_verify in switch_verify.c, field for field."""
    _fields_ = [("ram", ctypes.c_void_p), ("ram_size", _U64), ("reg_read_batch", ctypes.c_void_p),
                ("ids", ctypes.c_int64 * len(_IDS)), ("items", _U64), ("area_size", _U64),
                ("source", ctypes.c_int64 * MAX_ITEMS), ("area_at", _U64 * MAX_ITEMS),
                ("width", _U64 * MAX_ITEMS)] + [(name, _U64) for name in (
                    "frame_size", "cs_at", "eip_at", "eflags_at", "cpl0_frame", "esp_item", "ss_item",
                    "cr3_item", "cr0", "cs", "eip", "frame_cs", "eflags", "done", "declined")]


def names(mask, items):
    """The items and checks a mask's bits name, in the Python verify's order (the items',
    then CHECKS')."""
    return [n for i, n in enumerate(items) if mask >> i & 1] + [
        n for i, n in enumerate(CHECKS) if mask >> (MAX_ITEMS + i) & 1]


class Verifying:
    """A board's C verify (None from `verify` when it cannot: no C library, or declined).
    `items`: ((name, source, area offset, width), ...) in the save area's order, source a
    frame offset or one of REGISTER_VALUES; `frame`: dict(size, cs, eip, eflags, cpl0_end);
    the items ESP, SS and CR3 are named "esp", "ss", "cr3"."""

    def __init__(self, board, items, frame):
        lib = library()
        self._call = None
        if lib is None or len(items) > MAX_ITEMS:
            return
        v = self.state = _Verify()
        memory = board.memory
        v.ram, v.ram_size, v.reg_read_batch = memory.address, memory.size, _REG_READ_BATCH
        v.ids[:] = [getattr(X, "UC_X86_REG_" + r) for r in _IDS]
        v.items, order = len(items), [n for n, *_ in items]
        for i, (_, source, at, width) in enumerate(items):
            v.source[i] = source if isinstance(source, int) else -1 - REGISTER_VALUES.index(source)
            v.area_at[i], v.width[i] = at, width
        v.area_size = max(at + width for _, _, at, width in items)
        v.frame_size, v.cs_at, v.eip_at = frame["size"], frame["cs"], frame["eip"]
        v.eflags_at, v.cpl0_frame = frame["eflags"], frame["cpl0_end"]
        v.esp_item, v.ss_item, v.cr3_item = order.index("esp"), order.index("ss"), order.index("cr3")
        call = lib.vmkit_verify
        call.argtypes = (ctypes.c_void_p, ctypes.c_void_p, _U64, _U64)
        call.restype = ctypes.c_int64
        self._call, self._at = call, ctypes.addressof(v)

    def verify(self, cpu, frame, area):
        """The mask of what differs for the world loaded on `cpu` (its frame at `frame`, its
        save area at `area`), 0 if nothing; None: the C did not verify (the Python must).
        After a verify, `state` holds CR0 and CS as read, and the frame's EIP, CS, EFLAGS."""
        call = self._call
        if call is None:
            return None
        mask = call(cpu._uch, self._at, frame, area)
        return None if mask < 0 else mask

    def counts(self):
        """(verifies done in C, declined to the Python)."""
        return (0, 0) if self._call is None else (self.state.done, self.state.declined)
