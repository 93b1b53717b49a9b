"""Claims 12-15, 27, 33-36, 45 (part 1, one CPU): VMs through VMMs, worlds, the world switch."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.kernel import layout, switch
from vmkit.kernel.worlds import VMError
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests

VM_MEMORY = 0x8000


def displaced(timer_period=2000, quantum=2, work_length=None):
    board, cos, loader = takeover(timer_period=timer_period)
    kernel = loader.kernel
    assert kernel is not None
    kernel.worlds.quantum = quantum
    if work_length is not None:        # the kernel's own work per 4th tick, shorter than 4 ticks
        board.memory.write_u32(kernel.base + layout.WORK_LENGTH, work_length)
    return board, cos, kernel


def console_vm(kernel, name):
    return kernel.install_vm(lambda base: guests.console(base, name), VM_MEMORY, name)


def lines(world):
    return bytes(world.vmm.console).decode().splitlines()


def expected_lines(name, n):
    return [f"hello from {name}"] + [f"{name} {chr(97 + i % 26)}" for i in range(n)]


def test_two_vms_and_the_cos_all_make_progress():
    board, cos, kernel = displaced()
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    ticks = cos.ticks()
    board.run(1_000_000)
    first = {w.name: len(lines(w)) for w in (vm1, vm2)}
    cos_mid = cos.ticks()
    board.run(1_000_000)
    for w in (vm1, vm2):
        got = lines(w)
        assert first[w.name] >= 10 and len(got) > first[w.name] + 10, got[-3:]
        assert got == expected_lines(w.name, len(got) - 1)
        assert w.state != "crashed"
    assert ticks < cos_mid < cos.ticks()
    assert "cos: tick" in cos.console()
    names = [(e["frm"], e["to"]) for e in board.trace.of("switch.begin")]
    assert {"cos", "vm1", "vm2"} <= {n for pair in names for n in pair}
    worlds = kernel.worlds
    assert all(worlds.switches_of(w) > 20 and worlds.instructions_of(w) > 0 for w in worlds.all)
    # the guests' privileged instructions trapped to their VMMs, at CPL 3
    assert vm1.vmm.vcpu.injected > 10 and vm1.vmm.vcpu.idt_base == vm1.region[0] + guests.IDT
    assert {e["insn"] for e in board.trace.of("vmm.emulate")} >= {"lidt", "sti", "hlt"}


def test_the_switch_is_the_claimed_sequence_of_steps():
    board, cos, kernel = displaced()
    console_vm(kernel, "vm1")
    board.run(300_000)
    steps = [e.kind for e in board.trace.of("switch.begin", "switch.save", "switch.cli", "switch.check",
                                            "switch.load", "switch.start", "switch.sti")]
    assert len(steps) >= 14 and len(steps) % 7 == 0
    assert steps[:7] == ["switch.begin", "switch.save", "switch.cli", "switch.check",
                         "switch.load", "switch.start", "switch.sti"]
    saved = board.trace.of("switch.save")[-1]
    area = switch.read_area(board.memory, saved["area"])
    assert area["eip"] == saved["eip"] and switch.area_intact(board.memory, saved["area"])


def test_world_state_survives_thousands_of_switches():
    board, cos, kernel = displaced(timer_period=1000, quantum=1, work_length=200)
    n = 32_000
    vm = kernel.install_vm(lambda base: guests.checksum(base, n), VM_MEMORY, "sum")
    for _ in range(20):
        board.run(200_000)
        if vm.vmm.console:
            break
    assert bytes(vm.vmm.console).decode() == guests.checksum_expected(n)
    assert sum(kernel.worlds.switches_of(w) for w in kernel.worlds.all) >= 1500
    assert kernel.worlds.switches_of(vm) >= 700


def _second_vm_switched_out(board, kernel):
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    board.run(300_000)
    victim = vm1 if kernel.worlds.current is not vm1 else vm2
    return vm1, vm2, victim, (vm2 if victim is vm1 else vm1)


@pytest.mark.parametrize("item, flip", [("eflags", 0x200), ("ldtr.sel", 0x50), ("eip", 4)])
def test_a_corrupted_save_area_is_refused(item, flip):
    board, cos, kernel = displaced()
    vm1, vm2, victim, other = _second_vm_switched_out(board, kernel)
    at = victim.area + switch.OFFSET[item]
    board.memory.write_u32(at, board.memory.read_u32(at) ^ flip)
    before, ticks = len(lines(other)), cos.ticks()
    board.run(300_000)
    assert victim.state == "crashed" and "changed since it was stored" in victim.fault
    assert any(not e["ok"] for e in board.trace.of("switch.check"))
    assert len(lines(other)) > before + 3 and cos.ticks() > ticks


@pytest.mark.parametrize("item", ["ldtr", "eflags", "tr", "ds"])
def test_a_switch_that_loads_one_item_wrong_is_caught(item):
    board, cos, kernel = displaced()
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    board.run(200_000)

    def faulty(frame, cpu, state):          # a learner's switch that gets one item of claim 15 wrong
        switch.install(frame, cpu, state)
        if state["cs"] & 3 != 3:
            return
        if item == "ldtr":
            cpu["ldtr"] = (0, 0x1000, 0xFF, 0)
        elif item == "tr":
            cpu["tr"] = (layout.KERNEL_TSS_SEL, kernel.base + layout.TSS, 0x2069, cpu["tr"][3])
        elif item == "ds":
            cpu["ds"] = layout.COS_DATA_SEL
        else:
            frame.eflags ^= 0x800
    kernel.worlds.loader = faulty
    ticks = cos.ticks()
    board.run(300_000)
    wrong = [e for e in board.trace.of("switch.load") if not e["ok"]]
    assert wrong and item in wrong[0]["wrong"]
    assert vm1.state == vm2.state == "crashed" and item in vm1.fault
    assert cos.ticks() > ticks + 20 and cpu_in_cos_or_kernel(board)


def cpu_in_cos_or_kernel(board):
    return board.cpu.cpl in (0, 1)


def test_a_guest_that_executes_ud2_stops_only_its_vm():
    board, cos, kernel = displaced()
    good = console_vm(kernel, "vm1")
    bad = kernel.install_vm(lambda base: guests.crasher(base, "bad"), VM_MEMORY, "bad")
    board.run(300_000)
    assert bad.state == "crashed" and "vector 0x6" in bad.fault
    assert lines(bad) == ["bad about to crash"]
    assert board.trace.of("vm.crashed")[0]["vm"] == "bad"
    before, ticks = len(lines(good)), cos.ticks()
    board.run(500_000)
    assert len(lines(good)) > before + 5 and cos.ticks() > ticks + 50
    assert not any(e["to"] == "bad" for e in board.trace.of("switch.begin")[-50:])
    assert board.cpu.shutdown is None


def test_asking_for_more_memory_than_is_left_is_a_clear_error():
    board, cos, kernel = displaced()
    vm = console_vm(kernel, "vm1")
    assert board.memory.read_u32(cos_layout.RAM_TOP) == vm.region[0]     # the COS cannot hand it out
    with pytest.raises(VMError, match=r"does not fit: \d+ bytes of memory are left"):
        kernel.install_vm(lambda base: guests.console(base, "big"), board.memory.size)
    assert len(kernel.worlds.all) == 2 and board.memory.read_u32(cos_layout.RAM_TOP) == vm.region[0]
    board.run(300_000)
    assert len(lines(vm)) > 3


def test_turns_in_ticks_give_proportional_shares():
    board, cos, kernel = displaced(quantum=1)
    busy = [kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM_MEMORY, name)
            for name in ("heavy", "light")]
    busy[0].quantum = 3
    board.run(1_500_000)
    heavy, light = (kernel.worlds.instructions_of(w) for w in busy)
    assert light > 50_000 and 2.5 < heavy / light < 3.5, (heavy, light)
    assert cos.ticks() > 50          # the COS keeps its turns (the kernel's work is not charged to it)
