"""Claims 12-15, 27, 33-36, 45 (part 1, one CPU): VMs through VMMs, worlds, the world switch."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.x86 import CR0_PG, EFLAGS_IF, TSS_AVAILABLE, TSS_BUSY, decode_segment, encode_segment
from vmkit.kernel import image, layout, save_area, smp, switch_x86
from vmkit.lessons import worlds as worlds_lesson
from vmkit.kernel.worlds import VMError
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests

VM_MEMORY = 0x8000


def displaced(timer_period=2000, quantum=2, work_length=None, **options):
    board, cos, loader = takeover(timer_period=timer_period, **options)
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
    assert vm1.vmm.vcpu.injected > 10 and vm1.vmm.vcpu.idt_base == guests.IDT   # a guest address
    assert {e["insn"] for e in board.trace.of("vmm.emulate")} >= {"lidt", "sti", "hlt"}


def test_the_switch_is_the_claimed_sequence_of_steps():
    """Claim 15's order, seen in the machine at each step, not in the events' order:
    the outgoing world's state lands in its save area (save) while the CPU still runs
    in the COS's address space; the next world's area is intact (check) before the CPU
    holds anything of it; the CPU holds its tables and CR3 from the load on, the frame
    its EIP and CS from the start, and its IF from the sti."""
    board, cos, kernel = displaced()
    vm = console_vm(kernel, "vm1")
    steps = {s.kind: s for s in worlds_lesson.record_switch(board, kernel, "cos", "vm1")}
    assert set(steps) == set(worlds_lesson.STEPS)
    cr3 = {kind: s.registers["cr3"] for kind, s in steps.items()}
    loaded = ("switch.load", "switch.start", "switch.sti")
    assert all(cr3[k] == 0 for k in worlds_lesson.STEPS if k not in loaded)      # the COS: no paging
    assert all(cr3[k] == vm.cr3 for k in loaded)                                  # vm1's, from the load
    begin, save = steps["switch.begin"], steps["switch.save"]
    stored = save_area.decode_area(save.areas["cos"])
    kept = [n for _, names in worlds_lesson.CLAIM15 for n in names]
    assert save_area.decode_area(begin.areas["cos"]) != stored                      # written by the save
    assert {n: stored[n] for n in kept} == {n: begin.world_state[n] for n in kept}
    assert not steps["switch.cli"].registers["eflags"] & EFLAGS_IF                # the CPU's IF, clear
    area = save_area.decode_area(steps["switch.check"].areas["vm1"])
    assert steps["switch.check"].registers["tr"][0] != layout.VM_TSS_SEL          # nothing of vm1 yet
    assert steps["switch.load"].registers["tr"][0] == area["tr.sel"] == layout.VM_TSS_SEL
    assert steps["switch.load"].registers["idtr"][1:3] == (area["idtr.base"], area["idtr.limit"])
    start = steps["switch.start"].world_state                                     # the frame the iretd loads
    assert (start["eip"], start["cs"]) == (area["eip"], area["cs"]) and start["cs"] & 3 == 3
    assert steps["switch.sti"].world_state["eflags"] & EFLAGS_IF
    assert save_area.area_intact(board.memory, vm.area)


def test_the_cpu_loads_the_world_with_if_clear_and_the_iretd_sets_it():
    board, cos, kernel = displaced()
    vm = console_vm(kernel, "vm1")
    first = []                                        # the CPU as the VM's first instruction finds it
    board.cpu.on_execute(0, lambda cpu: first or first.append(cpu.state()))
    steps = {s.kind: s.registers for s in worlds_lesson.record_switch(board, kernel, "cos", "vm1")}
    area = save_area.read_area(board.memory, vm.area)
    for kind in ("switch.cli", "switch.check", "switch.load"):     # exceptions disabled in the CPU
        assert not steps[kind]["eflags"] & EFLAGS_IF, kind
    at_load = steps["switch.load"]                    # what the x86 loaded, read from the CPU
    assert at_load["gdtr"][1:3] == (area["gdtr.base"], area["gdtr.limit"])
    assert at_load["idtr"][1:3] == (area["idtr.base"], area["idtr.limit"])
    assert at_load["tr"][0] == area["tr.sel"] == layout.VM_TSS_SEL and at_load["ldtr"][0] == 0
    assert at_load["cr3"] == vm.cr3 and at_load["cr0"] & CR0_PG
    assert at_load["ds"] == layout.KERNEL_DATA_SEL    # the kernel's own again; the VM's is in the frame
    assert at_load["cpl"] == 0 and steps["switch.begin"]["cr3"] == 0      # the COS ran without paging
    (regs,) = first                                   # after the stub's iretd: the VM, IF set
    assert regs["eflags"] & EFLAGS_IF and regs["cpl"] == 3 and regs["eip"] == 0
    assert regs["tr"][0] == layout.VM_TSS_SEL and regs["cr3"] == vm.cr3
    assert [regs[s] for s in ("ds", "es", "fs", "gs")] == [area[s] for s in ("ds", "es", "fs", "gs")]


def _tss_descriptors(board, kernel, gdt=None):
    """{selector: busy?} of every TSS descriptor in the kernel's GDT (or the one at `gdt`)."""
    out = {}
    for sel in range(8, smp.GDT_LIMIT, 8):
        d = decode_segment(board.memory.read((gdt or kernel.base + layout.GDT) + sel, 8))
        if not d.s and d.type in (TSS_AVAILABLE, TSS_BUSY):
            out[sel] = d.type == TSS_BUSY
    return out


def _busy_where_loaded(board, kernel):
    """Each GDT (the kernel's, each VM's own) against the CPUs whose GDTR names it:
    the busy TSS descriptors in it are exactly the ones those CPUs' TR loaded from it."""
    gdts = [kernel.base + layout.GDT] + [w.vmm_region + layout.VMM_GDT for w in kernel.worlds.all if w.kind == "vm"]
    for gdt in gdts:
        busy = {sel for sel, b in _tss_descriptors(board, kernel, gdt).items() if b}
        assert busy == {c["tr"][0] for c in board.cpus if c["gdtr"][1] == gdt}, (hex(gdt), busy)
    assert all(c["gdtr"][1] in gdts for c in board.cpus)


@pytest.mark.parametrize("cpus", [1, 2])
def test_tr_comes_from_the_gdt_and_only_loaded_tsss_are_busy(cpus):
    # vm_tick=None: VM turns in 2,000-instruction PIT ticks, so samples 50,000 apart catch each kind of world
    board, cos, kernel = displaced(cpus=cpus, vm_tick=None)
    for name in ("vm1", "vm2", "vm3"):
        console_vm(kernel, name)
    seen = set()
    for _ in range(12):
        board.run(50_000)
        loaded = {c["tr"][0] for c in board.cpus}
        seen |= loaded
        _busy_where_loaded(board, kernel)
        for c in board.cpus:                           # the hidden base and limit are the descriptor's
            sel, base, limit, _ = c["tr"]
            d = decode_segment(board.memory.read(c["gdtr"][1] + sel, 8))
            assert (base, limit) == (d.base, d.limit)
    assert seen >= {layout.KERNEL_TSS_SEL, layout.VM_TSS_SEL}


def test_tr_follows_the_gdt_descriptor_not_the_save_area():
    board, cos, kernel = displaced()
    vm = console_vm(kernel, "vm1")
    board.run(100_000)
    copy = kernel.base + layout.VM_TSS + 0x80           # the VM TSS, moved: same ESP0, new place
    board.memory.write(copy, board.memory.read(kernel.base + layout.VM_TSS, 104), code=False)
    at = vm.vmm_region + layout.VMM_GDT + layout.VM_TSS_SEL        # in the VM's own GDT
    d = decode_segment(board.memory.read(at, 8))
    board.memory.write(at, encode_segment(copy, d.limit, d.type, d.dpl, s=0, db=0, g=0), code=False)
    seen = []
    board.cpu.on_execute(0x86, lambda cpu: seen.append(cpu["tr"]))   # after its hlt
    board.run(200_000)
    assert seen and {t[1] for t in seen} == {copy}       # the save area holds only the selector
    assert save_area.read_area(board.memory, vm.area)["tr.sel"] == layout.VM_TSS_SEL and len(lines(vm)) > 3


def test_the_switch_is_x86_in_the_kernel():
    board, cos, kernel = displaced()
    text = [t for _, t in worlds_lesson.switch_listing(kernel)]
    for insn in ("sgdt", "sidt", "sldt", "str", "cli", "lgdt", "lldt", "ltr", "lidt"):
        assert any(t.split()[0] == insn for t in text), insn
    assert "mov cr3, eax" in text and "mov cr0, eax" in text and "mov eax, cr3" in text


def _second_vm_switched_out(board, kernel):
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    board.run(300_000)
    victim = vm1 if kernel.worlds.current is not vm1 else vm2
    return vm1, vm2, victim, (vm2 if victim is vm1 else vm1)


@pytest.mark.parametrize("item, flip", [("eflags", 0x200), ("ldtr.sel", 0x50), ("eip", 4)])
def test_a_corrupted_save_area_is_refused(item, flip):
    board, cos, kernel = displaced()
    vm1, vm2, victim, other = _second_vm_switched_out(board, kernel)
    at = victim.area + save_area.OFFSET[item]
    board.memory.write_u32(at, board.memory.read_u32(at) ^ flip)
    before, ticks = len(lines(other)), cos.ticks()
    board.run(300_000)
    assert victim.state == "crashed" and "changed since it was stored" in victim.fault
    assert any(not e["ok"] for e in board.trace.of("switch.check"))
    assert len(lines(other)) > before + 3 and cos.ticks() > ticks


@pytest.mark.parametrize("item, value, insn", [("tr.sel", layout.USER_DATA_SEL, "ltr"),
                                                ("tr.sel", 0x1F8, "ltr"),
                                                ("ldtr.sel", layout.VM_TSS_SEL, "lldt"),
                                                ("ds", 0x1F8 | 3, "mov ds")])
def test_a_wrong_selector_in_a_save_area_is_refused_by_the_cpu(item, value, insn):
    board, cos, kernel = displaced()
    vm1, vm2, victim, other = _second_vm_switched_out(board, kernel)
    state = save_area.read_area(board.memory, victim.area)
    state[item] = value                               # stored with a good CRC: only the CPU can object
    save_area.write_area(board.memory, victim.area, state)
    before, ticks = len(lines(other)), cos.ticks()
    board.run(300_000)
    assert victim.state == "crashed" and f"#GP general protection({value & ~7:#x}) at `{insn}" in victim.fault
    fault = next(e for e in board.trace.of("cpu.fault") if e["vector"] == 13
                 and kernel.contains(e["eip"]))       # the CPU's own fault, in the kernel's x86
    assert fault["error"] == value & ~7
    assert len(lines(other)) > before + 3 and cos.ticks() > ticks and board.cpu.shutdown is None
    _busy_where_loaded(board, kernel)


@pytest.mark.parametrize("skip", ["ltr", "mov ds", "mov cr3"])
def test_a_switch_that_skips_one_load_is_caught(skip):
    load = "\n".join(line for line in switch_x86.LOAD.splitlines()
                     if not line.strip().startswith(skip))
    board, cos, kernel = displaced(image=image.build(load))
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    ticks = cos.ticks()
    board.run(300_000)
    wrong = [e for e in board.trace.of("switch.load") if not e["ok"]]
    name = {"ltr": "tr", "mov ds": "ds", "lidt": "idtr", "mov cr3": "cr3"}[skip]
    assert wrong and name in wrong[0]["wrong"]
    assert vm1.state == vm2.state == "crashed" and name in vm1.fault
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
    assert board.memory.read_u32(cos_layout.RAM_TOP) <= vm.region[0]     # the COS cannot hand it out
    with pytest.raises(VMError, match=r"does not fit: \d+ bytes of memory are left"):
        kernel.install_vm(lambda base: guests.console(base, "big"), board.memory.size)
    assert len(kernel.worlds.all) == 2 and kernel.worlds.vm_top == vm.region[0]
    board.run(300_000)
    assert len(lines(vm)) > 3


def test_turns_in_ticks_give_proportional_shares():
    # vm_tick=None: VM turns in 2,000-instruction PIT ticks, so 1.5M instructions hold dozens of turns
    board, cos, kernel = displaced(quantum=1, vm_tick=None)
    busy = [kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM_MEMORY, name)
            for name in ("heavy", "light")]
    busy[0].quantum = 3
    board.run(1_500_000)
    heavy, light = (kernel.worlds.instructions_of(w) for w in busy)
    assert light > 50_000 and 2.5 < heavy / light < 3.5, (heavy, light)
    assert cos.ticks() > 50          # the COS keeps its turns (the kernel's work is not charged to it)
