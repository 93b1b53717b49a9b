"""The limit filter keeps the configurations it has been in (limits_prepared.c: `vmkit_limits_refresh`):
a refresh that comes back to one installs it again without decoding, if the GDT's bytes, GDTR,
the CPL and paging the software runs at (and the GDT a load is about to lgdt) are the ones it
was prepared from. Each test checks what the machine then does: an access past the limit the
GDT in memory says is refused, one inside it lands, whatever configuration came before."""
import ctypes
import struct

import pytest

from vmkit.hw import limits_prepared, unicorn_quirks
from vmkit.hw.x86 import encode_gate, encode_segment, DATA_RW
from conftest import u32, GDT, TSS, IDT_A
from test_limits import user_board, run_user, RECORD, LIMIT
import test_limits_paging as paged

pytestmark = pytest.mark.needs_c("the limit filter's prepared configurations")

USER_DATA = 0x20                    # the ring-3 data segment's entry in user_board's GDT
OTHER_GDT = 0x3800                  # a copy of that GDT, its ring-3 data segment shorter
ACCESSED = 1                        # a descriptor type's accessed bit (the CPU sets it on a load)


def faulted(board):
    vector = u32(board, RECORD)
    board.memory.write(RECORD, bytes(16))
    return vector


def user(board, code):
    """run_user's, ending in an `int 0x30` whose handler halts: back at CPL 0."""
    board.memory.write(IDT_A + 8 * 0x30, encode_gate(0x6200, 0x08, dpl=3))
    board.load(0x6200, "h: hlt\njmp h")
    run_user(board, code + "\nint 0x30")
    assert board.cpu.cpl == 0 and board.cpu.halted


def restart(board, gdt=GDT):
    """The CPU back at 0x1000 on `gdt`, as user_board set it up, without telling the
    platform: the test says when the descriptors changed."""
    cpu = board.cpu
    idtr = cpu["idtr"]
    board.boot(0x1000)
    cpu["gdtr"], cpu["idtr"], cpu["tr"] = (0, gdt, 0x2F, 0), idtr, (0x28, TSS, 103, 0x8B)


def test_a_gdt_edited_in_place_under_the_same_gdtr_is_read_again(board):
    """The filter held this GDT's CPL 0 configuration when the GDT's ring-3 data segment was
    shortened in place (same GDTR, same CPL, same paging): coming back to it, the bytes
    differ, so the new limit is the one checked, not the one held; edited back, the one held
    before serves again."""
    user_board(board)
    cpu, lim = board.cpu, board.cpu.limits
    user(board, "nop")                              # the CPU sets its segments' accessed bits:
    restart(board)                                  # from now on the GDT's bytes stay
    cpu.descriptors_changed()
    cpu.descriptors_changed(3)                      # another configuration: CPL 3's
    reused = lim.state.reused
    cpu.descriptors_changed()                       # the CPL 0 one again: held, installed again
    assert lim.state.reused == reused + 1
    user(board, "mov dword ptr [0x85000], 7")
    assert u32(board, 0x85000) == 7 and faulted(board) == 0     # inside the limit 0x8FFFF
    restart(board)
    cpu.descriptors_changed(3)
    assert lim.state.reused == reused + 2
    board.memory.write(GDT + USER_DATA, encode_segment(0, 0x7FFFF, DATA_RW | ACCESSED, 3))
    cpu.descriptors_changed()                       # same GDTR, CPL, paging: other bytes
    assert lim.state.reused == reused + 2 and lim.ranges[0][0] == 0x80000 - limits_prepared.STRADDLE
    user(board, "mov dword ptr [0x85000], 9")
    assert u32(board, 0x85000) == 7 and faulted(board) == 13    # past the new limit: #GP
    restart(board)
    board.memory.write(GDT + USER_DATA, encode_segment(0, LIMIT, DATA_RW | ACCESSED, 3))
    cpu.descriptors_changed()                       # the configuration installed, but other bytes:
    assert lim.state.reused == reused + 3           # the first one's, held
    user(board, "mov dword ptr [0x85000], 11")
    assert u32(board, 0x85000) == 11 and faulted(board) == 0


def test_two_gdts_taken_in_turn_each_checked_by_its_own_limits(board):
    """Two GDTs (the same but for the ring-3 data segment's limit) loaded in turn, as a
    switch between two worlds goes: once the CPU has set their accessed bits (the first round)
    each is installed from what the filter holds (rounds three and four), and each time a
    store between the two limits lands or faults by the GDT loaded."""
    user_board(board)
    cpu = board.cpu
    gdt = board.memory.read(GDT, 0x30)
    board.memory.write(OTHER_GDT, gdt[:USER_DATA] + encode_segment(0, 0x7FFFF, DATA_RW, 3) + gdt[0x28:])
    for turn in range(4):
        for base, lands in ((GDT, True), (OTHER_GDT, False)):
            restart(board, base)
            cpu.descriptors_changed()
            board.memory.write(0x85000, bytes(4))
            user(board, f"mov dword ptr [0x85000], {turn + 1}")
            assert (u32(board, 0x85000), faulted(board)) == ((turn + 1, 0) if lands else (0, 13))
    assert cpu.limits.state.reused == 4


def test_more_configurations_than_are_held_each_still_its_own(board):
    """More GDTs in turn than the filter holds (the least recently used is replaced): each
    refresh still checks the limits of the GDT loaded, round after round."""
    user_board(board)
    cpu = board.cpu
    gdt = board.memory.read(GDT, 0x30)
    count = limits_prepared.PREPARED + 4
    tables = [0x40000 + 0x100 * i for i in range(count)]
    for i, at in enumerate(tables):                 # limits 0x200FFF, 0x201FFF, ...
        board.memory.write(at, gdt[:USER_DATA] + encode_segment(0, 0x200FFF + 0x1000 * i, DATA_RW, 3)
                           + gdt[0x28:])
    for _ in range(2):
        for i, at in enumerate(tables):
            restart(board, at)
            cpu.descriptors_changed()
            end = 0x200FFF + 0x1000 * i
            user(board, f"mov dword ptr [{end - 3:#x}], 5\nmov dword ptr [{end + 1:#x}], 6")
            assert u32(board, end - 3) == 5 and u32(board, end + 1) == 0 and faulted(board) == 13


def test_hooks_deleted_with_paging_on_leave_no_exception_behind(board):
    """The switch into a paged world deletes the limit hooks while CR0.PG is set, and does not
    clear Unicorn's exception record after: a memory hook instruments no translated code, so
    deleting it translates nothing through the page tables (Unicorn 2.1.4's uc_hook_del
    invalidates only a code or block hook's regions). The record is as it was (clear, here),
    and the guest's next fault arrives as itself, not as a double fault."""
    paged.machine(board)
    cpu = board.cpu
    cpu.descriptors_changed(0, paging=False)        # as a switch's load: hooked, paging still on
    assert cpu.limits.ranges
    paged.run_guest(board, "mov dword ptr [0x2000], 7")      # accesses in the hooked range
    assert board.memory.read(paged.GUEST_AT + 0x2000, 4) == struct.pack("<I", 7)
    unicorn_quirks.clear_exception_record(cpu.uc)
    cpu.descriptors_changed(3, paging=True)         # deleted, paging on
    assert cpu.limits.ranges == () and cpu.limits._hooks == []
    _, at = unicorn_quirks._saved(cpu.uc)
    assert ctypes.c_uint32.from_address(at + unicorn_quirks.offsets().old_exception).value == 0xFFFFFFFF
    at = cpu["eip"]                                 # the guest's loop: a load past its limit there
    board.memory.write(paged.GUEST_AT + at, paged.board_code(f"mov ebx, [{paged.GUEST:#x}]\nj: jmp j", at))
    board.run(300)
    assert paged.record(board)[:3] == (13, 0, at)
