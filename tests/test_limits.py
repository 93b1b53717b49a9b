"""Segment limits are the platform's (Unicorn checks none): an access past the
limit of the segment it goes through is #GP(0), or #SS(0) through SS, delivered
through whatever IDT is loaded, and the access does not happen."""
import pytest

from vmkit.hw.x86 import encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE
from conftest import write_idt, u32, IDT_A, GDT, TSS, RING0_STACK

LIMIT = 0x8FFFF                 # the CPL 3 segments end here
RECORD = 0x5000                 # the #GP/#SS handler writes vector, error, EIP here


def user_board(board, user_limit=LIMIT):
    """A GDT with flat ring-0 segments and ring-3 code/data ending at `user_limit`;
    handlers for #GP and #SS that record the frame and skip nothing (they halt)."""
    flat = 0xFFFFFFFF
    gdt = (bytes(8) + encode_segment(0, flat, CODE_RX, 0) + encode_segment(0, flat, DATA_RW, 0)
           + encode_segment(0, user_limit, CODE_RX, 3) + encode_segment(0, user_limit, DATA_RW, 3)
           + encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.boot(0x1000)
    board.memory.write(GDT, gdt)
    board.memory.write(TSS, encode_tss(RING0_STACK, 0x10))
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["tr"] = (0x28, TSS, 103, 0x8B)
    cpu.descriptors_changed()
    cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000, 12: 0x6100})
    for at, vector in ((0x6000, 13), (0x6100, 12)):
        board.load(at, f"""
            mov dword ptr [{RECORD:#x}], {vector}
            pop eax
            mov [{RECORD + 4:#x}], eax      ; error code
            pop eax
            mov [{RECORD + 8:#x}], eax      ; EIP of the faulting instruction
            mov [{RECORD + 12:#x}], esp
            h: hlt
            jmp h""")
    board.memory.write(RECORD, bytes(16))


def run_user(board, code):
    """`code` at 0x7100, at CPL 3 with DS = ES = the ring-3 data segment."""
    board.load(0x7000, "mov ax, 0x23\nmov ds, ax\nmov es, ax\nmov eax, 0x7100\njmp eax")
    board.load(0x7100, code + "\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x2\npush 0x1b\npush 0x7000\niretd")
    board.run(400)


def test_a_store_past_the_data_segment_limit_is_gp0_and_does_not_land(board):
    user_board(board)
    board.memory.write(0x95000, b"\x11\x22\x33\x44")
    run_user(board, "mov dword ptr [0x8FFFC], 7\nmov dword ptr [0x95000], 0xdeadbeef")
    assert u32(board, 0x8FFFC) == 7                      # inside the limit: stored
    assert board.memory.read(0x95000, 4) == b"\x11\x22\x33\x44"   # past it: put back
    vector, error, eip = u32(board, RECORD), u32(board, RECORD + 4), u32(board, RECORD + 8)
    assert (vector, error) == (13, 0)
    assert eip == 0x7100 + 10                           # the second mov: the fault is its own
    fault = board.trace.of("cpu.fault")[0]
    assert fault["vector"] == 13 and "limit" in fault["why"]


def test_a_store_that_straddles_the_limit_faults(board):
    user_board(board)
    run_user(board, "mov dword ptr [0x8FFFE], 7")
    assert (u32(board, RECORD), u32(board, RECORD + 8)) == (13, 0x7100)
    assert u32(board, 0x8FFFC) == 0                      # not even the two bytes inside


def test_a_load_past_the_limit_faults_and_leaves_the_register(board):
    user_board(board)
    board.memory.write(0x95000, b"\x11\x22\x33\x44")
    run_user(board, "mov eax, 0x55\nmov ebx, [0x95000]\nmov [0x8F000], ebx")
    assert (u32(board, RECORD), u32(board, RECORD + 4)) == (13, 0)
    assert u32(board, 0x8F000) == 0


def test_a_push_past_the_stack_segment_limit_is_ss0(board):
    user_board(board)
    board.memory.write(0x90000, bytes(4))
    run_user(board, "mov esp, 0x90004\npush 0x1234")
    assert (u32(board, RECORD), u32(board, RECORD + 4), u32(board, RECORD + 8)) == (12, 0, 0x7105)
    assert u32(board, 0x90000) == 0


def test_a_segment_override_is_the_segment_checked(board):
    user_board(board)
    run_user(board, "mov ss:[0x95000], eax")             # through SS: #SS, not #GP
    assert u32(board, RECORD) == 12


def test_cpl0_and_flat_segments_are_not_limited(board):
    """The same address at CPL 0 (flat) is reached; so with a 4 GiB limit, no hook at all."""
    user_board(board)
    board.load(0x1000, "mov dword ptr [0x95000], 9\nhlt")
    board.run(50)
    assert u32(board, 0x95000) == 9
    assert board.cpu.limits.ranges == ((LIMIT + 1 - 15, 0xFFFFFFFF),)
    user_board(board, user_limit=0xFFFFFFFF)
    assert board.cpu.limits.ranges == ()
    run_user(board, "mov dword ptr [0x95000], 7")
    assert u32(board, 0x95000) == 7 and u32(board, RECORD) == 0


def test_an_expand_down_segment_faults_below_its_limit_not_above(board):
    """Expand-down: the valid offsets are those *above* the limit (a stack that grows down)."""
    from vmkit.hw.x86 import encode_segment
    user_board(board)
    board.memory.write(GDT + 0x30, encode_segment(0, 0x7FFFF, 0x6, 3))    # data, RW, expand-down
    board.cpu["gdtr"] = (0, GDT, 0x37, 0)
    board.cpu.descriptors_changed()
    run_user(board, "mov ax, 0x33\nmov es, ax\nmov dword ptr es:[0x80000], 5\nmov dword ptr es:[0x7FFFC], 6")
    assert u32(board, 0x80000) == 5 and u32(board, 0x7FFFC) == 0
    assert (u32(board, RECORD), u32(board, RECORD + 4)) == (13, 0)


def test_a_segment_load_reading_a_gdt_past_the_limit_is_no_violation(board):
    """`mov ds, ax` makes the CPU read the GDT wherever it lies: that read goes through no
    segment, so no limit bounds it (the kernel's GDT lies past the displaced COS's limit)."""
    user_board(board)
    gdt = board.memory.read(GDT, 0x30)
    board.memory.write(0x95000, gdt)
    board.cpu["gdtr"] = (0, 0x95000, len(gdt) - 1, 0)
    board.cpu.descriptors_changed()
    run_user(board, "mov ax, 0x23\nmov es, ax\nmov dword ptr [0x8F000], 3")
    assert u32(board, RECORD) == 0 and u32(board, 0x8F000) == 3


def test_an_instruction_fetched_past_the_code_segments_limit_is_gp0(board):
    """A real CPU checks EIP against CS's limit before it fetches: a jump past it (here a
    near jump, whose target no hook sees) is a #GP(0) at the instruction past the limit,
    which does not run."""
    user_board(board)
    board.load(LIMIT + 1, "mov dword ptr [0x8F000], 1\nhlt")
    run_user(board, f"mov eax, {LIMIT + 1:#x}\njmp eax")
    assert u32(board, 0x8F000) == 0
    assert (u32(board, RECORD), u32(board, RECORD + 4), u32(board, RECORD + 8)) == (13, 0, LIMIT + 1)
    fault = board.trace.of("cpu.fault")[0]
    assert fault["vector"] == 13 and "CS" in fault["why"]


def test_an_instruction_straddling_the_code_limit_is_gp0(board):
    user_board(board)
    board.load(LIMIT - 3, "mov dword ptr [0x8F000], 2\nhlt")   # 10 bytes: 6 of them past the limit
    run_user(board, f"mov eax, {LIMIT - 3:#x}\njmp eax")
    assert (u32(board, RECORD), u32(board, RECORD + 8)) == (13, LIMIT - 3)
    assert u32(board, 0x8F000) == 0


@pytest.mark.needs_c("the C filter's own shortcut for the CPU's descriptor reads")
def test_a_world_switchs_ltr_reads_its_descriptor_without_the_decoder():
    """ltr/lldt m16 read their descriptor in the GDT (the CPU's own 4-byte reads; the operand
    is 2 bytes): the C filter lets them through, so a switch into a VM, whose GDT lies past
    the kernel's DS limit, costs no Python decode; and no world was refused."""
    from vmkit.lessons import worlds as lesson
    board, cos, kernel, vms = lesson.two_vms(quantum=1)
    board.run(300_000)
    assert len(board.trace.of("switch.begin")) > 50
    assert board.cpu.limits.decoded == 0
    assert not [f for f in board.trace.of("cpu.fault") if "past the limit" in str(f["why"])]
    assert all(w.state != "crashed" for w in kernel.worlds.all)
