"""Known-wrong answers to exercise 06 (the switch's x86 load): the grader must
fail each, with a hint that names the item, from what the machine did."""
import pytest

from vmkit.grading import ex06_world_switch as grader
from vmkit.kernel import switch_x86

RIGHT = [line for line in switch_x86.LOAD.splitlines() if line.strip()]


def without(*starts):
    return "\n".join(line for line in RIGHT if not line.strip().startswith(starts))


def swapped(first, second):
    lines = list(RIGHT)
    i = next(n for n, line in enumerate(lines) if line.strip().startswith(first))
    j = next(n for n, line in enumerate(lines) if line.strip().startswith(second))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


WRONG = {
    "no lgdt": (without("lgdt"), "is GDTR loaded first?"),
    "no lidt": (without("lidt"), "IDTR is not the save area's"),
    "no lldt": (without("lldt"), "the LDT loaded then has no such descriptor (is LDTR loaded"),
    "no ltr": (without("ltr"), "TR is not the save area's"),
    "no mov ds": (without("mov ds"), "DS is not the save area's"),
    "no mov gs": (without("mov gs"), "GS is not the save area's"),
    "no mov cr3": (without("mov cr3"), "CR3 is not the save area's"),
    # CR3 loaded from a stale EAX: paging comes on with page tables that map none of the kernel's
    # tables, so the fetch's #PF cannot be delivered (#DF, triple fault): a hint, not a traceback
    "CR3 not read from the area": (without("mov eax, [edi + AREA_CR3]"), "CR3 is not the save area's"),
    "lldt before lgdt": (swapped("lgdt", "lldt"), "at `lldt word ptr [edi + 0x50]`"),
    "ltr before lgdt": ("\n".join([RIGHT[2]] + RIGHT[:2] + RIGHT[3:]), "is GDTR loaded first?"),
    "IDTR from the GDTR's field": (without("lidt") + "\nlidt ss:[edi + AREA_GDTR]",   # (through DS, the
                                                                                # next world's: #GP)
                                   "IDTR is not the save area's"),
    "GDTR through ESI": (without("lgdt").replace("lldt", "lgdt [esi + AREA_GDTR]\nlldt", 1),
                         "GDTR or IDTR loaded from the wrong place"),
    "FS from DS's field": ("\n".join(RIGHT).replace("[edi + AREA_FS]", "[edi + AREA_DS]"),
                           "FS is not the save area's"),
    "DS from FS's field": ("\n".join(RIGHT).replace("[edi + AREA_DS]", "[edi + AREA_FS]"),
                           "DS is not the save area's"),    # loaded last: the kernel's own
                                                                # DS comes back, verify names it
    "sti in the load": ("\n".join(RIGHT + ["sti"]), "your code must not (no sti)"),
    # int3's vector is 3, the dispatcher's GO_SWITCH: once taken for a CPU's start, the kernel's own
    # load then loaded the world and the grader passed an `int3` for a load
    "only an int3": ("int3", "your load executed `int3`"),
    # a fetch outside memory faulted there: its bytes were read for the message (a BusError)
    "a jump out of memory": ("jmp 0xdeadbeef", "your load left the kernel's code for 0x"),
    "a ret to nowhere": ("push 0xdead0000\nret", "your load left the kernel's code for 0xdead0000"),
    # DS loaded with the value EAX held (GS's): the worlds' DS and GS differ in one world (ex06's vm2)
    "DS's value not read": (without("mov eax, [edi + AREA_DS]"), "DS is not the save area's"),
    "GS loaded with DS's value": (swapped("mov gs", "mov eax, [edi + AREA_DS]"), "GS is not the save area's"),
    "an int 0x30 in the load": ("\n".join(RIGHT[:3] + ["int 0x30"] + RIGHT[3:]), "your load executed `int 0x30`"),
    # the IDT's operand read through DS after DS became the world's: past its limit (the platform
    # checks the load's accesses: it runs with paging off)
    "lidt through the world's DS": ("\n".join(RIGHT).replace("lidt ss:[edi + AREA_IDTR]", "lidt [edi + AREA_IDTR]"),
                                    "read the save area through SS, the kernel's"),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_a_wrong_load_fails_with_its_hint(name):
    source, hint = WRONG[name]
    problem = grader.check_consoles(lambda: source)
    assert problem and hint in problem, problem


def test_the_solution_passes():
    assert grader.check_consoles(lambda: switch_x86.LOAD) is None


def test_bad_assembly_is_a_clear_problem():
    problem = grader.check_consoles(lambda: "lgdt [edi + AREA_GDTR]\nmov cr3, [edi]")
    assert problem.startswith("your load sequence does not assemble: line 2")


def test_a_refused_world_left_running_keeps_whole_runs():
    """Left to run after the refusal, the machine keeps whole runs: the CPU stops where IF
    is set, not after every instruction while the timer's request waits (it once ran one
    instruction per board.run iteration, ~100,000 runs here; tests/test_intr_wait.py has the
    mechanism). The load faults in the first switch into each VM now (the limit follows the
    switch's lgdt), so the VMs are refused and the COS runs on."""
    source = WRONG["lidt through the world's DS"][0]
    board, cos, kernel, vms = grader._machine(lambda: source, quantum=1)
    runs = []
    counter_run = board.cpu.counter.run
    board.cpu.counter.run = lambda *a: runs.append(a) or counter_run(*a)
    board.run(100_000)
    assert [w.state for w in kernel.worlds.all] == ["ready", "crashed", "crashed"]
    assert len(runs) < 5_000, len(runs)      # the kernel's own stubs, ~19 per retry of ~220


def test_a_load_through_the_next_worlds_ds_is_refused_entering_a_vm_from_the_cos():
    """The first switch is the COS -> vm1: a read of the save area through DS after
    `mov ds` goes through vm1's DS (its memory only), and the CPU refuses it there, as it
    does going the other way: the limit is the one of the descriptor the load just
    loaded, in the GDT its lgdt loaded, not the COS's GDT the switch started with."""
    source = "\n".join(RIGHT).replace("lidt ss:[edi + AREA_IDTR]", "lidt [edi + AREA_IDTR]")
    board, cos, kernel, vms = grader._machine(lambda: source, quantum=1)
    board.run(100_000)
    events = board.trace.of("switch.begin", "cpu.fault")
    fault = next(i for i, e in enumerate(events) if e.kind == "cpu.fault" and "past the limit" in e["why"])
    switch_at = [e for e in events[:fault] if e.kind == "switch.begin"]
    assert [(e["frm"], e["to"]) for e in switch_at] == [(kernel.worlds.all[0].name, "vm1")]
    assert events[fault]["vector"] == 13 and "of DS" in events[fault]["why"]
    assert board.memory.read(events[fault]["eip"], 3) == bytes.fromhex("0f015f")     # lidt [edi + disp8]
    problem = grader.check_consoles(lambda: source)
    assert "read the save area through SS, the kernel's" in problem, problem


def test_a_load_through_the_next_worlds_ds_is_refused_entering_the_cos_from_a_vm():
    """The other way: a read through DS after `mov ds` only when the next world is the COS
    (CR3 0) faults in the first switch into the COS, judged by the COS's DS (it ends below
    the kernel), while CS is still the VMM's, which the COS's GDT does not have."""
    source = "\n".join(RIGHT) + """
        mov eax, ss:[edi + AREA_CR3]
        test eax, eax
        jnz into_a_vm
        mov eax, [edi + AREA_CR3]
into_a_vm:"""
    board, cos, kernel, vms = grader._machine(lambda: source, quantum=1)
    board.run(100_000)
    events = board.trace.of("switch.begin", "cpu.fault")
    fault = next(i for i, e in enumerate(events) if e.kind == "cpu.fault" and "past the limit" in e["why"])
    into_cos = [e for e in events[:fault] if e.kind == "switch.begin" and e["to"] == kernel.worlds.all[0].name]
    assert len(into_cos) == 1 and into_cos[0] is [e for e in events[:fault] if e.kind == "switch.begin"][-1]
    assert events[fault]["vector"] == 13 and "of DS" in events[fault]["why"]
    problem = grader.check_consoles(lambda: source)
    assert "read the save area through SS, the kernel's" in problem, problem
