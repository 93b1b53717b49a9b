"""Grades exercise 00 by the machine's behaviour with the learner's decoder.

First the decoder meets gates of every shape (offsets in both halves, all
DPLs, trap and interrupt gates, absent gates); then it is plugged into the
CPU's interrupt delivery, and a program that takes a software interrupt
(through a trap gate, to a handler above 64 KiB), a divide fault, a timer
IRQ and a not-present gate must see each reach its own handler, with IF as
its gate's type says; then, at CPL 3, an `int` through a DPL 3 gate must
reach its handler and one through a DPL 0 gate be a #GP. Whatever the decoder returns or raises is said as a
hint (learner.py), never as a traceback through the CPU.
"""
import random

from vmkit.hw.board import FIRMWARE_GDT, KERNEL_CS, KERNEL_DS, USER_CS, USER_DS, Board
from vmkit.hw.x86 import (EFLAGS_IF, TSS_AVAILABLE, Gate, decode_gate, encode_gate, encode_segment,
                          encode_tss)

from .learner import Wrong, checked, guard

IDT = 0x2000
USER_IDT = 0x2800               # the CPL 3 part's own IDT: its #GP gate is not there before
GDT, TSS, TSS_SEL = 0x3000, 0x3100, 0x28     # the firmware's five descriptors, then a TSS
KERNEL_STACK, USER_STACK = 0x9F000, 0x8F000
COUNTERS = 0x5000
FLAGS = 0x5100                  # each handler's EFLAGS.IF as it found it, at FLAGS + 4 * index
GP_ERROR = 0x5200               # the #GP handler's error code
# vector -> handler address; each handler counts into COUNTERS + 4 * index. int 0x30's handler
# lies above 64 KiB, so that its gate's offset has a high half; and its gate is a trap gate
# (IF stays as it was: set), the others interrupt gates (IF cleared): a decoder that drops the
# high half, or reads every gate as one type, sends the CPU elsewhere or with the wrong IF.
# From CPL 3, `int 0x32` goes through a DPL 3 gate and `int 0x33` through a DPL 0 one (a #GP):
# a decoder that reads every DPL as one value lets both through, or neither
HANDLERS = {0x30: 0x16000, 0x00: 0x6100, 0x20: 0x6200, 0x0B: 0x6300, 0x31: 0x6400,
            0x32: 0x6500, 0x0D: 0x6600, 0x33: 0x6700}
TRAP_GATES = {0x30}
USER_GATES = {0x32}                                  # DPL 3: `int` from CPL 3 may use them
USER_PART = {0x32, 0x0D, 0x33}                       # the vectors of USER_IDT, only there
ABSENT = 0x31


def sample_gates():
    rng = random.Random(0)
    shapes = [(0, 0, 0xE, 0, True), (0xFFFFFFFF, 0xFFFF, 0xF, 3, True),
              (0x12345678, 0x08, 0xE, 0, False), (0x0000FFFF, 0x10, 0xF, 1, True),
              (0xFFFF0000, 0x1B, 0xE, 2, True)]
    shapes += [(rng.getrandbits(32), rng.getrandbits(16), rng.choice((0xE, 0xF)),
                rng.randrange(4), rng.random() < 0.8) for _ in range(40)]
    return [encode_gate(o, s, t, d, p) for o, s, t, d, p in shapes]


# each field, the end of its range, and where it lies in the 8 bytes
FIELDS = (("offset", 1 << 32, "32 bits, from bytes 0-1 and 6-7"), ("selector", 1 << 16, "16 bits, bytes 2-3"),
          ("type", 16, "bits 3..0 of byte 5, below 0x10"), ("dpl", 4, "bits 6..5 of byte 5, 0 to 3"),
          ("present", 2, "bit 7 of byte 5: True or False"))


def _gate(decode):
    """The learner's decoder, each answer checked for a Gate's shape before anyone uses it:
    five whole numbers in their fields' ranges (present a bool, or 0 or 1)."""
    decode = guard(decode, "decode_gate", lambda raw: f"decoding the gate bytes {raw.hex(' ')}")

    def decoded(raw):
        got = decode(raw)
        if not isinstance(got, tuple) or len(got) != 5:
            raise Wrong(f"decode_gate returned {got!r} for the bytes {raw.hex(' ')}; "
                        f"return a Gate(offset, selector, type, dpl, present)")
        for (field, end, where), value in zip(FIELDS, got):
            if not isinstance(value, int) or not 0 <= value < end:
                raise Wrong(f"decode_gate returned {field}={value!r} for the bytes {raw.hex(' ')}: {field} is {where}")
        return Gate(*got)
    return decoded


@checked
def check_decoding(decode):
    decode = _gate(decode)
    for raw in sample_gates():
        want = decode_gate(raw)
        got = decode(raw)
        if tuple(got) != tuple(want):
            wrong = ", ".join(f for f, a, b in zip(Gate._fields, got, want) if a != b)
            return f"bytes {raw.hex(' ')}: expected {want}, got {tuple(got)} ({wrong} wrong)"
    return None


PROGRAM = f"""
    mov al, 0x11            ; remap the PIC: IRQ 0 -> vector 0x20
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x01
    out 0x21, al
    mov al, 0xFE            ; unmask the timer only
    out 0x21, al
    lidt [idt_desc]
    sti
    int 0x30                ; through a trap gate: IF stays set
    xor edx, edx
    mov eax, 1
    xor ebx, ebx
    div ebx                 ; #DE
    int 0x31                ; gate not present: #NP(0x31*8+2)
wait: cmp dword ptr [{COUNTERS + 8}], 0
    je wait
    cli
    lidt [user_idt_desc]
    lgdt [gdt_desc]
    mov ax, {TSS_SEL}
    ltr ax                  ; the stack an interrupt from CPL 3 switches to
    push {USER_DS}
    push {USER_STACK}
    push 0x2
    push {USER_CS}
    mov eax, user           ; (keystone encodes `push label` as a 16-bit push)
    push eax
    iretd                   ; to CPL 3
user:
    int 0x32                ; DPL 3 gate: its handler, and back
    int 0x33                ; DPL 0 gate: #GP(0x33*8+2); its handler stops the machine
spin: jmp spin
idt_desc: .word {256 * 8 - 1}
          .long {IDT}
user_idt_desc: .word {256 * 8 - 1}
          .long {USER_IDT}
gdt_desc: .word {6 * 8 - 1}
          .long {GDT}
"""


def handler(index, skip=0, pop_error=False):
    if index == 6:                           # the #GP from CPL 3: keep its error code, stop
        return f"inc dword ptr [{COUNTERS + 4 * index}]\nmov eax, [esp]\nmov [{GP_ERROR}], eax\ncli\nhlt"
    fix = ("add esp, 4\n" if pop_error else "") + (f"add dword ptr [esp], {skip}\n" if skip else "")
    eoi = "mov al, 0x20\nout 0x20, al\n" if index == 2 else ""
    return (f"push eax\npushfd\npop eax\nand eax, {EFLAGS_IF:#x}\nmov [{FLAGS + 4 * index}], eax\npop eax\n"
            f"inc dword ptr [{COUNTERS + 4 * index}]\n{eoi}{fix}iretd")


@checked
def check_delivery(decode):
    board = Board()
    for vector, address in HANDLERS.items():
        board.memory.write((USER_IDT if vector in USER_PART else IDT) + vector * 8, encode_gate(address, KERNEL_CS, type=0xF if vector in TRAP_GATES
                                                         else 0xE, dpl=3 if vector in USER_GATES else 0,
                                                         present=vector != ABSENT))
    board.memory.write(GDT, board.memory.read(FIRMWARE_GDT, 5 * 8)
                       + encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.memory.write(TSS, encode_tss(KERNEL_STACK, KERNEL_DS))
    board.load(HANDLERS[0x30], handler(0))
    board.load(0x6100, handler(1, skip=2))                    # skip `div ebx`
    board.load(0x6200, handler(2))
    board.load(0x6300, handler(3, skip=2, pop_error=True))    # skip `int 0x31`
    for index, vector in enumerate((ABSENT, 0x32, 0x0D, 0x33), start=4):
        board.load(HANDLERS[vector], handler(index))
    board.load(0x1000, PROGRAM)
    decoded = _gate(decode)
    board.cpu.gate_decoder = lambda raw: decoded(bytes(raw))
    board.pit.program(5000)
    board.boot(0x1000)
    try:
        board.run_until(lambda: board.cpu.halted or board.cpu.shutdown, 200_000, "the test program's end")
    except TimeoutError:
        pass
    counts = [board.memory.read_u32(COUNTERS + 4 * i) for i in range(8)]
    names = ["int 0x30", "divide fault (#DE)", "timer IRQ 0", "#NP from a not-present gate", "the absent gate's handler",
             "int 0x32 from CPL 3 (its gate's DPL 3)", "#GP from CPL 3's int 0x33 (its gate's DPL 0)",
             "int 0x33's own handler, from CPL 3 (its gate's DPL 0)"]
    want = [1, 1, 1, 1, 0, 1, 1, 0]
    for index in (0, 1, 2, 3, 4, 5, 7, 6):          # int 0x33's own handler before the #GP it missed
        if counts[index] != want[index]:
            events = board.trace.of("cpu.deliver", "cpu.fault", "cpu.shutdown")
            seen = "; ".join(str(e) for e in (events[:6] if index < 5 else events[-4:]))
            return (f"{names[index]}: handler ran {counts[index]} times, expected {want[index]}"
                    + (" (does dpl come from bits 6..5 of byte 5?)" if index >= 5 else "")
                    + f". The CPU saw: {seen}")
    if (error := board.memory.read_u32(GP_ERROR)) != 0x33 * 8 + 2:
        return (f"{names[6]}: the #GP's error code was {error:#x}, expected {0x33 * 8 + 2:#x} (the IDT entry "
                f"0x33, as the CPU names a gate that `int` may not use)")
    for index, (name, vector) in enumerate(zip(names[:4], HANDLERS)):
        trap, interrupts_on = vector in TRAP_GATES, bool(board.memory.read_u32(FLAGS + 4 * index))
        if interrupts_on != trap:
            return (f"{name}: its handler ran with IF {'clear' if trap else 'set'}, yet its gate is "
                    f"{'a trap' if trap else 'an interrupt'} gate (type {0xF if trap else 0xE:#x}), which "
                    f"{'leaves IF as it was (set)' if trap else 'clears IF'}: is the type bits 3..0 of byte 5?")
    return None


CHECKS = [("decodes gates of every shape", 1, check_decoding),
          ("the CPU delivers interrupts through it", 2, check_delivery)]
FUNCTION = "decode_gate"
