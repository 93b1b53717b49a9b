import struct

import pytest

from vmkit.hw.board import Board, KERNEL_CS
from vmkit.hw.x86 import encode_gate, encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE

IDT_A, IDT_B, GDT, TSS = 0x2000, 0x2800, 0x3000, 0x3100
RING0_STACK = 0x8F000


def write_idt(board, base, gates, count=256):
    """Fill an IDT: `gates` maps vector -> handler offset (or (offset, dpl, type))."""
    for vector, spec in gates.items():
        offset, dpl, type = spec if isinstance(spec, tuple) else (spec, 0, 0xE)
        board.memory.write(base + vector * 8, encode_gate(offset, KERNEL_CS, type, dpl))
    return (0, base, count * 8 - 1, 0)


def install_tss(board, esp0=RING0_STACK):
    """A GDT like the firmware's plus a TSS at selector 0x28, loaded into TR."""
    flat = 0xFFFFFFFF
    gdt = (bytes(8) + encode_segment(0, flat, CODE_RX, 0) + encode_segment(0, flat, DATA_RW, 0)
           + encode_segment(0, flat, CODE_RX, 3) + encode_segment(0, flat, DATA_RW, 3)
           + encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.memory.write(GDT, gdt)
    board.memory.write(TSS, encode_tss(esp0, 0x10))
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["tr"] = (0x28, TSS, 103, 0x8B)


def u32(board, addr):
    return struct.unpack("<I", board.memory.read(addr, 4))[0]


@pytest.fixture
def board():
    b = Board()
    yield b
    b.close()
