"""The machines notebook 00 pokes: a program to single-step, and a CPU
that waits for interrupts with two IDTs in memory.

Everything here is x86 code and tables in emulated memory; the notebook
only calls these builders and the widgets.
"""
import pathlib
import tempfile

from vmkit.hw.board import Board, KERNEL_CS
from vmkit.hw.disk import DiskImage
from vmkit.hw.nic import Wire
from vmkit.hw.x86 import encode_gate



def full_board(sectors=2048):
    """Every device fitted: two NICs on one wire, a SCSI disk in a scratch file."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="vmkit-")) / "disk.img"
    board = Board(nics=2, disk=DiskImage.create(path, sectors))
    Wire(board.nics[0], board.nics[1])
    return board


FIB_ARRAY = 0x5000

STEP_PROGRAM = f"""
start:  mov edi, {FIB_ARRAY:#x}     ; where the numbers go
        xor eax, eax                ; fib(0)
        mov ebx, 1                  ; fib(1)
        mov ecx, 12                 ; how many
next:   mov [edi], eax
        add edi, 4
        xadd eax, ebx               ; (eax, ebx) <- (eax + ebx, eax)
        loop next
        hlt
"""


def stepping_machine(entry=0x1000):
    """A board with the Fibonacci program loaded and booted at `entry`."""
    board = Board()
    board.load(entry, STEP_PROGRAM)
    board.boot(entry)
    return board


IDT_A, IDT_B = 0x2000, 0x2800
COUNTS_A, COUNTS_B = 0x5000, 0x5100          # one counter per IRQ line, per IDT's handlers
MAILBOX = 0x5200                             # the idle loop's "which IDT" request: 1 = A, 2 = B
HANDLERS_A, HANDLERS_B = 0x6000, 0x7000
IRQ_BASE = 0x20                              # the PIC is remapped to vectors 0x20..0x2F


STUB_SIZE = 32


def _stub(line, counts):
    """The handler of one IRQ line: count, EOI (both PICs for slave lines), iretd."""
    eoi = "mov al, 0x20\nout 0xa0, al\n" if line >= 8 else ""
    return (f"push eax\ninc dword ptr [{counts + 4 * line:#x}]\n{eoi}"
            "mov al, 0x20\nout 0x20, al\npop eax\niretd")


IDLE_PROGRAM = f"""
        mov al, 0x11                ; ICW1: initialise both 8259As
        out 0x20, al
        out 0xa0, al
        mov al, {IRQ_BASE:#x}       ; ICW2: master vectors 0x20..0x27
        out 0x21, al
        mov al, {IRQ_BASE + 8:#x}   ;       slave vectors 0x28..0x2f
        out 0xa1, al
        mov al, 4                   ; ICW3: slave on line 2
        out 0x21, al
        mov al, 2
        out 0xa1, al
        mov al, 1                   ; ICW4: 8086 mode
        out 0x21, al
        out 0xa1, al
        xor al, al                  ; OCW1: unmask every line
        out 0x21, al
        out 0xa1, al
        lidt [idt_a]
        sti
idle:   mov eax, [{MAILBOX:#x}]       ; a request from outside? (1 = IDT A, 2 = IDT B)
        cmp eax, 1
        jne not_a
        lidt [idt_a]
        mov dword ptr [{MAILBOX:#x}], 0   ; done: clear the request only once acted on
not_a:  cmp eax, 2
        jne wait
        lidt [idt_b]
        mov dword ptr [{MAILBOX:#x}], 0
wait:   pause
        jmp idle                    ; busy: interrupts arrive between instructions
idt_a:  .word 0x7ff
        .long {IDT_A:#x}
idt_b:  .word 0x7ff
        .long {IDT_B:#x}
"""


def two_idt_machine(entry=0x1000):
    """A CPU idling with IDT A loaded; IDT B points the same IRQs elsewhere."""
    board = Board()
    for idt, handlers, counts in ((IDT_A, HANDLERS_A, COUNTS_A), (IDT_B, HANDLERS_B, COUNTS_B)):
        for line in range(16):
            stub = handlers + line * STUB_SIZE
            board.load(stub, _stub(line, counts))
            board.memory.write(idt + (IRQ_BASE + line) * 8, encode_gate(stub, KERNEL_CS))
    board.load(entry, IDLE_PROGRAM)
    board.boot(entry)
    board.run(200)                       # let it program the PIC and start idling
    return board


def request_idt(board, which):
    """Ask the idle loop to load IDT 'A' or 'B': the CPU runs `lidt` itself."""
    if which not in ("A", "B"):
        raise ValueError(f"the machine has IDT 'A' and IDT 'B', not {which!r}")
    board.memory.write_u32(MAILBOX, {"A": 1, "B": 2}[which])
    board.run(200)


def raise_irq(board, line):
    """A device pulses `line`; run long enough for the CPU to take it."""
    board.pic.pulse(line)
    board.run(200)


def counts(board):
    """{line: (times IDT A's handler ran, times IDT B's handler ran)}."""
    read = board.memory.read_u32
    return {line: (read(COUNTS_A + 4 * line), read(COUNTS_B + 4 * line)) for line in range(16)}


def irq_with_decoder(decode, line=1):
    """The two-IDT machine with `decode` as the CPU's gate decoder; raise `line`.

    Returns the board, so a notebook can show what the CPU did with it."""
    if not callable(decode):
        raise TypeError(f"decode must be a function of 8 gate bytes, not {decode!r:.40}")
    board = two_idt_machine()
    board.cpu.gate_decoder = _checked(decode)
    raise_irq(board, line)
    return board


def _checked(decode):
    """`decode`, whose answer must be what the CPU reads from a gate: a value with
    offset, selector, type, dpl and present (like x86.decode_gate's)."""
    def gate(raw):
        g = decode(raw)
        missing = [f for f in ("offset", "selector", "type", "dpl", "present") if not hasattr(g, f)]
        if missing:
            raise TypeError(f"{getattr(decode, '__name__', 'decode')} returned {g!r:.60}, which has no "
                            f"{', '.join(missing)}: return a Gate as x86.decode_gate does")
        return g
    return gate


def registers_text(cpu, names=("eax", "ebx", "ecx", "edi", "eip")):
    return "  ".join(f"{n}={cpu[n]:#x}" for n in names)
