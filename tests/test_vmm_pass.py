"""The VMM's entry passed by in C (hw/pass_by.c, vmm/region.py: pass_interrupts): an interrupt
taken while a VM runs goes on to the kernel's dispatcher without a stop at vmm_entry, where
the Python VMM would only return; a guest's fault, a VM's first entry and an entry during a
switch still reach the Python VMM, and the machine does exactly what it did with every stop."""
import hashlib

import pytest

from vmkit.hw import counter
from vmkit.hw.pass_by import PassBy
from vmkit.kernel import layout, switch
from vmkit.kernel.frame import Frame
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests, region
from vmkit.vmm.vmm import VMM

pytestmark = pytest.mark.needs_c("the counter's pass, made in C")

EXCEPTIONS = region.EXCEPTIONS
REGISTERS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags",
             "cs", "ds", "ss", "cr0", "cr3")


def busy(cpus=1, instructions=400_000, vm_tick=None, guest=None):
    """The teaching-tick machine (the COS's 10,000-instruction tick, two busy VMs per CPU),
    run for `instructions` after the VMs are installed."""
    board, cos, loader = takeover(timer_period=10_000, cpus=cpus, vm_tick=vm_tick)
    kernel = loader.kernel
    vms = [kernel.install_vm(guest or (lambda base: guests.checksum(base, 10**9)), 64 << 10, f"busy{i}",
                             cpu=i % cpus) for i in range(2 * cpus)]
    board.run(instructions)
    return board, kernel, vms


def watching(monkeypatch):
    """Every call of the Python VMM at vmm_entry: (the frame's vector, the VM's VMM_ENTRIES
    word, the CPU's switch in flight), in order. (The kernel calls monitor.entered at each
    stop; the pass was set up for the VMM's own `entered`, which this one calls.)"""
    calls = []

    def entered(kernel, cpu):
        p = kernel.worlds.cpus[cpu.index]
        vector = Frame(kernel.memory, cpu["esp"]).vector
        word = (kernel.memory.read_u32(p.current.vmm_region + layout.VMM_ENTRIES)
                if p.current.kind == "vm" else None)
        calls.append((vector, word, p.switching))
        region.entered(kernel, cpu)
    monkeypatch.setattr(VMM, "entered", staticmethod(entered))
    return calls


def machine_state(board):
    """What the machine is now: its trace, each CPU's registers, its memory (a digest)."""
    return ([str(e) for e in board.trace.events],
            [cpu.read(*REGISTERS) for cpu in board.cpus],
            hashlib.sha256(board.memory.read(0, board.memory.size)).hexdigest())


def run_watched(monkeypatch, passing, **options):
    monkeypatch.setattr(PassBy, "enabled", passing)
    calls = []
    original = region.pass_interrupts

    def pass_then_watch(kernel, hooks):             # the pass set up, then the calls watched
        original(kernel, hooks)
        calls.append(watching(monkeypatch))
    monkeypatch.setattr(VMM, "pass_interrupts", staticmethod(pass_then_watch))
    board, kernel, vms = busy(**options)
    passed = sum(cpu.counter.state.passed for cpu in board.cpus)
    return board, kernel, calls[0], passed


CHECKSUM = lambda base: guests.checksum(base, 10**9)   # its sti a #GP, then only interrupts
TICKED = lambda base: guests._prologue(base) + "\nspin:   jmp spin\n"   # its timer handler's iretd
                                                       # patched to int3 (a #GP: the gate's DPL is 0)


@pytest.mark.parametrize("cpus, guest", ((1, CHECKSUM), (2, CHECKSUM), (1, TICKED)))
def test_interrupts_pass_by_while_guest_faults_still_reach_the_vmm(monkeypatch, cpus, guest):
    board, kernel, calls, passed = run_watched(monkeypatch, True, cpus=cpus, guest=guest)
    reference = machine_state(board)
    monkeypatch.undo()
    board_off, _, calls_off, passed_off = run_watched(monkeypatch, False, cpus=cpus, guest=guest)
    interrupts_off = [c for c in calls_off if c[0] >= EXCEPTIONS]
    assert passed_off == 0 and len(interrupts_off) > 10 * cpus        # every one stopped before
    assert [c for c in calls if c[0] >= EXCEPTIONS] == []              # none stops now
    assert passed == len(interrupts_off)                               # each passed by instead
    faults = [c for c in calls if c[0] < EXCEPTIONS]
    assert faults == [c for c in calls_off if c[0] < EXCEPTIONS]       # every #GP and int3 still there
    assert {c[0] for c in faults} == {13} and len(faults) >= 2 * cpus
    assert machine_state(board_off) == reference                       # the same machine, to the byte


def test_the_100hz_tick_on_two_cpus_runs_the_same_with_and_without_the_pass(monkeypatch):
    from vmkit.kernel.worlds import VM_TICK
    board, _, calls, passed = run_watched(monkeypatch, True, cpus=2, vm_tick=VM_TICK, instructions=2_000_000)
    reference = machine_state(board)
    monkeypatch.undo()
    board_off, _, calls_off, _ = run_watched(monkeypatch, False, cpus=2, vm_tick=VM_TICK, instructions=2_000_000)
    assert passed > 0 and machine_state(board_off) == reference


def test_a_vms_first_entry_by_an_interrupt_still_reaches_the_vmm(monkeypatch):
    """A guest that never faults: its VMM is first entered by the timer's IRQ, which the
    Python VMM records (vmm.entered, its segments read from the CPU); the later ones pass."""
    board, kernel, calls, passed = run_watched(monkeypatch, True, guest="spin: jmp spin")
    first = board.trace.of("vmm.entered")
    assert [e["vm"] for e in first] == ["busy0", "busy1"]
    assert all(e["vector"] >= EXCEPTIONS and e["cs"] == layout.VMM_CODE_SEL for e in first)
    assert [(v, word) for v, word, _ in calls] == [(e["vector"], 1) for e in first]
    assert passed > 10


def test_an_entry_during_a_switch_still_reaches_the_vmm(monkeypatch):
    """With a switch in flight on the CPU (p.switching), an interrupt at vmm_entry stops: the
    Python VMM's decision then is not the counter's. (The switch is a stand-in, set between
    runs while the guest spins and taken back at the stop, before the VMM runs.)"""
    board, kernel, vms = busy(guest="spin: jmp spin", instructions=100_000)
    p, state = kernel.worlds.cpus[0], board.cpu.counter.state
    board.run_until(lambda: p.current.kind == "vm" and p.switching is None and board.cpu["cs"] & 3 == 3,
                    100_000, "a VM's guest running")
    assert state.pass_on == 1
    seen = []

    def entered(kernel, cpu):
        if p.switching is not None:
            seen.append((Frame(kernel.memory, cpu["esp"]).vector, cpu["cs"], state.passed))
            p.switching = None
        region.entered(kernel, cpu)
    monkeypatch.setattr(VMM, "entered", staticmethod(entered))
    p.switching = switch.Switch(p.current, p.current, "restore", None)
    assert state.pass_on == 0
    before = state.passed
    board.run_until(lambda: seen, 100_000, "an interrupt at vmm_entry during the switch")
    vector, cs, passed = seen[0]
    assert vector >= EXCEPTIONS and cs == layout.VMM_CODE_SEL and passed == before
    assert state.pass_on == 1                           # no switch: armed again
    board.run(100_000)
    assert state.passed > before and len(seen) == 1


def test_another_handler_at_vmm_entry_sees_every_interrupt():
    """A lesson's probe (or a test's watch) at vmm_entry is reached, as before: the pass is off
    while the VMM's handler is not the address's only one."""
    board, kernel, vms = busy(guest="spin: jmp spin", instructions=100_000)
    at = layout.vmm_base(kernel.base) + region.ENTRY
    seen = []
    handle = board.cpu.on_execute(at, lambda cpu: seen.append(Frame(kernel.memory, cpu["esp"]).vector))
    board.run(200_000)
    assert len(seen) > 10 and all(v >= EXCEPTIONS for v in seen)
    board.cpu.remove(handle)
    kernel.worlds.cpus[0].switching = None              # the next change arms it again
    before = board.cpu.counter.state.passed
    board.run(200_000)
    assert board.cpu.counter.state.passed > before


def test_without_the_library_every_entry_stops_and_the_machine_is_the_same(monkeypatch):
    """counter.py's twin in Python (no C compiler) never passes: the same trace and registers.
    (Not the same memory to the byte, with or without the pass: the Python path sets the
    Accessed bit of one more kernel page's entry in a VM's page table.)"""
    board, _, calls, passed = run_watched(monkeypatch, True, instructions=60_000)
    reference = machine_state(board)[:2]
    monkeypatch.undo()
    monkeypatch.setattr(counter, "_LIB", False)
    board_py, _, calls_py, passed_py = run_watched(monkeypatch, True, instructions=60_000)
    assert not board_py.cpu.counter.compiled and passed_py == 0
    assert len([c for c in calls_py if c[0] >= EXCEPTIONS]) == passed > 0
    assert machine_state(board_py)[:2] == reference
