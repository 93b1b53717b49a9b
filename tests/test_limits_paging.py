"""Segment limits under paging, at every CPL, and at a gate: the order and the checks of a
real CPU, which the platform makes (Unicorn makes none; hw/limits.py, hw/delivery.py).

The machine each test builds: a guest's memory at linear 0 .. GUEST (paging maps it from
physical GUEST_AT, user pages), nothing present past it; the test's "kernel" (its GDT, IDT,
TSS, handlers, stack, page tables) identity-mapped at KERNEL, supervisor pages. The guest runs
at CPL 3 on segments of base 0 whose limit is its memory's size - 1, as a monitor of the era
would truncate them (or, to compare, a flat 4 GiB limit)."""
import struct

from vmkit.hw.x86 import encode_gate, encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE

GUEST, GUEST_AT = 0x10000, 0x200000         # its size; where its pages lie in physical memory
KERNEL = 0x100000                            # identity-mapped: delivery reads tables physically
GDT, IDT, TSS, RECORD = KERNEL + 0x3000, KERNEL + 0x2000, KERNEL + 0x3100, KERNEL + 0x5000
HANDLERS, STACK0, PT, PD = KERNEL + 0x6000, KERNEL + 0xF000, KERNEL + 0x20000, KERNEL + 0x21000
START = KERNEL + 0x1000
KCODE, KDATA, UCODE, UDATA, TSS_SEL, SHORT_DATA, SHORT_CODE = 0x08, 0x10, 0x1B, 0x23, 0x28, 0x30, 0x38
SHORT = KERNEL + 0x7FFF                      # the limit of the CPL 0 segments that are not flat
P, RW, US = 1, 2, 4
VECTORS = (12, 13, 14)                       # #SS, #GP, #PF: each handler records its frame


def machine(board, user_limit=GUEST - 1):
    """The paged machine of the module's docstring; the handlers record (vector, error code,
    EIP, CR2) at RECORD, then halt. They load the kernel's data segment first: at CPL 0 the
    guest's DS (which the delivery leaves loaded) ends at the guest's memory."""
    flat = 0xFFFFFFFF
    gdt = (bytes(8) + encode_segment(0, flat, CODE_RX, 0) + encode_segment(0, flat, DATA_RW, 0)
           + encode_segment(0, user_limit, CODE_RX, 3) + encode_segment(0, user_limit, DATA_RW, 3)
           + encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0)
           + encode_segment(0, SHORT, DATA_RW, 0, g=0) + encode_segment(0, SHORT, CODE_RX, 0, g=0))
    m = board.memory
    m.write(GDT, gdt)
    m.write(TSS, encode_tss(STACK0, KDATA))
    table = bytearray(4096)
    for page in range(GUEST // 4096):                 # the guest's memory, from linear 0
        struct.pack_into("<I", table, 4 * page, (GUEST_AT + page * 4096) | P | RW | US)
    for page in range(KERNEL >> 12, (KERNEL >> 12) + 0x22):   # the kernel: itself, supervisor
        struct.pack_into("<I", table, 4 * page, (page << 12) | P | RW)
    m.write(PT, bytes(table))
    m.write(PD, struct.pack("<I", PT | P | RW | US) + bytes(4092))
    for i, vector in enumerate(VECTORS):
        at = HANDLERS + 0x100 * i
        m.write(IDT + 8 * vector, encode_gate(at, KCODE))
        board.load(at, f"""
            mov ax, {KDATA:#x}
            mov ds, ax
            mov dword ptr [{RECORD:#x}], {vector}
            pop eax
            mov [{RECORD + 4:#x}], eax      ; error code
            pop eax
            mov [{RECORD + 8:#x}], eax      ; EIP of the faulting instruction
            mov eax, cr2
            mov [{RECORD + 12:#x}], eax
            h: hlt
            jmp h""")
    m.write(RECORD, bytes(16))
    board.boot(START, stack=STACK0)
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["idtr"] = (0, IDT, 256 * 8 - 1, 0)
    cpu["tr"] = (TSS_SEL, TSS, 103, 0x8B)
    cpu["cr3"] = PD
    cpu["cr0"] = cpu["cr0"] | 0x80000001
    cpu.descriptors_changed()


def record(board):
    return struct.unpack("<4I", board.memory.read(RECORD, 16))


def run_guest(board, code, entry=0x1000):
    """`code` at the guest's `entry` (linear), run at CPL 3 with DS = ES = SS = its data."""
    board.memory.write(GUEST_AT + entry, board_code(code + "\nj: jmp j", entry))
    board.load(START, f"""
        push {UDATA:#x}
        push {GUEST - 0x100:#x}
        push 0x2
        push {UCODE:#x}
        push {entry:#x}
        iretd""")
    board.cpu["ds"] = board.cpu["es"] = UDATA     # (CPL 0 may load them; iretd keeps them)
    board.run(300)


def board_code(text, at):
    from vmkit.hw.asm import assemble
    return assemble(text, at)


def test_past_the_limit_on_a_not_present_page_is_gp_not_pf(board):
    """The limit is checked before paging: the first byte past the guest's memory is a #GP(0),
    though its page is not present, with the trace of a limit violation."""
    machine(board)
    run_guest(board, f"mov eax, 0x55\nmov ebx, [{GUEST:#x}]")
    vector, error, eip, _ = record(board)
    assert (vector, error, eip) == (13, 0, 0x1005)
    fault = board.trace.of("cpu.fault")[0]
    assert fault["vector"] == 13 and fault["error"] == 0 and "past the limit" in fault["why"]
    assert board.cpu["ebx"] == 0                           # the load did not happen


def test_with_a_flat_limit_the_same_load_is_a_page_fault(board):
    machine(board, user_limit=0xFFFFFFFF)
    run_guest(board, f"mov ebx, [{GUEST:#x}]")
    vector, error, eip, cr2 = record(board)
    assert (vector, error, eip, cr2) == (14, US, 0x1000, GUEST)   # user, read, not present


def test_a_store_past_the_limit_on_a_not_present_page(board):
    machine(board)
    run_guest(board, f"mov dword ptr [{GUEST + 0x10:#x}], 7")
    assert record(board)[:2] == (13, 0)


def test_a_push_past_the_stack_limit_on_a_not_present_page_is_ss0(board):
    machine(board)
    run_guest(board, f"mov esp, {GUEST + 4:#x}\npush 0x1234")
    assert record(board)[:3] == (12, 0, 0x1005)


def test_a_store_straddling_the_limit_into_a_not_present_page_is_gp_and_lands_nowhere(board):
    machine(board)
    run_guest(board, f"mov dword ptr [{GUEST - 2:#x}], 0x11223344")
    assert record(board)[:3] == (13, 0, 0x1000)
    assert board.memory.read(GUEST_AT + GUEST - 2, 2) == bytes(2)


def test_a_page_fault_inside_the_limit_stays_a_page_fault(board):
    """A user access to a supervisor page inside a flat limit: #PF, protection (error 5)."""
    machine(board, user_limit=0xFFFFFFFF)
    run_guest(board, f"mov eax, [{KERNEL:#x}]")
    assert record(board) == (14, P | US, 0x1000, KERNEL)


def test_a_jump_past_the_code_limit_onto_a_not_present_page_is_gp(board):
    """The fetch is checked against CS's limit before paging too."""
    machine(board)
    run_guest(board, f"mov eax, {GUEST:#x}\njmp eax")
    assert record(board)[:3] == (13, 0, GUEST)


def test_an_instruction_straddling_the_code_limit_onto_a_not_present_page_is_gp(board):
    """Its first bytes inside CS's limit, the rest past it on a page not present: the fetch
    crosses the limit before paging is asked, so #GP(0) at the instruction, not the #PF
    of its second half (CR2 as it was: the platform's first check)."""
    machine(board)
    board.memory.write(GUEST_AT + GUEST - 1, b"\xB8")          # mov eax, imm32: 4 bytes past it
    run_guest(board, f"mov eax, {GUEST - 1:#x}\njmp eax")
    assert record(board)[:3] == (13, 0, GUEST - 1)


def test_a_data_access_past_the_limit_from_an_instruction_at_its_end_is_still_the_datas_gp(board):
    """An instruction whose last byte is the limit's (it fetched whole) and whose operand is
    past the limit: the #GP of its data access, at the instruction (not taken for a fetch)."""
    machine(board)
    code = board_code(f"mov eax, [{GUEST:#x}]", GUEST - 5)     # 5 bytes: ends at the limit
    board.memory.write(GUEST_AT + GUEST - 5, code)
    run_guest(board, f"mov eax, {GUEST - 5:#x}\njmp eax")
    assert record(board)[:3] == (13, 0, GUEST - 5)
