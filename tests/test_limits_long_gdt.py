"""A GDT longer than the entries the limit filter holds (SELECTORS): a segment loaded from
an entry past them still has its limit checked (every access is filtered then, and one
through such a selector is judged by Python from the descriptor the CPU loaded)."""
import pytest

from vmkit.hw.board import Board
from vmkit.hw.limits_prepared import SELECTORS
from vmkit.hw.x86 import encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE
from conftest import write_idt, u32, IDT_A, GDT, TSS, RING0_STACK

RECORD = 0x5000
FLAT = 0xFFFFFFFF


@pytest.mark.parametrize("index", [10, SELECTORS - 1, SELECTORS, SELECTORS + 6])
def test_a_store_past_the_limit_of_a_segment_from_any_gdt_entry_is_gp(index):
    board = Board()
    entries = [bytes(8), encode_segment(0, FLAT, CODE_RX, 0), encode_segment(0, FLAT, DATA_RW, 0),
               encode_segment(0, FLAT, CODE_RX, 3), encode_segment(0, FLAT, DATA_RW, 3),
               encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0)]
    entries += [encode_segment(0, FLAT, DATA_RW, 3)] * (index - len(entries))
    entries.append(encode_segment(0, 0x1FFF, DATA_RW, 3))      # DS: 8 KiB
    gdt = b"".join(entries)
    board.boot(0x1000)
    board.memory.write(GDT, gdt)
    board.memory.write(TSS, encode_tss(RING0_STACK, 0x10))
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["tr"] = (0x28, TSS, 103, 0x8B)
    cpu.descriptors_changed()
    cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, f"mov dword ptr ss:[{RECORD:#x}], 13\nh: hlt\njmp h")   # (DS is the guest's)
    board.load(0x7000, f"mov ax, {index * 8 | 3:#x}\nmov ds, ax\nmov eax, 0x7100\njmp eax")
    board.load(0x7100, "mov dword ptr [0x1FFC], 7\nmov dword ptr [0x3000], 0xdeadbeef\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x2\npush 0x1b\npush 0x7000\niretd")
    board.run(400)
    assert u32(board, 0x1FFC) == 7                      # inside the limit: stored
    assert u32(board, 0x3000) == 0 and u32(board, RECORD) == 13
