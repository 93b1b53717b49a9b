"""Segment limits at CPL 0 and at a gate (paging off, where the platform's memory hooks see
linear addresses): a real CPU checks every access against its segment's limit whatever the
CPL, and an interrupt's new EIP against the new CS's limit. The kernel's accesses through
flat segments stay free of Python (the C filter, limits.c), even while the segment
registers it does not use (FS, GS) still hold a shorter segment of the code it interrupted."""
import struct

from vmkit.hw.x86 import encode_gate, encode_segment, CODE_RX, DATA_RW
from conftest import write_idt, install_tss, u32, IDT_A, GDT

SHORT = 0x7FFFF                     # the limit of the DPL 0 segments that are not flat
SHORT_DATA, SHORT_CODE = 0x30, 0x38
RECORD = 0x5000                     # the #GP/#SS handlers write vector, error, EIP here


def cpl0_board(board):
    """A GDT with flat segments, a TSS, and DPL 0 code/data ending at SHORT; #GP/#SS
    handlers that load the flat DS, record the frame and halt."""
    board.boot(0x1000)
    install_tss(board)
    board.memory.write(GDT + SHORT_DATA, encode_segment(0, SHORT, DATA_RW, 0, g=0)
                       + encode_segment(0, SHORT, CODE_RX, 0, g=0))
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, SHORT_CODE + 7, 0)
    cpu.descriptors_changed()
    cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000, 12: 0x6100})
    for at, vector in ((0x6000, 13), (0x6100, 12)):
        board.load(at, f"""
            mov ax, 0x10
            mov ds, ax
            mov dword ptr [{RECORD:#x}], {vector}
            pop eax
            mov [{RECORD + 4:#x}], eax
            pop eax
            mov [{RECORD + 8:#x}], eax
            h: hlt
            jmp h""")
    board.memory.write(RECORD, bytes(12))


def record(board):
    return struct.unpack("<3I", board.memory.read(RECORD, 12))


def test_a_cpl0_store_past_a_short_data_segment_is_gp0_and_does_not_land(board):
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        mov dword ptr [{SHORT - 3:#x}], 5
        mov dword ptr [{SHORT + 1:#x}], 6
        hlt""")
    board.run(200)
    assert u32(board, SHORT - 3) == 5 and u32(board, SHORT + 1) == 0
    assert record(board) == (13, 0, 0x1000 + 4 + 2 + 10)
    assert "past the limit" in board.trace.of("cpu.fault")[0]["why"]


def test_the_kernels_flat_accesses_pay_no_python_while_fs_and_gs_are_short(board):
    """DS, ES, SS flat, FS and GS the short segment (as the kernel runs, entered from a COS
    whose segments end below it): pushes, pops and DS stores past the short limit are
    reached, with no access handed to Python; an FS-prefixed one past it is a #GP."""
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov fs, ax
        mov gs, ax
        mov esp, 0x9F000
        push 0x1234
        pushad
        popad
        pop eax
        mov dword ptr [0x95000], eax
        mov ebx, [0x95000]
        mov dword ptr fs:[0x95000], 9
        hlt""")
    board.run(200)
    assert u32(board, 0x95000) == 0x1234 and board.cpu["ebx"] == 0x1234
    assert record(board)[0] == 13                           # the fs: store, only
    assert board.cpu.limits.decoded == 1                    # ... and only it reached Python


def test_a_gate_whose_offset_is_past_its_code_segments_limit_is_gp(board):
    """An interrupt's new EIP is checked against the new CS's limit: #GP, through the IDT,
    at the `int` (whose EIP the frame holds) and nothing of the gate's handler runs."""
    cpl0_board(board)
    board.memory.write(IDT_A + 0x40 * 8, encode_gate(SHORT + 1, SHORT_CODE))
    board.load(SHORT + 1, "mov dword ptr [0x96000], 1\nhlt")
    board.load(0x1000, "int 0x40\nhlt")
    board.run(200)
    assert u32(board, 0x96000) == 0
    assert record(board) == (13, 0, 0x1000)
    fault = board.trace.of("cpu.fault")[0]
    assert fault["vector"] == 13 and "limit" in fault["why"]


def test_a_cs_loaded_from_another_gdt_keeps_its_own_limit(board):
    """CS holds the descriptor it was loaded with, whatever GDTR names since: a CPU that
    still runs on the firmware's flat CS under a GDT whose entry 0x08 is a short DPL 1
    code segment (a CPU between two GDTs, before its far jump) runs past that entry's
    limit. The platform, which cannot read the hidden part, sees that CS cannot hold that
    entry at CPL 0 and judges no limit from that table."""
    cpl0_board(board)
    board.memory.write(GDT + 0x08, encode_segment(0, 0xFFF, CODE_RX, 1, g=0)
                       + encode_segment(0, 0xFFF, DATA_RW, 1, g=0))
    board.cpu.descriptors_changed()
    board.load(0x1000, "mov dword ptr [0x96000], 4\nmov eax, 0x2000\njmp eax")
    board.load(0x2000, "mov dword ptr [0x96004], 5\nhlt")
    board.run(200)
    assert record(board) == (0, 0, 0)
    assert (u32(board, 0x96000), u32(board, 0x96004)) == (4, 5)


def test_a_lidt_whose_operand_runs_past_the_limit_is_gp0_and_loads_nothing(board):
    """lidt reads 6 bytes through DS: its limit word inside the segment, its base dword past
    it: the CPU's #GP(0) at the lidt, and IDTR as it was."""
    cpl0_board(board)
    idtr = board.cpu["idtr"]
    board.memory.write(SHORT - 1, b"\xff\x07\x00\x00\x01\x00")   # limit 0x7ff, base 0x10000
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        lidt [{SHORT - 1:#x}]
        hlt""")
    board.run(200)
    assert record(board) == (13, 0, 0x1000 + 4 + 2)
    assert "past the limit 0x7ffff of DS" in board.trace.of("cpu.fault")[0]["why"]
    assert board.cpu["idtr"][1:3] == idtr[1:3]
