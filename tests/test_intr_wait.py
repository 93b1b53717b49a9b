"""An interrupt that waits on IF: taken at the first instruction boundary where
IF is set, as on the INTR pin, without stepping the CPU one instruction per run
for as long as IF stays clear (a kernel looping with IF clear after refusing a
world ran ~1 instruction per board.run iteration: 675k iterations, 24 s)."""
import pytest

from vmkit.hw.asm import assemble
from vmkit.hw.board import Board
from conftest import write_idt, u32, IDT_A
from test_board import PIC_INIT

HOLD = 200_000
START_TIMER = PIC_INIT + """
    mov al, 0xfe            ; only IRQ 0
    out 0x21, al
    mov al, 0x34            ; PIT channel 0, lo/hi, mode 2
    out 0x43, al
    mov ax, 0xffff           ; a tick every 65535 instructions
    out 0x40, al
    mov al, ah
    out 0x40, al
    mov ecx, {hold}
hold: loop hold             ; IF clear: the timer's request waits
{enable}
after: inc dword ptr [0x5004]
next: jmp next
"""
# the handler records where it interrupted (the return EIP) and when
HANDLER = "mov eax, [esp]\nmov [0x5008], eax\ninc dword ptr [0x5000]\nmov al, 0x20\nout 0x20, al\nhlt"


def waiting_board(enable):
    b = Board()
    b.boot(0x1000)
    b.cpu["idtr"] = write_idt(b, IDT_A, {0x20: 0x6000})
    b.load(0x6000, HANDLER)
    b.load(0x1000, START_TIMER.format(hold=HOLD, enable=enable))
    runs = []
    counter_run = b.cpu.counter.run
    b.cpu.counter.run = lambda *a: runs.append(a) or counter_run(*a)
    return b, runs


def label(name, enable):
    """The address of `name:` in the program: the length of the code before it."""
    source = START_TIMER.format(hold=HOLD, enable=enable)
    return 0x1000 + len(assemble(source[:source.index(f"\n{name}:")], 0x1000))


@pytest.mark.parametrize("enable, interrupted", [
    ("sti", "next"),            # sti's shadow: not before the instruction after it
    ("pushfd\nor dword ptr [esp], 0x200\npopfd", "after"),   # popfd: at the next boundary
])
def test_a_waiting_interrupt_is_taken_where_if_is_set_in_few_runs(enable, interrupted):
    b, runs = waiting_board(enable)
    b.run(2 * HOLD + 10_000)
    assert u32(b, 0x5000) == 1 and b.cpu.halted        # taken once, in the handler's hlt
    assert u32(b, 0x5004) == (1 if interrupted == "next" else 0)
    assert u32(b, 0x5008) == label(interrupted, enable)
    # 2 * HOLD instructions with the request waiting: a handful of runs, not one per instruction
    assert len(runs) < 20, len(runs)
