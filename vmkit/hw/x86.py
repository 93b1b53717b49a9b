"""x86 protected-mode data structures, as bytes in emulated memory.

Descriptors (GDT/LDT segment descriptors, IDT gates, the TSS) are what the
CPU reads from memory, so everything that builds or inspects them goes
through the encoders and decoders here; nothing else in vmkit keeps a Python
copy of a table that the CPU would read from memory.
"""
import struct
from typing import NamedTuple

# Exceptions that push an error code (Intel SDM vol. 3, table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
# Vectors the CPU itself raises; `int n` for these is still a software interrupt.
EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint",
    4: "#OF overflow", 5: "#BR bound", 6: "#UD invalid opcode",
    7: "#NM no math", 8: "#DF double fault", 10: "#TS invalid TSS",
    11: "#NP segment not present", 12: "#SS stack fault",
    13: "#GP general protection", 14: "#PF page fault", 16: "#MF x87",
    17: "#AC alignment", 18: "#MC machine check", 19: "#XM SIMD",
}
DE, UD, DF, TS, NP, SS_FAULT, GP, PF = 0, 6, 8, 10, 11, 12, 13, 14

EFLAGS_CF, EFLAGS_PF, EFLAGS_AF, EFLAGS_ZF, EFLAGS_SF = 1, 4, 16, 64, 128
EFLAGS_TF, EFLAGS_IF, EFLAGS_DF, EFLAGS_OF = 1 << 8, 1 << 9, 1 << 10, 1 << 11
EFLAGS_IOPL_SHIFT = 12
CR0_PE, CR0_PG = 1, 1 << 31          # protection enable; paging
CR4_PSE = 1 << 4                    # 4 MiB pages: a page directory entry with PS maps one
EFLAGS_IOPL = 3 << EFLAGS_IOPL_SHIFT
EFLAGS_NT, EFLAGS_RF, EFLAGS_VM = 1 << 14, 1 << 16, 1 << 17
EFLAGS_VIF, EFLAGS_VIP = 1 << 19, 1 << 20

GATE_INT32, GATE_TRAP32, GATE_TASK = 0xE, 0xF, 0x5
GATE_TYPE_NAMES = {0xE: "32-bit interrupt gate", 0xF: "32-bit trap gate",
                   0x6: "16-bit interrupt gate", 0x7: "16-bit trap gate",
                   0x5: "task gate"}


class Gate(NamedTuple):
    """One IDT entry, decoded."""
    offset: int
    selector: int
    type: int
    dpl: int
    present: bool


def encode_gate(offset, selector, type=GATE_INT32, dpl=0, present=True):
    """8 bytes of an IDT gate: offset split in two halves around selector/attributes."""
    attr = (type & 0xF) | ((dpl & 3) << 5) | (0x80 if present else 0)
    return struct.pack("<HHBBH", offset & 0xFFFF, selector & 0xFFFF, 0, attr,
                       (offset >> 16) & 0xFFFF)


def decode_gate(raw: bytes) -> Gate:
    """The reference decoder the platform uses to deliver interrupts.

    Exercise 00 asks the learner to write this; the CPU can be given theirs
    (`CPU.gate_decoder`) so a wrong decoder visibly breaks delivery."""
    lo, sel, _, attr, hi = struct.unpack("<HHBBH", bytes(raw))
    return Gate(offset=lo | (hi << 16), selector=sel, type=attr & 0xF,
                dpl=(attr >> 5) & 3, present=bool(attr & 0x80))


class Segment(NamedTuple):
    """A GDT/LDT segment descriptor, decoded (system descriptors: s == 0)."""
    base: int
    limit: int          # in bytes, granularity applied
    type: int
    s: int              # 1 = code/data, 0 = system (TSS, LDT)
    dpl: int
    present: bool
    db: int             # 1 = 32-bit
    g: int


def encode_segment(base, limit, type, dpl=0, s=1, db=1, g=None, present=True):
    """8 bytes of a segment descriptor; `limit` is in bytes (g chosen if None)."""
    if g is None:
        g = 1 if limit > 0xFFFFF else 0
    lim = limit >> 12 if g else limit
    lo = (lim & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = (((base >> 16) & 0xFF) | ((type & 0xF) << 8) | (s << 12) | ((dpl & 3) << 13)
          | ((1 if present else 0) << 15) | (((lim >> 16) & 0xF) << 16)
          | (db << 22) | (g << 23) | (((base >> 24) & 0xFF) << 24))
    return struct.pack("<II", lo, hi)


def segment_limit(lo: int, hi: int) -> int:
    """A segment descriptor's limit in bytes (its G bit applied), from its two dwords."""
    lim = (lo & 0xFFFF) | (hi & 0xF0000)
    return (lim << 12) | 0xFFF if hi & (1 << 23) else lim


def decode_segment(raw: bytes) -> Segment:
    lo, hi = struct.unpack("<II", bytes(raw))
    g = (hi >> 23) & 1
    limit = segment_limit(lo, hi)
    base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
    return Segment(base, limit, (hi >> 8) & 0xF, (hi >> 12) & 1, (hi >> 13) & 3,
                   bool(hi & 0x8000), (hi >> 22) & 1, g)


CODE_RX, DATA_RW, TSS_AVAILABLE, TSS_BUSY, LDT = 0xA, 0x2, 0x9, 0xB, 0x2

# The 32-bit TSS: only the fields a stack switch reads are named.
TSS_SIZE = 104
TSS_ESP0, TSS_SS0 = 4, 8


TSS_IOMAP_BASE = 102


def encode_tss(esp0, ss0, allowed_ports=None):
    """A 32-bit TSS. With `allowed_ports`, an I/O permission bitmap follows
    the TSS (all 65536 ports, a clear bit = allowed when CPL > IOPL) and the
    descriptor's limit must cover it; without, no port is allowed."""
    tss = bytearray(TSS_SIZE)
    struct.pack_into("<II", tss, TSS_ESP0, esp0, ss0)
    struct.pack_into("<H", tss, TSS_IOMAP_BASE, TSS_SIZE)
    if allowed_ports is not None:
        bitmap = bytearray(b"\xff" * (65536 // 8 + 1))   # the CPU reads one byte past the end
        for port in allowed_ports:
            bitmap[port // 8] &= ~(1 << (port % 8))
        tss += bitmap
    return bytes(tss)


def selector(index, rpl=0, ldt=False):
    return (index << 3) | (4 if ldt else 0) | rpl
