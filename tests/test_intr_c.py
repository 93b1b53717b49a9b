"""The interrupt hook in C (intr.c) is the Python's (CPU._on_interrupt), on real machines.

Each case runs the same x86 twice: once with intr.c finishing what it can, once with it
handing every interrupt to the Python hook (its `off`, as while a learner's gate decoder is
plugged in), and compares what the machine then holds: every register (the hidden segment
state too), every byte of RAM, the whole trace (times included), the CPU's counters and what
the run raised. And each checks which path took it, so a case meant for C is not quietly
the Python's."""
import pytest

from vmkit.hw.x86 import encode_gate
from test_delivery_c import machine, state, CONTEXT, HANDLER, IDT, STACK0

pytestmark = pytest.mark.needs_c("the C interrupt hook's own tests")

IRETD = b"\xcf"


def run(c_path, setup, code, instructions=40, handler=None, gates=()):
    board = machine(**setup)
    cpu = board.cpu
    for vector, gate in gates:
        board.memory.write(IDT + 8 * vector, encode_gate(*gate))
    if handler is not None:
        board.memory.write(HANDLER, handler)
    board.memory.write(CONTEXT, code)
    intr = cpu._intr
    intr.off = not c_path
    before = intr.in_c, intr.to_python
    try:
        board.run(instructions)
        outcome = None
    except Exception as e:                   # the same failure both ways
        outcome = (type(e).__name__, str(e))
    got = state(board), outcome, cpu.c_deliveries
    board.close()
    return got, (intr.in_c - before[0], intr.to_python - before[1])


INT_80, INT_82, INT_86 = b"\xcd\x80", b"\xcd\x82", b"\xcd\x86"
CLI, HLT = b"\xfa", b"\xf4"
LOAD_DS_33 = b"\x66\xb8\x33\x00\x8e\xd8"    # mov ax, 0x33; mov ds, ax: #GP(0x30)
OUT_LINE = b"\xb0A\x66\xba\xf8\x03\xee\xb0\n\xee"   # mov al,'A'; mov dx,0x3f8; out dx,al; mov al,10; out

# (name, setup, code, handler, gates, the calls C finishes, the calls it hands to Python)
CASES = [
    ("int from CPL 3", {"cpl": 3}, INT_80, None, (), 1, 0),
    ("int from CPL 1", {"cpl": 1}, INT_80, None, (), 1, 0),
    ("int3 through a DPL 3 gate", {"cpl": 3}, b"\xcc", None, ((3, (HANDLER, 0x08, 0xE, 3, True)),), 1, 0),
    ("int 13 is an int, not a #GP", {"cpl": 3}, b"\xcd\x0d", None, ((13, (HANDLER, 0x08, 0xE, 3, True)),), 1, 0),
    ("refused int: its #GP delivered in the same call", {"cpl": 3}, INT_82, None, (), 1, 0),
    ("refused int from CPL 1", {"cpl": 1}, INT_82, None, (), 1, 0),
    ("cli at CPL 3: #GP(0)", {"cpl": 3}, CLI, None, (), 1, 0),
    ("hlt at CPL 1: #GP(0)", {"cpl": 1}, HLT, None, (), 1, 0),
    ("a bad selector: #GP with its error code", {"cpl": 0}, LOAD_DS_33, None, (), 1, 0),
    ("gate not present: declined, the Python's", {"cpl": 3}, INT_86, None, (), 0, 1),
    ("vector past the IDT's limit: declined", {"cpl": 3}, b"\xcd\x95", None, (), 0, 1),
    ("#GP through an empty gate: declined, #DF, triple fault", {"cpl": 3}, CLI, None,
     ((13, (0, 0, 0, 0, False)),), 0, 1),
    ("refused, its #GP declined: the Python's", {"cpl": 3, "tr": (0x28, 0x3100, 10, 0x8B)}, INT_82,
     None, (), 0, 1),
    ("a register load that fails after the push", {"cpl": 3, "tss": (STACK0, 0x08)}, INT_80, None, (), 0, 1),
    ("many in one run, a serial line between them", {"cpl": 0}, INT_80 * 2 + OUT_LINE + INT_80 + INT_82
     + b"\xeb\xfe", IRETD, ((0x82, (HANDLER, 0x08, 0xE, 0, True)),), 4, 0),
    ("twenty in one run: more than intr.c keeps (the Python takes the 17th)", {"cpl": 0},
     INT_80 * 20 + b"\xeb\xfe", IRETD, (), 19, 1),
]


@pytest.mark.parametrize("name, setup, code, handler, gates, in_c, to_python", CASES, ids=[c[0] for c in CASES])
def test_c_and_python_hooks_leave_the_same_machine(name, setup, code, handler, gates, in_c, to_python):
    fast, took = run(True, setup, code, handler=handler, gates=gates)
    slow, took_slow = run(False, setup, code, handler=handler, gates=gates)
    assert took == (in_c, to_python)
    assert took_slow[0] == 0
    for part, a, b in zip(("machine", "outcome", "C delivery counts"), fast, slow):
        assert a == b, part


def test_a_learners_gate_decoder_turns_the_c_hook_off():
    from vmkit.hw.x86 import decode_gate
    board = machine(cpl=3)
    cpu = board.cpu
    cpu.gate_decoder = lambda raw: decode_gate(raw)
    board.memory.write(CONTEXT, INT_80 + b"\xeb\xfe")
    board.run(5)
    assert cpu._intr.in_c == 0 and cpu._intr.to_python == 1
    assert [e.kind for e in board.trace.events][-1] == "cpu.deliver"
    cpu.gate_decoder = decode_gate
    assert not cpu._intr.off


def _teaching_run(c_path):
    """The bench's teaching run (a displaced COS and two busy VMs, a 10,000-instruction tick):
    its COS's privileged instructions and the VMs' int3 fault through the kernel's and the
    monitors' IDTs hundreds of times."""
    import hashlib
    from vmkit.lessons import takeover
    from vmkit.vmm import guests
    board, cos, loader = takeover.takeover(timer_period=10_000, vm_tick=None)
    kernel = loader.kernel
    for i in range(2):
        kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}", cpu=0)
    board.run(20_000)
    for cpu in board.cpus:
        cpu._intr.off = not c_path
    mark, took = board.trace.mark(), [cpu._intr.in_c for cpu in board.cpus]
    board.run(300_000)
    cpu = board.cpu
    got = ([str(e) for e in board.trace.events[mark:]], cpu.state(), cpu.delivered, cpu.c_deliveries,
           hashlib.sha1(bytes(board.memory.buffer)).hexdigest())
    took = [cpu._intr.in_c - t for cpu, t in zip(board.cpus, took)]
    board.close()
    return got, took


def test_the_teaching_run_is_the_same_with_the_c_hook():
    fast, took = _teaching_run(True)
    slow, took_slow = _teaching_run(False)
    assert took[0] > 50 and took_slow == [0] * len(took_slow)
    assert sum(e.count("cpu.fault") for e in fast[0]) > 50
    for part, a, b in zip(("trace", "registers", "delivered", "C delivery counts", "RAM"), fast, slow):
        assert a == b, part
