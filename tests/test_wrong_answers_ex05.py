"""Known-wrong answers to exercise 05 (pick_next) that the grader must fail, each with the hint
it must give. Each is the reference with one edit, graded in-process, up to the first failing
check (the shared cases are in test_wrong_answers.py)."""
import pathlib

import pytest

from vmkit.grading.runner import grade_one

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAME = "ex05_scheduler"

WRONG = [
    # the grader's machines always had a VM woken by the tick: "nobody else" was never asked
    ("the running world when no other can run", "    return None\n", "    return current\n",
     "no other world could run, and it returned the running world cos"),
    ("tries the current world last", "range(1, n)", "range(1, n + 1)",
     "no other world could run, and it returned the running world cos"),
    ("0 for nothing", "    return None\n", "    return 0\n",
     "no other world could run, and it returned 0, not one of the worlds"),
    # every machine's VMs had names in their installation order: sorting by name passed
    ("the worlds sorted by name", "    n = len(worlds)\n",
     "    worlds = sorted(worlds, key=lambda w: w.name)\n    n = len(worlds)\n",
     "The turns follow the worlds' names in alphabetical order"),
    # exit() inside the pick ended the grader's process: the table said only "grader crashed"
    ("sys.exit() for nothing", "    return None\n", "    import sys\n    sys.exit()\n",
     "your code called exit() or raised SystemExit(None) (line 34): that ends the program"),
]


@pytest.mark.parametrize("what, old, new, hint", WRONG, ids=[w[0] for w in WRONG])
def test_a_known_wrong_answer_fails_with_its_hint(tmp_path, what, old, new, hint):
    solution = (ROOT / "solutions" / f"{NAME}.py").read_text()
    assert solution.count(old) == 1, f"{what}: {old!r} is not once in the solution: update this case"
    (tmp_path / f"{NAME}.py").write_text(solution.replace(old, new, 1))
    rows = grade_one(tmp_path, NAME, first_failure=True)
    assert rows[-1][2] == "fail", f"{what}: graded {[r[2] for r in rows]}, a wrong answer must fail"
    assert hint in rows[-1][3], f"{what}: {rows[-1][3]!r}; the hint should say {hint!r}"


def test_os_exit_in_the_pick_is_told_not_a_bare_crash(tmp_path):
    """os._exit ends the grading child at once, with nothing on stderr: the table said only
    'grader crashed: '. It now says how the child ended and what likely did it."""
    from vmkit.grading.runner import grade
    solution = (ROOT / "solutions" / f"{NAME}.py").read_text()
    old = "    return None\n"
    assert solution.count(old) == 1
    (tmp_path / f"{NAME}.py").write_text(solution.replace(old, "    import os\n    os._exit(3)\n", 1))
    (row,) = grade(tmp_path, only=NAME)[NAME]
    assert row[2] == "fail" and "ended with status 3" in row[3] and "os._exit()" in row[3], row
