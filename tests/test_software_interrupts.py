"""`int n` is a software interrupt whatever n is: `int 8` is not a double fault.

From a VM's guest at CPL 3 every vector 0..31 meets a DPL 0 gate of the
kernel's IDT and becomes #GP(n*8+2) into the kernel: its VMM crashes that VM
only, and no CPU stops. From the COS at CPL 1 the #GP is reflected into the
COS's own IDT, as the architecture says for a gate it may not use. The
kernel's gates for the vectors that come with an error code keep DPL 0, so
no `int n` from outside the kernel can reach a stub that expects the CPU's
error code on the stack.
"""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.x86 import ERROR_CODE_VECTORS, decode_gate, GP
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests

VM = 0x8000


def lines(world):
    return bytes(world.vmm.console).decode().splitlines()


def int_n(vector):
    """Greets, then the 2-byte `int n` (CD n), then would say "after"."""
    def guest(base):
        return (guests._prologue(base) + guests._print("before\n") + f"\n        .byte 0xcd, {vector}\n"
                + guests._print("after\n") + "\nstop:   hlt\n        jmp stop\n")
    return guest


def _machine(cpus):
    # vm_tick=None: console VMs print a line per tick; "goes on" is read as lines within 200,000
    # instructions, so every world ticks at the 2,000-instruction PIT period
    board, cos, loader = takeover(timer_period=2000, cpus=cpus, vm_tick=None)
    kernel = loader.kernel
    assert kernel is not None
    return board, cos, kernel


@pytest.mark.parametrize("cpus", [1, 2])
@pytest.mark.parametrize("vector", range(32))
def test_int_n_from_a_vm_crashes_only_that_vm(cpus, vector):
    board, cos, kernel = _machine(cpus)
    where = cpus - 1                                   # on two CPUs: a VM of CPU 1
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other", cpu=where)
    bad = kernel.install_vm(int_n(vector), VM, "bad", cpu=where)
    board.run(50_000)                                  # (it crashes within its first 5,000)
    assert [c.shutdown for c in board.cpus] == [None] * cpus
    assert bad.state == "crashed" and lines(bad) == ["before"]
    # the fault its CPU took just before the VM was stopped (a guest address is not a host one:
    # the COS's faults at the same numbers are told apart by when they happen, not where)
    events = board.trace.of("cpu.fault", "vm.crashed")
    crashed = next(i for i, e in enumerate(events) if e.kind == "vm.crashed" and e["vm"] == "bad")
    gp = [e for e in events[:crashed] if e.kind == "cpu.fault" and e.cpu == where]
    assert bad.vmm.owns(gp[-1]["eip"])
    assert [(e["vector"], e["error"]) for e in gp][-1:] == [(GP, vector * 8 + 2)]
    assert not [e for e in board.trace.of("cpu.deliver") if e["vector"] == 8 and e["kind"] != "int"]
    # everyone else goes on: the other VM on the same CPU, the COS, CPU 1's timer
    other_lines, ticks, mark = len(lines(other)), cos.ticks(), board.trace.mark()
    board.run(200_000)                                 # (~12 lines on 1 CPU, ~100 on 2)
    assert other.state != "crashed" and len(lines(other)) > other_lines + 5
    assert cos.ticks() > ticks
    assert {e.cpu for e in board.trace.since(mark, "cpu.deliver")} == set(range(cpus))


@pytest.mark.parametrize("cpus", [1, 2])
def test_int_8_from_the_cos_is_a_gp_reflected_to_the_cos(cpus):
    board, cos, kernel = _machine(cpus)
    vm = kernel.install_vm(lambda base: guests.console(base, "vm"), VM, "vm", cpu=cpus - 1)
    cos.put_module(cos.make_module("init:\n.byte 0xcd, 8\nret"))
    cos.type("insmod\n")
    board.run(300_000)
    assert [c.shutdown for c in board.cpus] == [None] * cpus
    assert [(e["vector"]) for e in board.trace.of("kernel.reflect")] == [GP]
    # the COS's own #GP handler ran, with the architectural error code
    m = board.memory
    assert m.read_u32(cos_layout.FAULTS) == 1
    assert (m.read_u32(cos_layout.FAULT_VECTOR), m.read_u32(cos_layout.FAULT_ERROR)) == (GP, 8 * 8 + 2)
    seen = len(lines(vm))
    board.run(300_000)
    assert len(lines(vm)) > seen + 5                  # the machine goes on; only the COS stopped


def test_the_kernel_gates_of_error_code_vectors_admit_no_int_from_outside_the_kernel():
    """A stub for 8, 10-14 or 17 expects the CPU's error code: only the kernel
    (CPL 0, which never executes `int` on them) may reach it by `int`."""
    board, cos, kernel = _machine(1)
    _, idt, _, _ = board.cpu["idtr"]
    for v in ERROR_CODE_VECTORS:
        assert decode_gate(board.memory.read(idt + 8 * v, 8)).dpl == 0
