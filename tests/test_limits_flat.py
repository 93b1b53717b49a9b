"""A flat stretch (limits_flat.py): at CPL 0 with CS, SS, DS and ES flat the platform takes its
limit hooks off, and the C counter stops the run before any instruction that could make an
access past a limit possible again. Each test here runs a store loop long enough to be a
stretch (its stores, past the short segment's limit, would each reach the hooks), then does
one thing a stretch may not do, then an access past a limit that the platform must still
catch: the hooks are back, whatever ended the stretch."""
import pytest

from vmkit.hw import limits_flat
from vmkit.hw.x86 import encode_gate
from conftest import u32, IDT_A
from test_limits_cpl0 import cpl0_board, record, SHORT, SHORT_DATA, SHORT_CODE

pytestmark = pytest.mark.needs_c("the limit filter's flat stretch")

LOOP = 2000                         # stores past SHORT: well over limits_flat.STRETCH_AFTER
WORK = 0x95000                      # the loop's counter: past SHORT, in the hooked range
FLAT_LOOP = f"""
        mov ecx, {LOOP}
more:   inc dword ptr [{WORK:#x}]
        push ecx
        pop ecx
        loop more"""


def test_a_long_flat_loop_runs_with_the_hooks_off(board):
    cpl0_board(board)
    board.load(0x1000, FLAT_LOOP + "\nhlt")
    board.run(20_000)
    assert u32(board, WORK) == LOOP and board.cpu["ecx"] == 0 and board.cpu.halted
    lim = board.cpu.limits
    assert lim.stretches == 1 and not lim.suspended and lim.ranges and lim._hooks
    assert lim.state.calls <= limits_flat.STRETCH_AFTER + 2      # of 3 * LOOP accesses past SHORT


def test_a_flat_stretch_retires_the_same_instructions_in_the_same_virtual_time(board):
    """The counter's stops that begin and end a stretch are no instructions: the same
    program with stretches turned off halts at the same virtual time, same state."""
    seen = []
    for after in (limits_flat.STRETCH_AFTER, 0):
        from vmkit.hw.board import Board
        b = Board()
        try:
            cpl0_board(b)
            b.cpu.counter.state.stretch_after = after
            b.load(0x1000, FLAT_LOOP + f"""
                mov ax, {SHORT_DATA:#x}
                mov ds, ax
                mov dword ptr [{SHORT + 1:#x}], 6
                hlt""")
            b.run(20_000)
            seen.append((b.now(), b.cpu.read("eip", "ecx", "esp"), record(b), u32(b, WORK),
                         [str(e) for e in b.trace.of("cpu.fault", "cpu.deliver", "cpu.halt")],
                         b.cpu.limits.stretches))
        finally:
            b.close()
    assert seen[0][:-1] == seen[1][:-1]
    assert (seen[0][-1], seen[1][-1]) == (1, 0)


# Each ends the stretch, then makes a data access past SHORT through a short segment.
PAST_AFTER = {
    "mov ds": f"""
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        mov dword ptr [{SHORT + 1:#x}], 6""",
    "pop ds": f"""
        push {SHORT_DATA:#x}
        pop ds
        mov dword ptr [{SHORT + 1:#x}], 6""",
    "lds": f"""
        mov dword ptr [0x96000], 0
        mov word ptr [0x96004], {SHORT_DATA:#x}
        lds eax, [0x96000]
        mov dword ptr [{SHORT + 1:#x}], 6""",
    "les, stosd": f"""
        mov dword ptr [0x96000], 0
        mov word ptr [0x96004], {SHORT_DATA:#x}
        les eax, [0x96000]
        mov edi, {SHORT + 1:#x}
        mov eax, 6
        stosd""",
    "fs: with FS short": f"""
        mov dword ptr fs:[{SHORT + 1:#x}], 6""",
    "gs: with GS short": f"""
        mov dword ptr gs:[{SHORT + 1:#x}], 6""",
}


@pytest.mark.parametrize("what", PAST_AFTER)
def test_an_access_past_a_limit_right_after_a_flat_stretch_is_gp_and_does_not_land(board, what):
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov fs, ax                      ; FS, GS short, as the kernel has them from the COS
        mov gs, ax
        {FLAT_LOOP}
        {PAST_AFTER[what]}
        hlt""")
    board.run(20_000)
    assert u32(board, WORK) == LOOP and board.cpu.limits.stretches == 1
    assert u32(board, SHORT + 1) == 0                       # the store did not land
    assert record(board)[0] == 13
    assert "past the limit" in board.trace.of("cpu.fault")[-1]["why"]


def test_a_push_past_a_short_ss_loaded_right_after_a_flat_stretch_is_ss_fault(board):
    cpl0_board(board)
    board.load(0x1000, f"""
        {FLAT_LOOP}
        mov ax, {SHORT_DATA:#x}
        mov ss, ax
        push 7                          ; ESP 0x9F000: past SHORT
        hlt""")
    board.run(20_000)
    assert board.cpu.limits.stretches == 1
    first = board.trace.of("cpu.fault")[0]
    assert first["vector"] == 12 and first["why"].endswith("of SS")
    # the #SS's own frame does not fit below that ESP either (delivery checks SS's limit, as a
    # CPU does): #DF, whose frame does not fit either: the CPU shuts down, nothing recorded
    assert board.cpu.shutdown and record(board)[0] == 0


def test_code_run_in_a_flat_stretch_is_checked_when_run_again_through_a_short_ds(board):
    """Unicorn's code translated while the hooks were off still reaches them once they are
    back: the same loop, entered again with DS short, is stopped at its first store."""
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ebx, {WORK:#x}
        mov ecx, {LOOP}
        call store
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        mov ebx, {SHORT + 1:#x}
        mov ecx, 1
        call store
        hlt
store:  inc dword ptr [ebx]
        loop store
        ret""")
    board.run(20_000)
    assert u32(board, WORK) == LOOP and board.cpu.limits.stretches == 1
    assert u32(board, SHORT + 1) == 0 and record(board)[0] == 13


@pytest.mark.parametrize("how", ["int 0x21", "div ebx"])
def test_a_delivery_right_after_a_flat_stretch_has_the_hooks_back(board, how):
    """An `int` or a faulting instruction ends the stretch before it: its handler runs in
    the short code segment, and its read through CS past CS's limit is a #GP."""
    cpl0_board(board)
    board.memory.write(IDT_A + 0x21 * 8, encode_gate(0x7000, SHORT_CODE, 0xE, 0))
    board.memory.write(IDT_A + 0 * 8, encode_gate(0x7000, SHORT_CODE, 0xE, 0))
    board.load(0x7000, f"""
        mov eax, cs:[{SHORT + 1:#x}]
        hlt""")
    board.load(0x1000, f"""
        {FLAT_LOOP}
        xor ebx, ebx
        xor edx, edx
        {how}
        hlt""")
    board.run(20_000)
    assert u32(board, WORK) == LOOP and board.cpu.limits.stretches == 1
    assert record(board)[0] == 13 and record(board)[2] == 0x7000
    assert "past the limit" in board.trace.of("cpu.fault")[-1]["why"]


def test_a_far_jump_into_a_short_code_segment_ends_the_stretch(board):
    """After `jmp far` to the short CS an instruction that crosses its limit is a #GP(0)."""
    cpl0_board(board)
    board.load(SHORT - 1, "nop\nmov eax, 1\nhlt")            # the mov's bytes end past SHORT
    board.load(0x1000, f"""
        {FLAT_LOOP}
        jmp {SHORT_CODE:#x}:{SHORT - 1:#x}""")
    board.run(20_000)
    assert board.cpu.limits.stretches == 1
    assert record(board)[0] == 13 and record(board)[2] == SHORT
    assert board.cpu["eax"] != 1


def test_no_stretch_while_ds_is_short(board):
    """DS short: its accesses inside the limit still pass the hooks, the filter lets them
    through (no Python), and no stretch begins."""
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        mov ecx, {LOOP}
more:   inc dword ptr [{SHORT - 3:#x}]
        loop more
        hlt""")
    board.run(20_000)
    assert u32(board, SHORT - 3) == LOOP
    assert board.cpu.limits.stretches == 0 and board.cpu.limits.decoded == 0


def test_a_hooks_exception_inside_a_flat_stretch_still_brings_the_hooks_back(board):
    """The local APIC's store handler fails in the middle of a stretch: the run raises, the
    hooks are back; DS, made short between runs, is checked at the very next store (the
    APIC store, run again: past DS's limit now)."""
    cpl0_board(board)
    lapic = board.cpu.lapic

    def broken(reg, value):
        raise RuntimeError("a broken device")
    lapic.write = broken
    board.load(0x1000, f"""
        {FLAT_LOOP}
        mov dword ptr [0xFEE000B0], 0
        mov dword ptr [{SHORT + 1:#x}], 6
        hlt""")
    with pytest.raises(RuntimeError, match="broken device"):
        board.run(20_000)
    assert board.cpu.limits.stretches == 1 and not board.cpu.limits.suspended
    del lapic.write
    board.cpu.shutdown = None
    board.cpu["ds"] = SHORT_DATA
    board.run(100)
    assert u32(board, SHORT + 1) == 0 and record(board)[0] == 13


def test_a_store_past_a_limit_into_the_local_apic_is_gp(board):
    """A device register has no old bytes to put back: the check still delivers its #GP
    (it once failed, reading them, and stopped the CPU)."""
    cpl0_board(board)
    board.load(0x1000, f"""
        mov ax, {SHORT_DATA:#x}
        mov ds, ax
        mov dword ptr [0xFEE000B0], 0
        hlt""")
    board.run(100)
    assert board.cpu.shutdown is None and record(board) == (13, 0, 0x1000 + 4 + 2)
