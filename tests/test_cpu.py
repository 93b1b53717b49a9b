"""Interrupt and exception delivery is the platform's: these pin it down."""
import pytest

from vmkit.hw.board import Board
from conftest import write_idt, install_tss, u32, IDT_A, IDT_B, RING0_STACK

COUNT = 0x5000          # handlers count into 0x5000 (A) and 0x5004 (B)


def test_same_int_reaches_handler_a_then_b_after_idtr_changes(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    board.load(0x6000, "inc dword ptr [0x5000]\niretd")
    board.load(0x6100, "inc dword ptr [0x5004]\niretd")
    idtr_a = write_idt(board, IDT_A, {0x30: 0x6000})
    idtr_b = write_idt(board, IDT_B, {0x30: 0x6100})
    board.load(0x1000, f"""
        lidt [desc_a]
        int 0x30
        lidt [desc_b]
        int 0x30
        hlt
    desc_a: .word {idtr_a[2]}
            .long {IDT_A}
    desc_b: .word {idtr_b[2]}
            .long {IDT_B}
    """)
    board.run(200)
    assert (u32(board, 0x5000), u32(board, 0x5004)) == (1, 1)
    delivered = board.trace.of("cpu.deliver")
    assert [(e["idt"], e["handler"]) for e in delivered] == [(IDT_A, 0x6000), (IDT_B, 0x6100)]
    assert board.cpu.halted


def test_cpl3_to_cpl0_through_gate_and_tss_stack_and_back(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    install_tss(board)
    board.cpu["idtr"] = write_idt(board, IDT_A, {0x80: (0x6000, 3, 0xE)})
    # the handler records CS, the stack it runs on and the CS it interrupted
    board.load(0x6000, """
        mov [0x5000], cs
        mov [0x5004], esp
        mov eax, [esp+4]
        mov [0x5008], eax
        inc dword ptr [0x500c]
        iretd
    """)
    board.load(0x7000, "l: int 0x80\nmov [0x5010], cs\ninc ecx\ncmp ecx, 3\njne l\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(500)
    assert u32(board, 0x500c) == 3                     # three round trips
    assert u32(board, 0x5000) & 0xFFFF == 0x08         # handler at CPL 0
    assert u32(board, 0x5004) == RING0_STACK - 20      # on the TSS stack: SS, ESP, EFLAGS, CS, EIP
    assert u32(board, 0x5008) & 0xFFFF == 0x1B         # interrupted CPL 3 code
    assert u32(board, 0x5010) & 0xFFFF == 0x1B         # back at CPL 3 after iretd
    assert board.cpu.cpl == 3


def test_int_through_dpl0_gate_from_cpl3_is_gp(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    install_tss(board)
    board.cpu["idtr"] = write_idt(board, IDT_A, {0x80: 0x6000, 13: 0x6100})
    board.load(0x6000, "inc dword ptr [0x5000]\niretd")
    board.load(0x6100, "inc dword ptr [0x5004]\nh: jmp h")
    board.load(0x7000, "int 0x80\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(200)
    assert (u32(board, 0x5000), u32(board, 0x5004)) == (0, 1)
    fault = board.trace.of("cpu.fault")[0]
    assert fault["vector"] == 13 and fault["error"] == 0x80 * 8 + 2
    assert fault["eip"] == 0x7000                     # the fault is the `int` instruction's own


def test_hundred_faults_each_delivered_as_itself(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    board.cpu["idtr"] = write_idt(board, IDT_A, {0: 0x6000, 8: 0x6100, 13: 0x6200})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd dword ptr [esp], 2\niretd")   # skip `div ebx`
    board.load(0x6100, "inc dword ptr [0x5004]\nd: jmp d")
    board.load(0x6200, "inc dword ptr [0x5008]\nadd esp, 4\nadd dword ptr [esp], 2\niretd")  # skip `mov ds, ax`
    board.load(0x1000, """
        mov ecx, 50
    l:  xor edx, edx
        mov eax, 1
        xor ebx, ebx
        div ebx
        mov ax, 0x33
        mov ds, ax
        dec ecx
        jnz l
        hlt
    """)
    board.run(5000)
    assert (u32(board, 0x5000), u32(board, 0x5008), u32(board, 0x5004)) == (50, 50, 0)
    faults = board.trace.of("cpu.fault")
    assert [f["vector"] for f in faults] == [0, 13] * 50
    assert all(f["error"] == 0x30 for f in faults if f["vector"] == 13)
    assert board.cpu.halted and board.cpu.shutdown is None


def test_cpl3_out_faults_unless_iopl_allows(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    install_tss(board)
    board.cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nmov eax, [esp+4]\nmov [0x5004], eax\nadd esp, 4\nadd dword ptr [esp], 1\niretd")
    board.load(0x7000, "mov al, 0x41\nmov dx, 0x3f8\nout dx, al\nj: jmp j")
    for iopl, expect_out, expect_faults in ((0, "", 1), (3, "A", 0)):
        b = Board()
        b.boot(0x1000)
        install_tss(b)
        b.cpu["idtr"] = board.cpu["idtr"]
        b.memory.write(0, board.memory.read(0, 0x8000))
        b.load(0x1000, f"push 0x23\npush 0x70000\npush {0x202 | iopl << 12}\npush 0x1b\npush 0x7000\niretd")
        b.run(300)
        assert b.uart.text == expect_out
        assert u32(b, 0x5000) == expect_faults
        if expect_faults:
            assert u32(b, 0x5004) == 0x7000 + 2 + 4      # EIP of the faulting `out` is pushed


def test_missing_idt_is_a_triple_fault(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    board.load(0x1000, "int 0x30\nhlt")
    board.run(100)
    assert "triple fault" in board.cpu.shutdown
    assert [e["vector"] for e in board.trace.of("cpu.fault")] == [13, 8]


def test_invalid_opcode_is_ud_and_execution_continues(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    board.cpu["idtr"] = write_idt(board, IDT_A, {6: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd dword ptr [esp], 2\niretd")
    board.load(0x1000, "ud2\nud2\nmov dword ptr [0x5004], 7\nhlt")
    board.run(100)
    assert (u32(board, 0x5000), u32(board, 0x5004)) == (2, 7)


def test_memory_the_machine_lacks_is_gp(board):
    board.boot(0x1000)           # firmware state first; the test then installs its tables
    board.cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd esp, 4\nadd dword ptr [esp], 5\niretd")   # skip the 5-byte load
    board.load(0x1000, "mov eax, [0x40000000]\nmov dword ptr [0x5004], 9\nhlt")
    board.run_until(lambda: board.cpu.halted, 100_000, "hlt")
    assert (u32(board, 0x5000), u32(board, 0x5004)) == (1, 9)


def ports_0x3f8_allowed(board):
    """Booted, a TSS whose I/O bitmap allows ports 0x3F8-0x3FF only (IOPL 0), and a #GP
    handler at 0x6000 that counts at 0x5000 and skips the 1-byte in/out."""
    from vmkit.hw.x86 import encode_tss, encode_segment, TSS_AVAILABLE
    from conftest import TSS, GDT
    board.boot(0x1000)
    install_tss(board)
    tss = encode_tss(RING0_STACK, 0x10, allowed_ports=range(0x3F8, 0x400))
    board.memory.write(TSS, tss)
    board.memory.write(GDT + 0x28, encode_segment(TSS, len(tss) - 1, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.cpu["tr"] = (0x28, TSS, len(tss) - 1, 0x8B)
    board.cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd esp, 4\nadd dword ptr [esp], 1\niretd")


def test_tss_io_bitmap_lets_cpl3_use_exactly_the_allowed_ports(board):
    ports_0x3f8_allowed(board)
    board.load(0x7000, """
        mov al, 0x41
        mov dx, 0x3f8
        out dx, al          ; allowed by the bitmap
        mov dx, 0x21
        out dx, al          ; the PIC: not allowed
        mov dx, 0x3ff
        in ax, dx           ; a 2-byte access straddling 0x3ff/0x400: 0x400 is not allowed
    j:  jmp j
    """)
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(2000)
    assert board.uart.text == "A"
    assert u32(board, 0x5000) == 2
    assert board.pic.master.imr == 0xFF             # the refused out never reached the PIC


def test_hlt_with_an_interrupt_pending_wakes_at_once(board):
    """IF=0 holds an IRQ back; `sti; hlt` then takes it at the hlt, not at the slice's end."""
    board.boot(0x1000)
    board.cpu["idtr"] = write_idt(board, IDT_A, {0x21: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\npush eax\nmov al, 0x20\nout 0x20, al\npop eax\niretd")
    board.load(0x1000, """
        mov al, 0x11
        out 0x20, al
        mov al, 0x20
        out 0x21, al
        mov al, 4
        out 0x21, al
        mov al, 1
        out 0x21, al
        mov al, 0xfd
        out 0x21, al
        mov ecx, 300
    busy: loop busy
        sti
    idle: hlt
        jmp idle""")
    board.run(50)
    board.pic.raise_line(1)                             # pending; IF is still 0
    board.run(5000)                                     # one slice: it must not wait for its end
    halt = board.trace.of("cpu.halt")[0].time
    deliver = board.trace.of("cpu.deliver")[0].time
    assert deliver == halt and u32(board, 0x5000) == 1
    assert board.clock == 5050 and board.cpu.halted


def test_a_python_stub_that_ends_the_slice_runs_once(board):
    """on_execute handlers run before their instruction; ending the slice there must
    neither run the handler twice nor count the instruction twice."""
    board.load(0x1000, "nop\nnop\ninc dword ptr [0x5000]\nnop\nhlt")
    calls = []

    def stub(cpu):
        calls.append(cpu.board.now())
        if len(calls) == 1:
            cpu.request_stop()                          # e.g. a port write that kicks the PIC
    board.cpu.on_execute(0x1002, stub)
    board.boot(0x1000)
    board.run(1000)
    assert len(calls) == 1 and u32(board, 0x5000) == 1
    assert board.trace.of("cpu.halt")[0].time == 5      # nop nop inc nop hlt: 5 instructions


def test_stub_breakpoints_below_and_above_each_other_all_fire(board):
    """The counter checks breakpoints only at or above the lowest one (counter.c: `low`,
    kept by counter.py as stubs come and go): a loop below every stub runs uncounted by
    the walk, and each stub, the lowest included, still ends a run exactly before it."""
    board.load(0x1000, "mov ecx, 50\nl: loop l\nnop\ninc dword ptr [0x5000]\nnop\nhlt")
    seen = []
    high = board.cpu.on_execute(0x1008, lambda cpu: seen.append(("high", cpu.board.now())))
    board.cpu.on_execute(0x1007, lambda cpu: seen.append(("low", cpu.board.now())))
    board.boot(0x1000)
    board.run(1000)
    assert seen == [("low", 52), ("high", 53)] and u32(board, 0x5000) == 1
    assert board.cpu.counter.state.low == 0x1007
    board.cpu.remove(high)
    assert board.cpu.counter.state.low == 0x1007


def test_int_8_is_a_software_interrupt_not_a_double_fault(board):
    """From CPL 0 through a DPL 0 gate: the vector-8 handler runs with no error
    code pushed (the EIP after the `int` is on top); the CPU keeps running."""
    board.boot(0x1000)
    board.cpu["idtr"] = write_idt(board, IDT_A, {8: 0x6000})
    board.load(0x6000, "mov eax, [esp]\nmov [0x5000], eax\ninc dword ptr [0x5004]\niretd")
    board.load(0x1000, "int 8\nint 8\nh: hlt\njmp h")
    board.run(100)
    assert (u32(board, 0x5000), u32(board, 0x5004)) == (0x1004, 2)
    assert board.cpu.shutdown is None and not board.trace.of("cpu.fault")


@pytest.mark.parametrize("vector", range(32))
def test_int_n_from_cpl3_through_a_dpl0_gate_is_gp_never_a_shutdown(board, vector):
    """Every vector 0..31 as the 2-byte `int n` at CPL 3: #GP(n*8+2) at the
    `int` into the #GP handler; no #DF, no stop, whatever the vector's name."""
    board.boot(0x1000)
    install_tss(board)
    board.cpu["idtr"] = write_idt(board, IDT_A, {v: 0x6000 + 0x10 * v for v in range(32)})
    for v in range(32):
        board.load(0x6000 + 0x10 * v, f"mov dword ptr [0x5000], {v}\nh{v}: hlt\njmp h{v}")
    board.load(0x7000, f".byte 0xcd, {vector}\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(300)
    assert board.cpu.shutdown is None
    assert u32(board, 0x5000) == 13
    assert [(f["vector"], f["error"], f["eip"]) for f in board.trace.of("cpu.fault")] == [(13, vector * 8 + 2, 0x7000)]


def test_int_6_is_a_software_interrupt_and_ud2_still_a_fault(board):
    """Unicorn reports `int 6` as an invalid opcode (measured): the platform
    tells them apart, so `int 6` returns past itself and ud2 faults at itself."""
    board.boot(0x1000)
    board.cpu["idtr"] = write_idt(board, IDT_A, {6: 0x6000})
    board.load(0x6000, "mov eax, [esp]\nmov [0x5000 + ecx*4], eax\ninc ecx\n"
                       "cmp byte ptr [eax], 0x0f\njne back\nadd dword ptr [esp], 2\nback: iretd")
    board.load(0x1000, "xor ecx, ecx\nint 6\nnop\nud2\nh: hlt\njmp h")
    board.run(100)
    # `int 6` at 0x1002 pushes the next instruction (0x1004); ud2 at 0x1005 pushes itself
    assert (u32(board, 0x5000), u32(board, 0x5004), u32(board, 0x5008)) == (0x1004, 0x1005, 0)
    assert [(f["vector"], f["eip"]) for f in board.trace.of("cpu.fault")] == [(6, 0x1005)]
    assert board.cpu.shutdown is None


def test_segment_reads_the_hidden_base_and_limit_the_cpu_loaded(board):
    """CPU.segment gives what `mov ds` loaded from the descriptor, not what the GDT says
    now: edited after the load, the table changes and the hidden part does not."""
    from vmkit.hw.x86 import encode_segment, DATA_RW
    from conftest import GDT
    board.boot(0x1000)
    install_tss(board)                                  # firmware-like GDT: 0x08 code, 0x10 data
    at = GDT + 0x30
    board.memory.write(at, encode_segment(0xAB123000, 0x2FFF, DATA_RW, 0, g=1))
    board.cpu["gdtr"] = (0, GDT, 0x37, 0)
    board.load(0x1000, "mov ax, 0x30\nmov ds, ax\nmov es, ax\nhlt")
    board.run(20)
    board.memory.write(at, encode_segment(0x100000, 0xFFF, DATA_RW, 0, g=0))
    sel, base, limit, flags = board.cpu.segment("ds")
    assert (sel, base, limit) == (0x30, 0xAB123000, 0x2FFF)
    assert flags & 0x9F00 == 0x9300 and flags & 0x800000              # P, DPL 0, data rw accessed; G
    assert board.cpu.segment("es")[:3] == (0x30, 0xAB123000, 0x2FFF)
    assert board.cpu.segment("cs")[0] == board.cpu["cs"] == 0x08
    with pytest.raises(ValueError, match="no segment register 'eax'"):
        board.cpu.segment("eax")


class _FailingDevice:
    def io_write(self, offset, size, value):
        raise RuntimeError("the device failed on out")

    def io_read(self, offset, size):
        raise RuntimeError("the device failed on in")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("insn, why", [("in al, dx", "on in"), ("out dx, al", "on out")])
def test_a_device_failing_inside_in_or_out_is_raised_to_whoever_runs_the_board(insn, why):
    b = Board()
    b.ports.attach(_FailingDevice(), 0x700, 2)
    b.load(0x7000, f"mov dx, 0x700\n{insn}\nhlt")
    b.boot(0x7000)
    with pytest.raises(RuntimeError, match=why):
        b.run(100)


def test_the_io_check_in_c_and_in_python_agree_port_by_port(board):
    """io.c refuses in/out in Unicorn's hook; CPU._io_denied is the same check in Python
    (a machine without a C compiler): at CPL 3, IOPL 0, under a TSS whose bitmap allows
    0x3F8-0x3FF, each port and size gets the same answer from both, and from the CPU."""
    ports_0x3f8_allowed(board)
    board.load(0x7000, "mov dx, [0x7100]\nin al, dx\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(200)
    assert board.cpu.cpl == 3 and u32(board, 0x5000) == 0
    c = board.cpu
    for port, size, refused in ((0x3F8, 1, False), (0x3FF, 1, False), (0x3FE, 2, False),
                                (0x3FC, 4, False), (0x3FF, 2, True), (0x3F7, 1, True),
                                (0x21, 1, True), (0x400, 1, True)):
        assert (c._io_denied(port, size) is not None) == refused, (port, size)
        b = Board()
        b.boot(0x1000)
        install_tss(b)
        b.memory.write(0, board.memory.read(0, 0x80000))
        b.cpu["tr"], b.cpu["idtr"] = board.cpu["tr"], board.cpu["idtr"]
        b.memory.write(0x7100, port.to_bytes(2, "little"))
        b.load(0x6000, "inc dword ptr [0x5000]\nadd esp, 4\nmov dword ptr [esp], 0x7080\niretd")
        b.load(0x7080, "k: jmp k")                           # the #GP handler returns here
        b.load(0x7000, "mov dx, [0x7100]\n" + {1: "in al, dx", 2: "in ax, dx", 4: "in eax, dx"}[size]
               + "\nj: jmp j")
        b.run(300)
        assert u32(b, 0x5000) == refused, (port, size)         # io.c's answer: a #GP or none


def test_an_io_bitmap_past_the_machines_memory_reads_as_all_ones(board):
    """A TSS at the end of memory whose bitmap lies past it: every port refused, by io.c
    and by CPU._io_denied alike (the bus gives nothing there: all ones)."""
    from vmkit.hw.x86 import encode_tss, encode_segment, TSS_AVAILABLE
    from conftest import GDT
    board.boot(0x1000)
    install_tss(board)
    tss_at = board.memory.size - 0x80
    tss = bytearray(encode_tss(RING0_STACK, 0x10))
    tss[102:104] = (0x70).to_bytes(2, "little")             # the bitmap from size - 0x10 on
    limit = 0x2000                                           # (its limit reaches past memory too)
    board.memory.write(tss_at, bytes(tss))
    board.memory.write(GDT + 0x28, encode_segment(tss_at, limit, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.cpu["tr"] = (0x28, tss_at, limit, 0x8B)
    board.cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd esp, 4\nadd dword ptr [esp], 1\niretd")
    board.load(0x7000, "mov al, 0x41\nmov dx, 0x3f8\nout dx, al\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(300)
    assert tss_at + 0x70 + 0x3F8 // 8 >= board.memory.size
    assert u32(board, 0x5000) == 1 and board.uart.text == ""
    assert board.cpu._io_denied(0x3F8, 1) is not None
    assert board.cpu._io_denied(0x78, 1) is None              # the bitmap's last byte in memory (0)
    assert board.cpu._io_denied(0x7F, 2) is not None          # 0x80's bit lies past it
