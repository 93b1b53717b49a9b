"""Issue 5, isolation (claims 13, 21): each VM world has its own page directory
(vmkit/kernel/paging.py), so a guest that writes outside its memory reaches
neither the kernel, nor the COS, nor another VM: the write is a #PF into the
kernel and only the writing VM is crashed."""
import pytest

from vmkit.kernel import layout, save_area
from vmkit.kernel import paging
from vmkit.vmm import guests

from test_worlds import VM_MEMORY, console_vm, displaced, lines

POISON = 0xDEADBEEF
COS_CODE = 0x10000                  # where the COS runs (its saved EIP is 0x102xx)


def writer(target):
    """A guest that greets, then writes POISON at `target` (outside its memory)."""
    def guest(base):
        return guests._prologue(base) + guests._print("writer about to write\n") + f"""
        mov dword ptr [{target:#x}], {POISON:#x}
""" + guests._print("writer wrote\n") + "\nstop:   hlt\n        jmp stop\n"
    return guest


def targets(board, cos, kernel, victim):
    return {
        "kernel": kernel.base + layout.WORLDS,               # the COS's save area, in the kernel's block
        "cos": COS_CODE,                                     # the COS's own memory
        "vm": victim.region[0] + guests.VARS,                # the other VM's tick counter
    }


@pytest.mark.parametrize("where", ["kernel", "cos", "vm"])
def test_a_guest_writing_outside_its_memory_crashes_only_itself(where):
    board, cos, kernel = displaced()
    victim = console_vm(kernel, "victim")
    target = targets(board, cos, kernel, victim)[where]
    bad = kernel.install_vm(writer(target), VM_MEMORY, "bad")
    assert not bad.vmm.owns(target)
    board.run(200_000)                      # the writer's greeting; the victim and COS running
    if where == "cos":                      # the COS really runs there (it was switched away from)
        assert COS_CODE <= save_area.read_area(board.memory, kernel.worlds.all[0].area)["eip"] < COS_CODE + 0x10000
    before = board.memory.read(target, 4)
    assert before != POISON.to_bytes(4, "little")
    assert bad.state == "crashed", bad
    # the write was stopped by the guest's data segment, which ends at its memory's end
    # (its VMM's GDT): a CPU checks the limit before it translates, so #GP(0) from CPL 3
    # at the store, not the #PF its page tables would give (tests/test_limits_paging.py)
    faults = [e for e in board.trace.of("cpu.fault") if e["vector"] == 13 and "past the limit" in e["why"]]
    assert faults and bad.vmm.owns(faults[0]["eip"]) and faults[0]["error"] == 0
    assert bad.fault.startswith("#GP") and f"[{target:#x}]" in bad.fault
    assert lines(bad) == ["writer about to write"]
    victim_lines, cos_ticks = len(lines(victim)), cos.ticks()
    board.run(500_000)
    assert board.memory.read(target, 4) != POISON.to_bytes(4, "little")
    assert victim.state != "crashed" and len(lines(victim)) > victim_lines + 5
    assert cos.ticks() > cos_ticks + 20 and board.cpu.shutdown is None


def test_each_vm_world_has_its_own_directory_and_the_switch_turns_paging_on_for_it_only():
    board, cos, kernel = displaced()
    vm1, vm2 = console_vm(kernel, "vm1"), console_vm(kernel, "vm2")
    cr3 = {w.name: save_area.read_area(board.memory, w.area)["cr3"] for w in kernel.worlds.all}
    assert cr3["cos"] == 0 and len({cr3["vm1"], cr3["vm2"], 0}) == 3
    m = board.memory
    for w, other in ((vm1, vm2), (vm2, vm1)):
        d = cr3[w.name]
        user_rw = paging.PRESENT | paging.WRITABLE | paging.USER
        base, size = w.region
        for page in (0, size - 0x1000):                   # its guest address 0.. is its own host pages
            assert paging.mapping(m, d, page) & user_rw == user_rw
            assert paging.mapping(m, d, page) & ~0xFFF == base + page
        assert paging.mapping(m, d, size) == 0            # the first byte past its memory
        assert paging.mapping(m, d, kernel.base) & user_rw == paging.PRESENT | paging.WRITABLE   # supervisor only
        assert paging.mapping(m, d, kernel.base) & ~0xFFF == kernel.base                   # identity
        assert paging.mapping(m, d, other.region[0]) == 0 and paging.mapping(m, d, base) == 0
        assert paging.mapping(m, d, 0x10000) == 0
        assert not w.region[0] <= d < w.region[0] + w.region[1]       # its tables are not its memory
    board.run(500_000)
    loads = board.trace.of("switch.load")
    assert {(e["world"], e["paging"]) for e in loads} == {("cos", "off"), ("vm1", "on"), ("vm2", "on")}
