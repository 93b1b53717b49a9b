"""Known-wrong answers to exercise 04 (kernel_sees_irq, cos_acknowledged) that the grader must
fail, each with the hint it must give, and answers that differ from the reference only where
the machine cannot tell (the kernel's handler runs with IF clear) that it must pass. Each is
the reference solution with one edit, graded in-process."""
import pathlib

import pytest

from vmkit.grading.runner import grade_one

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAME = "ex04_irq_forwarding"
SEES = "    if masking:\n        pic.mask(line)\n    pic.eoi(line)\n    cos.queue(line)\n"


def _graded(tmp_path, old, new):
    solution = (ROOT / "solutions" / f"{NAME}.py").read_text()
    assert solution.count(old) == 1, f"{old!r} is not once in the solution: update this case"
    (tmp_path / f"{NAME}.py").write_text(solution.replace(old, new, 1))
    return grade_one(tmp_path, NAME)


WRONG = [
    # with masking off the storm came anyway, so the forwarding itself went unchecked
    ("forwards only when masking", SEES,
     "    if masking:\n        pic.mask(line)\n        cos.queue(line)\n    pic.eoi(line)\n",
     "the COS's handler for IRQ 5 never ran"),
    # the COS's EOI for one line unmasked every line, the jammed sensor's too before the COS had handled
    # it: no line was ever in flight beside another, so nothing showed it
    ("unmasks every line", "    if pic.is_masked(line):\n        pic.unmask(line)\n",
     "    for other in range(8):\n        pic.unmask(other)\n",
     "IRQ 5 entered the kernel again before the COS's handler had run for it"),
    # arguments that name no IRQ line: said with the learner's own line, not a TypeError deep in the kit,
    # nor a bit set silently where no line is (1 << 1000) or on the other 8259A (line 16 masked IRQ 8)
    ("masks a str", "        pic.mask(line)\n", "        pic.mask(str(line))\n",
     "ValueError: IRQ line '4' is not one of the two 8259As' 0..15 (ex04_irq_forwarding.py:30)"),
    ("masks line 16 and up", "        pic.mask(line)\n", "        pic.mask(line + 16)\n",
     "IRQ line 20 is not one of the two 8259As' 0..15 (ex04_irq_forwarding.py:30)"),
    ("queues the vector", "    cos.queue(line)\n", "    cos.queue(line + 0x68)\n",
     "IRQ line 108 is not one of the two 8259As' 0..15 (ex04_irq_forwarding.py:32)"),
    ("queues None", "    cos.queue(line)\n", "    cos.queue(None)\n", "IRQ line None is not one of"),
    ("asks about a str", "    if pic.is_masked(line):\n", "    if pic.is_masked(str(line)):\n",
     "IRQ line '4' is not one of the two 8259As' 0..15 (ex04_irq_forwarding.py:39)"),
]


@pytest.mark.parametrize("what, old, new, hint", WRONG, ids=[w[0] for w in WRONG])
def test_a_known_wrong_answer_fails_with_its_hint(tmp_path, what, old, new, hint):
    rows = _graded(tmp_path, old, new)
    failed = [r for r in rows if r[2] != "ok"]
    assert failed, f"{what}: graded {[r[2] for r in rows]}, a wrong answer must fail"
    assert any(hint in r[3] for r in failed), f"{what}: {[r[3] for r in failed]}; the hint should say {hint!r}"


EQUIVALENT = [
    # the kernel's handler runs with IF clear and the COS only after it: the order is not seen
    ("queue, then mask and EOI", SEES, "    cos.queue(line)\n    if masking:\n        pic.mask(line)\n    pic.eoi(line)\n"),
    ("EOI before the mask", SEES, "    pic.eoi(line)\n    if masking:\n        pic.mask(line)\n    cos.queue(line)\n"),
    ("queued twice (one pending bit)", SEES, SEES + "    cos.queue(line)\n"),
    ("unmask without asking", "    if pic.is_masked(line):\n        pic.unmask(line)\n", "    pic.unmask(line)\n"),
]


@pytest.mark.parametrize("what, old, new", EQUIVALENT, ids=[w[0] for w in EQUIVALENT])
def test_an_answer_the_machine_cannot_tell_from_the_reference_passes(tmp_path, what, old, new):
    rows = _graded(tmp_path, old, new)
    assert all(r[2] == "ok" for r in rows), f"{what}: {rows}"
