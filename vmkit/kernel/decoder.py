"""Decoding the instruction behind a trap, with a cache that cannot go stale.

The kernel (traps.py) and a VMM (vmm.py) decode the instruction at the
faulting EIP to emulate it. A guest traps on the same few instructions over
and over (the COS's EOI `out`, its cli/sti, its hlt), and capstone costs
more than the rest of a kernel entry's Python. So a decode is kept, keyed by
the address *and the bytes there*: the bytes are read from memory on every
trap, and a changed instruction (new code loaded, a patch) is a new key and
is decoded again. Only the decoding is saved, never what the memory holds.
"""
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from capstone.x86 import X86_OP_IMM

LONGEST = 15                     # an x86 instruction is at most 15 bytes
CACHED = 4096                    # distinct (address, bytes) kept; then the cache starts afresh

_cs = Cs(CS_ARCH_X86, CS_MODE_32)
_cs.detail = True
_decoded = {}


class Decoded:
    """A capstone instruction with what a trap reads of it taken out once: capstone's
    CsInsn converts `mnemonic`, `op_str`, `size` and `operands` from its C record on every
    access (~0.1 µs each, and the kernel's #GP path asks for the mnemonic five times).
    `io`, for an in or out: (its immediate port, None when the port is DX; its data's
    size in bytes), what the kernel and a VMM emulate it from, read from its operands once
    (each operand's type, imm and size is a capstone access too). Anything else is
    capstone's own attribute."""
    __slots__ = ("insn", "mnemonic", "op_str", "size", "address", "operands", "io")

    def __init__(self, insn):
        self.insn, self.mnemonic, self.op_str = insn, insn.mnemonic, insn.op_str
        self.size, self.address, self.operands = insn.size, insn.address, insn.operands
        self.io = _io(self) if self.mnemonic in ("in", "out") else None

    def __getattr__(self, name):
        return getattr(self.insn, name)

    def __repr__(self):
        return f"<{self.mnemonic} {self.op_str} at {self.address:#x}>"


def _io(insn):
    """(immediate port or None for DX, data size) of an in or out: `out port, data`,
    `in data, port`."""
    ops = insn.operands
    port, data = (ops[0], ops[1]) if insn.mnemonic == "out" else (ops[1], ops[0])
    return (port.imm if port.type == X86_OP_IMM else None), data.size


def decode(memory, eip):
    """The instruction at physical `eip` as capstone decodes it (with operands), or None."""
    view = getattr(memory, "_view", None)
    if view is not None and 0 <= eip < len(view):     # (a slice of the buffer: memory.read's
        code = view[eip:eip + LONGEST + 1].tobytes()  # bytes, without its ctypes call, ~5x)
    else:
        code = memory.read(eip, min(LONGEST + 1, memory.size - eip))
    key = (eip, code)
    insn = _decoded.get(key)
    if insn is None:
        insn = next(_cs.disasm(code, eip, 1), None)
        if insn is not None:
            insn = Decoded(insn)
        if len(_decoded) >= CACHED:
            _decoded.clear()
        _decoded[key] = insn
    return insn


def reg_name(reg):
    return _cs.reg_name(reg)
