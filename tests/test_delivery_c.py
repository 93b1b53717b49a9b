"""The platform's delivery in C (delivery.c) is the Python's (delivery.py), byte for byte.

Each case builds the same machine twice, puts its CPU in the same interrupted context
(by running x86: an iretd into it), delivers the same vector once through the C path and
once with it switched off, and compares what the machine then holds: every register
(the hidden segment state included), every byte of RAM, the trace, the CPU's counters,
and the machine after its handler has run a few instructions. Cases C does not handle
(a failing check and its fault cascade, virtual-8086 mode, an LDT selector, a table out
of RAM, bad arguments) must be declined before anything changes, so they are the
Python's too."""
import pytest
from unicorn import UcError

from vmkit.hw.board import Board
from vmkit.hw.registers import GENERAL, SEGMENTS
from vmkit.hw.x86 import encode_gate, encode_segment, encode_tss, decode_gate, CODE_RX, DATA_RW, TSS_AVAILABLE

pytestmark = pytest.mark.needs_c("the C delivery's own tests")

IDT, GDT, TSS = 0x2000, 0x3000, 0x3100
STACK0, STACK1, STACK3 = 0x8F000, 0x7F000, 0x6F000
HANDLER, HANDLER_LOW = 0x6000, 0x5800
CONTEXT = 0x7000                       # the interrupted code: `jmp $`
INT_82 = 0x7100                        # `int 0x82`
FLAT = 0xFFFFFFFF
INTERRUPTED_FLAGS = 0x4243             # NT IF ZF CF: cleared (NT) and kept as each gate says

GDT_ENTRIES = [bytes(8),
               encode_segment(0, FLAT, CODE_RX, 0), encode_segment(0, FLAT, DATA_RW, 0),       # 08 10
               encode_segment(0, FLAT, CODE_RX, 3), encode_segment(0, FLAT, DATA_RW, 3),       # 18 20
               encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0),                     # 28
               encode_segment(0, FLAT, CODE_RX, 1), encode_segment(0, FLAT, DATA_RW, 1),       # 30 38
               encode_segment(0, FLAT, CODE_RX, 0),                                            # 40 another CS
               encode_segment(0, 0x5FFF, CODE_RX, 0),                                          # 48 limited CS
               encode_segment(0x40000, FLAT - 0x40000, DATA_RW, 0),                            # 50 SS, base
               encode_segment(0, FLAT, CODE_RX, 0, present=False),                             # 58 absent CS
               encode_segment(0, FLAT, CODE_RX | 4, 0)]                                        # 60 conforming

# vector: (offset, selector, type, dpl, present)
GATES = {0x80: (HANDLER, 0x08, 0xE, 3, True), 0x81: (HANDLER, 0x08, 0xF, 3, True),
         0x82: (HANDLER, 0x08, 0xE, 0, True), 0x83: (HANDLER, 0x40, 0xE, 3, True),
         0x84: (HANDLER_LOW, 0x48, 0xE, 3, True), 0x85: (HANDLER, 0x48, 0xE, 3, True),
         0x86: (HANDLER, 0x08, 0xE, 3, False), 0x87: (HANDLER, 0x08, 0x5, 3, True),
         0x88: (HANDLER, 0x00, 0xE, 3, True), 0x89: (HANDLER, 0x0C, 0xE, 3, True),
         0x8A: (HANDLER, 0xF8, 0xE, 3, True), 0x8B: (HANDLER, 0x10, 0xE, 3, True),
         0x8C: (HANDLER, 0x58, 0xE, 3, True), 0x8D: (HANDLER, 0x18, 0xE, 3, True),
         0x8E: (HANDLER, 0x30, 0xE, 3, True), 0x8F: (HANDLER, 0x08, 0x6, 3, True),
         6: (HANDLER, 0x08, 0xE, 0, True), 8: (HANDLER, 0x08, 0xE, 0, True),
         13: (HANDLER, 0x08, 0xE, 0, True), 14: (HANDLER, 0x08, 0xF, 0, True),
         0x20: (HANDLER, 0x08, 0xE, 0, True), 0x100: (HANDLER, 0x08, 0xE, 0, True),
         0x101: (HANDLER, 0x08, 0xE, 3, True),
         0x40: (HANDLER, 0x0B, 0xE, 3, True), 0x41: (HANDLER, 0x60, 0xE, 3, True)}
IDT_LIMIT = 0x90 * 8 - 1               # vector 0x90 and above: past the IDT's limit

CONTEXTS = {0: (0x08, 0x10, STACK0), 1: (0x31, 0x39, STACK1), 3: (0x1B, 0x23, STACK3)}


PAGE_DIRECTORY, PAGE_TABLE = 0x9000, 0xA000


def _paging(board, pages):
    """Paging on: the first MiB mapped to itself (present, writable, user), except `pages`:
    {linear page: the physical page it maps to, or None: not present}."""
    mem = board.memory
    mem.write_u32(PAGE_DIRECTORY, PAGE_TABLE | 7)
    for page in range(256):
        target = pages.get(page << 12, page << 12)
        mem.write_u32(PAGE_TABLE + 4 * page, 0 if target is None else target | 7)
    board.cpu.write(cr3=PAGE_DIRECTORY)
    board.cpu.write(cr0=board.cpu["cr0"] | 1 << 31)


def machine(cpl, tss=None, tr=None, idtr=None, gdtr=None, paging=None):
    """A board whose CPU runs `jmp $` at CPL `cpl` (or in virtual-8086 mode: "v86"),
    under the tables above (tss: (esp0, ss0); tr, idtr, gdtr: the table registers;
    paging: turned on, with the pages `_paging` says)."""
    board = Board(memory=1 << 20)
    mem = board.memory
    gdt = b"".join(GDT_ENTRIES)
    mem.write(GDT, gdt)
    esp0, ss0 = tss or (STACK0, 0x10)
    mem.write(TSS, encode_tss(esp0, ss0))
    for vector, (offset, sel, type, dpl, present) in GATES.items():
        mem.write(IDT + 8 * vector, encode_gate(offset, sel, type, dpl, present))
    mem.write(HANDLER_LOW, b"\x90" * 8 + b"\xeb\xfe")     # nop x 8, jmp $
    mem.write(HANDLER, b"\x90" * 8 + b"\xeb\xfe")
    mem.write(CONTEXT, b"\xeb\xfe")
    mem.write(INT_82, b"\xcd\x82\xeb\xfe")           # int 0x82: a refused `int` is 2 bytes back
    if cpl == "v86":                  # ES DS FS GS SS:ESP EFLAGS(VM, IOPL 3) CS:EIP, popped by iretd
        entry = f"push 0x11\npush 0x22\npush 0x33\npush 0x44\npush 0x600\npush 0xF00\n" \
                f"push {0x23000 | INTERRUPTED_FLAGS:#x}\npush 0x700\npush 0\niretd"
    else:
        cs, ss, esp = CONTEXTS[cpl]
        entry = (f"push {ss:#x}\npush {esp:#x}\n" if cpl else "") + \
                f"push {INTERRUPTED_FLAGS:#x}\npush {cs:#x}\npush {CONTEXT:#x}\niretd"
        if not cpl:
            entry = f"mov esp, {esp:#x}\n" + entry
    board.load(0x1000, entry)
    board.boot(0x1000)
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["tr"] = (0x28, TSS, 103, 0x8B)
    cpu["idtr"] = (0, IDT, IDT_LIMIT, 0)
    cpu.write(eax=0x11111111, ebx=0x22222222, ecx=0x33333333, edx=0x44444444, esi=0x55, edi=0x66, ebp=0x77)
    board.run(20)
    for name, value in (("tr", tr), ("idtr", idtr), ("gdtr", gdtr)):
        if value is not None:
            cpu[name] = value
    if paging is not None:
        _paging(board, paging)
    return board


def state(board):
    cpu = board.cpu
    return {"registers": {n: cpu[n] for n in GENERAL + SEGMENTS + ("eip", "eflags", "cr0", "cr2", "cr3",
                                                                     "gdtr", "idtr", "ldtr", "tr")},
            "hidden": {n: cpu.segment(n) for n in SEGMENTS},
            "ram": bytes(board.memory.buffer),
            "trace": [str(e) for e in board.trace.events],
            "cpu": (cpu.delivered, cpu.halted, cpu.shutdown, cpu.cpl)}


def deliver(c_path, setup, vector, kind, error_code=None, eip=None, decoder=None):
    board = machine(**setup)
    cpu = board.cpu
    if not c_path:
        cpu._c_state = False                 # delivery.py: no C state, every delivery the Python's
    if decoder:
        cpu.gate_decoder = decoder
    cpu.halted = True
    before = cpu.c_deliveries
    try:
        outcome = cpu.deliver(vector, kind, error_code, eip)
    except (UcError, ValueError, Exception) as e:     # the same exception, both ways
        outcome = (type(e).__name__, str(e))
    after = state(board)
    board.run(12)                            # the handler runs on the same machine both ways
    later = state(board)
    counts = cpu.c_deliveries
    board.close()
    return outcome, after, later, tuple(a - b for a, b in zip(counts, before))


# (name, setup, vector, kind, error code, eip, handled by C at the first attempt: True, declined:
# False, refused (an `int` below its gate's DPL) and its #GP delivered in the same call: "refused",
# neither counted: None (bad arguments, which never reach C; a register load that fails))
CASES = [
    ("int from CPL 3, interrupt gate", {"cpl": 3}, 0x80, "int", None, None, True),
    ("int from CPL 3, trap gate keeps IF", {"cpl": 3}, 0x81, "int", None, None, True),
    ("int from CPL 1", {"cpl": 1}, 0x80, "int", None, None, True),
    ("int from CPL 0, same CS", {"cpl": 0}, 0x80, "int", None, None, True),
    ("int from CPL 0 to another CS", {"cpl": 0}, 0x83, "int", None, None, True),
    ("int from CPL 3 to another CS", {"cpl": 3}, 0x83, "int", None, None, True),
    ("gate inside a limited CS", {"cpl": 3}, 0x84, "int", None, None, True),
    ("int from CPL 3 to a CPL 3 handler", {"cpl": 3}, 0x8D, "int", None, None, True),
    ("int from CPL 3 to a CPL 1 handler", {"cpl": 3}, 0x8E, "int", None, None, True),
    ("irq from CPL 3", {"cpl": 3}, 0x20, "irq", None, None, True),
    ("irq from CPL 1", {"cpl": 1}, 0x20, "irq", None, 0x7000, True),
    ("irq from CPL 0", {"cpl": 0}, 0x20, "irq", None, None, True),
    ("#GP with its error code from CPL 3", {"cpl": 3}, 13, "fault", 0x1234, 0x7000, True),
    ("#PF with its error code from CPL 1 (trap gate)", {"cpl": 1}, 14, "fault", 6, 0x7000, True),
    ("#GP with an error code at CPL 0", {"cpl": 0}, 13, "fault", 0xFFFFFFFF, None, True),
    ("#UD without one from CPL 0", {"cpl": 0}, 6, "fault", None, 0x7000, True),
    ("a nested fault", {"cpl": 3}, 13, "nested", 0x402, 0x7000, True),
    ("ring-0 stack with a base", {"cpl": 3, "tss": (STACK0 - 0x40000, 0x50)}, 0x80, "int", None, None, True),
    ("int from CPL 3 through a DPL 0 gate", {"cpl": 3}, 0x82, "int", None, None, "refused"),
    ("int from CPL 1 through a DPL 0 gate", {"cpl": 1}, 0x82, "int", None, None, "refused"),
    ("refused past its `int 0x82`", {"cpl": 3}, 0x82, "int", None, INT_82 + 2, "refused"),
    ("refused past an `int 0x82` as vector 0x86", {"cpl": 3}, 0x86, "int", None, INT_82 + 2, False),
    ("refused at EIP 1", {"cpl": 3}, 0x82, "int", None, 1, "refused"),
    ("refused, its #GP through too short a TSS", {"cpl": 3, "tr": (0x28, TSS, 10, 0x8B)}, 0x82, "int",
     None, None, "refused, then Python"),
    ("refused, its #GP's stack outside RAM", {"cpl": 1, "tss": (0, 0x10)}, 0x82, "int", None, INT_82 + 2,
     "refused, then Python"),
    ("refused, its #GP's ring-0 SS a code segment: #TS", {"cpl": 3, "tss": (STACK0, 0x08)}, 0x82, "int",
     None, None, "refused, then Python"),
    ("refused at EIP 0: the #GP's EIP is -1", {"cpl": 1}, 0x82, "int", None, 0, None),
    ("a gate selector's RPL 3 ignored, from CPL 0", {"cpl": 0}, 0x40, "int", None, None, True),
    ("a gate selector's RPL 3 ignored, from CPL 3", {"cpl": 3}, 0x40, "int", None, None, True),
    ("a conforming CS: the CPL stays 3", {"cpl": 3}, 0x41, "int", None, None, False),
    ("a conforming CS: the CPL stays 1", {"cpl": 1}, 0x41, "irq", None, None, False),
    ("a conforming CS from CPL 0", {"cpl": 0}, 0x41, "int", None, None, False),
    ("vector past the IDT's limit", {"cpl": 3}, 0x90, "int", None, None, False),
    ("irq past the IDT's limit", {"cpl": 0}, 0x91, "irq", None, None, False),
    ("gate not present", {"cpl": 3}, 0x86, "int", None, None, False),
    ("a task gate", {"cpl": 3}, 0x87, "int", None, None, False),
    ("a 16-bit gate", {"cpl": 0}, 0x8F, "irq", None, None, False),
    ("null gate selector", {"cpl": 3}, 0x88, "int", None, None, False),
    ("LDT gate selector", {"cpl": 3}, 0x89, "int", None, None, False),
    ("gate selector past the GDT", {"cpl": 3}, 0x8A, "int", None, None, False),
    ("gate selector of a data segment", {"cpl": 3}, 0x8B, "int", None, None, False),
    ("gate selector of an absent code segment", {"cpl": 1}, 0x8C, "int", None, None, False),
    ("gate to a less privileged segment", {"cpl": 0}, 0x8D, "int", None, None, False),
    ("gate offset past its CS's limit", {"cpl": 3}, 0x85, "int", None, None, False),
    ("TSS too short to switch stacks", {"cpl": 3, "tr": (0x28, TSS, 10, 0x8B)}, 0x80, "int", None, None, False),
    ("TSS outside RAM", {"cpl": 3, "tr": (0x28, 0xFFFFF000, 103, 0x8B)}, 0x80, "int", None, None, False),
    ("ring-0 stack outside RAM: #SS, #DF, triple fault", {"cpl": 3, "tss": (0, 0x10)}, 0x80, "int",
     None, None, False),
    ("ring-0 SS in the LDT", {"cpl": 3, "tss": (STACK0, 0x14)}, 0x80, "int", None, None, False),
    ("ring-0 SS null", {"cpl": 3, "tss": (STACK0, 0)}, 0x80, "int", None, None, False),
    ("ring-0 SS a code segment: #TS", {"cpl": 3, "tss": (STACK0, 0x08)},
     0x80, "int", None, None, None),
    ("paging on, the tables mapped to themselves", {"cpl": 3, "paging": {}}, 0x80, "int", None, None, True),
    ("paging on, a fault from CPL 0", {"cpl": 0, "paging": {}}, 13, "fault", 0, 0x7000, True),
    # a page the delivery needs not present: a #PF, which fails alike (#DF), then the triple fault;
    # the C declines before anything changes (a register load would read the GDT through paging:
    # Unicorn's #PF there leaves a hook by a longjmp)
    ("paging on, the IDT's page not present", {"cpl": 3, "paging": {IDT: None}}, 0x80, "int", None, None, False),
    ("paging on, the GDT's page not present", {"cpl": 3, "paging": {GDT: None}}, 0x80, "int", None, None, False),
    ("paging on, the ring-0 stack's page not present", {"cpl": 3, "paging": {STACK0 - 0x1000: None}}, 0x80,
     "int", None, None, False),
    # mapped, but elsewhere: the platform reads the tables at their linear addresses as physical ones
    # (the kernel maps them so); C declines, the Python's reads are the reference
    ("paging on, the IDT's page mapped elsewhere", {"cpl": 3, "paging": {IDT: 0x40000}}, 0x80, "int", None, None,
     False),
    ("IDT outside RAM", {"cpl": 0, "idtr": (0, 0xFFFF0000, 0xFFF, 0)}, 0x20, "irq", None, None, False),
    ("GDT outside RAM", {"cpl": 0, "gdtr": (0, 0xFFFF0000, 0xFFF, 0)}, 0x20, "irq", None, None, False),
    ("virtual-8086 mode, IOPL 3", {"cpl": "v86"}, 0x80, "int", None, None, False),
    ("virtual-8086 mode, an IRQ", {"cpl": "v86"}, 0x20, "irq", None, None, False),
    ("int 0x101 through a 64 KiB IDT", {"cpl": 0, "idtr": (0, IDT, 0xFFFF, 0)}, 0x101, "int", None, None, None),
    ("int 0x100 refused", {"cpl": 3, "idtr": (0, IDT, 0xFFFF, 0)}, 0x100, "int", None, INT_82 + 2, None),
    ("EIP past 32 bits", {"cpl": 3}, 0x80, "int", None, 1 << 32, None),
    ("a negative error code", {"cpl": 3}, 13, "fault", -1, None, None),
    ("an error code past 32 bits", {"cpl": 3}, 13, "fault", 1 << 32, None, None),
    ("an error code past 64 bits", {"cpl": 3}, 13, "fault", 1 << 70, None, None),
]


@pytest.mark.parametrize("name, setup, vector, kind, error_code, eip, in_c", CASES, ids=[c[0] for c in CASES])
def test_c_and_python_deliver_the_same(name, setup, vector, kind, error_code, eip, in_c):
    c = deliver(True, setup, vector, kind, error_code, eip)
    py = deliver(False, setup, vector, kind, error_code, eip)
    assert c[0] == py[0], "the outcome (delivered, or the exception raised)"
    for label, got, expected in (("after delivery", c[1], py[1]), ("after the handler", c[2], py[2])):
        for key in expected:
            assert got[key] == expected[key], f"{key} {label}"
    assert py[3] == (0, 0, 0)                   # (the Python path really was the Python's)
    delivered_in_c, refused, declined = c[3]
    if in_c == "refused":
        assert (delivered_in_c, refused, declined) == (1, 1, 0)     # the #GP delivered in C too
    elif in_c == "refused, then Python":
        assert refused == 1 and declined >= 1 and c[0] == py[0]
    elif in_c == "refused, load failed":
        assert (delivered_in_c, refused, declined) == (0, 1, 0) and c[0][0] == "UcError"
    elif in_c:
        assert delivered_in_c >= 1 and refused == declined == 0
    elif in_c is False:
        assert declined >= 1                 # declined first; a cascade's fault may then be C's


def test_a_learners_gate_decoder_is_used_not_bypassed():
    """Exercise 00 plugs in a decoder: every delivery then reads the gate through it."""
    seen = []

    def decoder(raw):
        seen.append(bytes(raw))
        return decode_gate(raw)
    outcome, after, _, counts = deliver(True, {"cpl": 3}, 0x80, "int", decoder=decoder)
    assert seen == [encode_gate(HANDLER, 0x08, 0xE, 3)] and counts == (0, 0, 0)
    assert after["registers"]["eip"] == HANDLER and after["registers"]["cs"] == 0x08


def test_the_c_path_delivers_the_common_case():
    """The C path is the one used (it counts what it delivers): an `int` from CPL 3 reaches
    its handler at CPL 0 on the TSS's stack with the frame the CPU pushes."""
    board = machine(3)
    cpu = board.cpu
    cpu.deliver(0x80, "int")
    regs = cpu.read("cs", "ss", "esp", "eip", "eflags")
    frame = [board.memory.read_u32(STACK0 - 20 + 4 * i) for i in range(5)]
    assert cpu.c_deliveries == (1, 0, 0)
    assert regs == [0x08, 0x10, STACK0 - 20, HANDLER, (INTERRUPTED_FLAGS & ~0x4200) | 0x2]
    assert frame == [CONTEXT, 0x1B, INTERRUPTED_FLAGS | 0x2, STACK3, 0x23]
    board.close()


def test_without_the_compiled_library_the_python_delivers(monkeypatch):
    """No C compiler (counter.library() is None): every delivery is the Python's, the same."""
    from vmkit.hw import delivery
    monkeypatch.setattr(delivery, "library", lambda: None)
    outcome, after, later, counts = deliver(True, {"cpl": 3}, 0x80, "int")
    reference = deliver(False, {"cpl": 3}, 0x80, "int")
    assert counts == (0, 0, 0) and outcome is True
    assert (after, later) == (reference[1], reference[2])


@pytest.mark.parametrize("cpl, vector, cs, ss, esp", [
    (0, 0x40, 0x08, 0x10, STACK0 - 12), (3, 0x40, 0x08, 0x10, STACK0 - 20),
    (3, 0x41, 0x63, 0x23, STACK3 - 12), (1, 0x41, 0x61, 0x39, STACK1 - 12)])
def test_cs_rpl_is_the_new_cpl_and_a_conforming_segment_keeps_the_cpl(cpl, vector, cs, ss, esp):
    """As a real CPU: the gate's selector's RPL is ignored (CS.RPL is the CPL the handler runs
    at: the DPL of a non-conforming segment, which a Unicorn CS write with RPL 3 refused: the
    machine stopped), and a conforming segment runs the handler at the CPL it interrupted, on
    the same stack (no TSS switch)."""
    for c_path in (True, False):
        outcome, after, _, _ = deliver(c_path, {"cpl": cpl}, vector, "int")
        regs = after["registers"]
        assert outcome is True and (regs["cs"], regs["ss"], regs["esp"], regs["eip"]) == (cs, ss, esp, HANDLER)
        assert after["cpu"][3] == cs & 3 and after["cpu"][2] is None


@pytest.mark.parametrize("vector, kind, fault", [
    (0x8C, "irq", (11, 0x58 | 1)), (0x8C, "int", (11, 0x58)), (0x8B, "irq", (13, 0x10 | 1)),
    (0x88, "irq", (13, 1)), (0x8A, "irq", (13, 0xF8 | 1)), (0x8C, "fault", (11, 0x58 | 1)),
    (0x86, "fault", (11, 0x86 * 8 + 3)), (0x86, "int", (11, 0x86 * 8 + 2))])
def test_a_gates_target_faults_as_intels_int_says_ext_for_an_external_event(vector, kind, fault):
    """The gate's code segment absent: #NP(selector + EXT); not a code segment, null, past the
    GDT: #GP(selector + EXT); EXT set for an IRQ or an exception, not for an `int` (Intel SDM
    6.13; both paths: C declines)."""
    for c_path in (True, False):
        board = machine(1)
        if not c_path:
            board.cpu._c_state = False
        board.cpu.deliver(vector, kind, eip=CONTEXT)
        first = board.trace.of("cpu.fault")[0]
        assert (first["vector"], first["error"]) == fault
        board.close()


@pytest.mark.parametrize("name, setup, vector, fault", [
    ("the TSS's SS0 a code segment", {"cpl": 3, "tss": (STACK0, 0x08)}, 0x80, (10, 0x08)),
    ("the TSS's SS0 of DPL 3", {"cpl": 3, "tss": (STACK0, 0x23)}, 0x80, (10, 0x20)),
    ("the TSS's ESP0 under a stack segment's base", {"cpl": 3, "tss": (0x10, 0x50)}, 0x80, (12, 0x50)),
    ("the frame past SS's limit at the same CPL", {"cpl": 0, "gdtr": None}, 0x80, None)])
def test_the_tss_stack_is_checked_as_the_cpu_loads_it(name, setup, vector, fault):
    """A stack switch loads SS from the TSS as a CPU does: not a writable data segment of the
    new CPL, #TS(SS); a frame that does not fit below ESP inside SS's limit, #SS; the
    fault delivered in turn (both paths)."""
    for c_path in (True, False):
        board = machine(**setup)
        if not c_path:
            board.cpu._c_state = False
        if fault is None:                    # CPL 0's SS limited to 64 KiB, ESP just above it
            board.memory.write(GDT + 0x10, encode_segment(0, 0xFFFF, DATA_RW, 0, g=0))
            board.cpu.write(esp=0x10004)
        board.cpu.deliver(vector, "int", eip=CONTEXT)
        first = board.trace.of("cpu.fault")[0]
        assert (first["vector"], first["error"]) == (fault or (12, 0)), name
        board.close()
