"""Ticks per world: VM worlds at a real kernel's rate from CPU 0's local APIC, the COS at
its PIT tick, its ticks held as one pending request while a VM runs (claim 10)."""
import pytest

from vmkit.hw.clock import VIRTUAL_HZ
from vmkit.kernel.smp import TIMER_VECTOR
from vmkit.kernel.worlds import VM_TICK
from vmkit.lessons import takeover
from vmkit.hw.board import Board
from vmkit.loader import Loader
from vmkit.vmm import guests


def busy_machine():
    """The default machine: VM worlds at a real kernel's tick without asking."""
    board, cos, loader = takeover.takeover(timer_period=10_000)
    k = loader.kernel
    vms = [k.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}") for i in range(2)]
    return board, k, vms


def test_a_vm_tick_is_100_hz_of_the_virtual_clock():
    assert VM_TICK == VIRTUAL_HZ // 100 == 1_000_000


def test_a_vm_on_cpu0_is_ticked_by_cpu0s_local_apic_with_the_pit_line_masked():
    board, k, vms = busy_machine()
    cpu, lapic = board.cpus[0], board.cpus[0].lapic
    board.run_until(lambda: k.worlds.current.kind == "vm" and cpu.cpl == 3, 1_000_000, "a VM's turn")
    assert board.ports.read(0x21, 1) & 1                       # IRQ 0 masked at the real 8259A
    assert lapic.initial == VM_TICK and lapic.lvt_timer & 0xFF == TIMER_VECTOR
    mark, first = board.trace.mark(), k.worlds.current
    board.run_until(lambda: k.worlds.current is not first and cpu.cpl == 3, 3_000_000, "the next turn")
    ticks = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == TIMER_VECTOR]
    assert ticks and {e["cpl"] for e in ticks} == {"3->0"}    # the VM interrupted by CPU 0's own timer
    turn = k.worlds.instructions_of(first)
    assert turn >= k.worlds.quantum * VM_TICK - 100_000        # a turn of two VM ticks, not two PIT ticks


def test_the_cos_ticks_wait_as_one_pending_request_and_come_when_it_runs():
    board, k, vms = busy_machine()
    cpu = board.cpus[0]
    board.run_until(lambda: k.worlds.current is vms[0] and cpu.cpl == 3, 1_000_000, "busy0's turn")
    cos_ticks, pit_ticks, mark = k.cos_ticks(), board.pit.ticks, board.trace.mark()
    board.run_until(lambda: k.worlds.current is vms[1] and cpu.cpl == 3, 3_000_000, "busy1's turn")
    assert board.pic.requested(0) and board.ports.read(0x21, 1) & 1   # one request waits, masked
    board.slice = 1000                                          # the COS's turn is one tick: look often
    board.run_until(lambda: k.worlds.current.kind == "cos", 3_000_000, "the COS's turn")
    assert board.pit.ticks - pit_ticks >= 390                   # 4M instructions of 10,000-instruction ticks ...
    raised = [e for e in board.trace.since(mark, "irq.raise") if e["line"] == 0]
    assert len(raised) <= 2                                     # ... raised the masked line once, not 400 times
    assert not board.ports.read(0x21, 1) & 1 and cpu.lapic.initial == 0   # the COS's tick is the PIT's again
    assert k.cos_ticks() == cos_ticks                           # not yet: claim 10, when the COS runs
    board.run(15_000)                                           # (the kernel's due work, then the COS)
    # its handler ran for what waited: the tick queued in its virtual PIC before the VMs ran
    # and the one the 8259A's IRR held for 400 periods; not 400 ticks
    assert 1 <= k.cos_ticks() - cos_ticks <= 2


def test_cpu1_starts_with_the_vm_tick_by_default_and_the_pit_period_when_a_lesson_asks():
    for vm_tick, period in ((VM_TICK, VM_TICK), (None, 2000)):
        board, cos, loader = takeover.takeover(timer_period=2000, cpus=2, vm_tick=vm_tick)
        lapic = board.cpus[1].lapic
        assert lapic.initial == period and lapic.lvt_timer & 0xFF == TIMER_VECTOR
        assert loader.kernel.worlds.vm_tick == vm_tick
        vm = loader.kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, "busy", cpu=1)
        mark = board.trace.mark()
        board.run(3 * period + 50_000)
        ticks = [e for e in board.trace.since(mark, "cpu.deliver")
                 if e.cpu == 1 and e["vector"] == TIMER_VECTOR]
        assert 2 <= len(ticks) <= 3 + 50_000 // period        # CPU 1's own timer, at that period


@pytest.mark.parametrize("bad", [0, -5, 1.5, "fast", True])
def test_a_vm_tick_that_is_not_a_positive_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="a VM tick is a positive number of instructions"):
        Loader(Board(), vm_tick=bad)
