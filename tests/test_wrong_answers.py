"""Known-wrong answers: each must fail its grader, with a hint naming the cause.

Each wrong answer is the reference solution with one edit (a statement
deleted, an operator flipped, a constant changed, a branch rewritten), so
the answers stay in step with solutions/: an edit whose text is no longer in
the solution fails the test rather than grading the solution itself.
Graded in-process, up to the first failing check, whose message must hold
the hint."""
import pathlib

import pytest

from vmkit.grading.runner import grade_one

ROOT = pathlib.Path(__file__).resolve().parents[1]

# exercise -> [(what is wrong, text in the solution, replaced by, hint the grader must give)]
WRONG = {
    "ex00_idt_gate": [
        ("offset halves swapped", "offset_low | (offset_high << 16)", "offset_high | (offset_low << 16)",
         "expected Gate(offset="),
        ("type keeps P and DPL", "type=attributes & 0xF", "type=attributes", "type is bits 3..0 of byte 5"),
        ("DPL from the wrong bits", "(attributes >> 5) & 3", "(attributes >> 4) & 3", "expected Gate("),
        ("every gate present", "present=bool(attributes & 0x80)", "present=True", "present=False), got"),
        ("selector from the zero byte", "selector=selector", "selector=_zero", "expected Gate("),
    ],
    "ex02a_kernel_idt": [
        ("DPL 0 for the COS's vectors too", "dpl = 1 if vector in cos_vectors else 0", "dpl = 0",
         "gate 0x3: type 0xe DPL 0; expected an interrupt gate (0xe) with DPL 1"),
        ("DPL 3 for the COS's vectors", "dpl = 1 if", "dpl = 3 if", "DPL 3; expected"),
        ("trap gates", "type=0xE", "type=0xF", "a trap gate leaves IF set"),
        ("gates not present", "present=True", "present=False", "present False; expected"),
        ("the COS's code selector", "selector, type=", "0x08, type=", "expected the kernel stub"),
        ("128 gates", "range(256)", "range(128)", "must be 2048 bytes"),
        ("each gate to the next stub", "stubs[vector]", "stubs[(vector + 1) % 256]", "expected the kernel stub"),
    ],
    "ex02b_virtual_if": [
        ("popfd loses CF/ZF", "frame.eflags = (flags & ~0x3000) | EFLAGS_IF", "frame.eflags |= EFLAGS_IF",
         "carry flag is clear"),
        ("popfd keeps the popped IOPL", "(flags & ~0x3000) | EFLAGS_IF", "flags | EFLAGS_IF",
         "the displacement undone"),
        ("pushfd pushes the real IF", "frame.push((frame.eflags & ~EFLAGS_IF) | (EFLAGS_IF if vcpu.vif else 0))",
         "frame.push(frame.eflags)", "pushfd must push the COS's virtual IF"),
        ("popfd always sets the virtual IF", "vcpu.vif = 1 if flags & EFLAGS_IF else 0", "vcpu.vif = 1",
         "popfd must clear vcpu.vif"),
        ("popfd sets vif to 2", "vcpu.vif = 1 if flags", "vcpu.vif = 2 if flags", "vif is 0 or 1"),
        ("popfd clears the real IF", "(flags & ~0x3000) | EFLAGS_IF", "flags & ~0x3000",
         "the real IF clear"),
        ("cli and sti swapped", 'if mnemonic == "cli":', 'if mnemonic == "sti":', "does sti set vcpu.vif"),
        ("cli does nothing", "        vcpu.vif = 0\n", "        pass\n", "cli must clear vcpu.vif"),
        ("pushfd pushes nothing", "        frame.push(", "        (", "stack balanced"),
        ("popfd pops nothing", "flags = frame.pop()", "flags = frame.eflags", "stack balanced"),
        ("pushfd sets CF for IF clear", "(EFLAGS_IF if vcpu.vif else 0)", "(EFLAGS_IF if vcpu.vif else 1)",
         "the COS popped flags 0x0 and its pushfd then pushed 0x1"),
        ("pushfd always pushes IF clear", "(EFLAGS_IF if vcpu.vif else 0)", "0",
         "pushfd must push IF as vcpu.vif says"),
        ("popfd sets IOPL 1", "(flags & ~0x3000) | EFLAGS_IF", "(flags & ~0x3000) | EFLAGS_IF | 0x1000",
         "at CPL 1 with IOPL 1: its cli, sti, in and out no longer trap"),
    ],
    "ex03_classify": [
        ("no check of class names", "        if cls not in CLASSES:\n            raise ClassificationError(f\"unknown class {cls!r}\")\n",
         "", "the unknown class 'Reserved' makes it invalid"),
        ("the boot disk may be reserved", 'if result.get(BOOT_DISK) == "reserved":', "if False:",
         "the boot disk's controller scsi0 reserved makes it invalid"),
        ("a device may be in two classes", "            if name in result:\n", "            if False:\n",
         "serial0 in two classes makes it invalid"),
        ("any name is a device", "            if name not in names:\n", "            if False:\n",
         "floppy0, no device of the list makes it invalid"),
        ("a device may be left out", "        if name not in result:\n", "        if False:\n",
         "kbd0 in no class makes it invalid"),
        ("the message does not start with the device", 'f"{name}: in two classes, {result[name]} and {cls}"',
         'f"in two classes: {name}"', "should start with 'serial0:'"),
        ("every device reserved", "result[name] = cls", 'result[name] = "reserved"', "is valid, yet your classify refused it"),
        ("returns nothing", "    return result\n", "    pass\n", "classify returned None"),
    ],
    "ex04_irq_forwarding": [
        ("no EOI to the real PIC", "    pic.eoi(line)\n", "", "the kernel never sent it EOI"),
        ("EOI only when masking", "        pic.mask(line)\n    pic.eoi(line)\n", "        pic.mask(line)\n        pic.eoi(line)\n",
         "acknowledge the PIC (pic.eoi) whether or not you mask"),
        ("no mask", "        pic.mask(line)\n", "        pass\n", "not masked at the real PIC"),
        ("masks with masking off too", "    if masking:\n        pic.mask(line)\n", "    pic.mask(line)\n",
         "kernel_sees_irq must not mask it"),
        ("unmasks at once", "    cos.queue(line)\n", "    cos.queue(line)\n    pic.unmask(line)\n",
         "not masked at the real PIC"),
        ("not queued for the COS", "    cos.queue(line)\n", "", "nothing was queued for the COS"),
        ("no unmask", "        pic.unmask(line)\n", "        pass\n", "still masked at the real PIC"),
        ("unmasks the wrong line", "        pic.unmask(line)\n", "        pic.unmask(line + 1)\n",
         "still masked at the real PIC"),
        ("EOI to line 0", "    pic.eoi(line)\n", "    pic.eoi(0)\n", "a specific EOI for IRQ 0, not IRQ 4"),
        ("EOI to the next line", "    pic.eoi(line)\n", "    pic.eoi(line + 1)\n",
         "a specific EOI for IRQ 5, not IRQ 4"),
    ],
    "ex05_scheduler": [
        ("round-robin in reverse", "worlds[(at + i) % n]", "worlds[(at - i) % n]", "The turns go round in reverse"),
        ("may return the running world", "range(1, n)", "range(0, n)", "it returned the running world"),
        ("the first runnable of the list", "worlds[(at + i) % n]", "worlds[i % n]", "it returned the running world"),
        ("skips the next world", "worlds[(at + i) % n]", "worlds[(at + i + 1) % n]", "vm1 printed 0 lines"),
        ("ignores runnable", "        if runnable(w):\n            return w\n", "        return w\n", "which cannot run"),
        ("never switches", "            return w\n", "            return None\n", "a busy VM hardly ran"),
        ("gives up before the world behind the current one", "range(1, n)", "range(1, n - 1)",
         "try every world after the current one, wrapping around"),
    ],
}

CASES = [(name, *case) for name, cases in WRONG.items() for case in cases]


@pytest.mark.parametrize("name, what, old, new, hint", CASES, ids=[f"{c[0].split('_')[0]}: {c[1]}" for c in CASES])
def test_a_known_wrong_answer_fails_with_its_hint(tmp_path, name, what, old, new, hint):
    solution = (ROOT / "solutions" / f"{name}.py").read_text()
    region = "".join(part.split("### END SOLUTION")[0] for part in solution.split("### BEGIN SOLUTION")[1:])
    assert region.count(old) == 1, f"{what}: {old!r} is not once in the solution's answer: update this case"
    (tmp_path / f"{name}.py").write_text(solution.replace(old, new, 1))
    rows = grade_one(tmp_path, name, first_failure=True)
    check, _, status, message = rows[-1]
    assert status == "fail", f"{what}: graded {[r[2] for r in rows]}, a wrong answer must fail"
    assert hint in message, f"{what}: {check!r} failed saying {message!r}; the hint should say {hint!r}"
