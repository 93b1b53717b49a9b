"""Exercises are generated from solutions/, and graded by the machine's behaviour."""
import pathlib
import textwrap

import pytest

from vmkit.grading import generate
from vmkit.grading.runner import grade, grade_one, EXERCISES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_exercises_match_what_solutions_generate():
    generated = generate.generate()
    on_disk = {p.name: p.read_text() for p in (ROOT / "exercises").glob("ex*.py")}
    assert set(generated) == set(on_disk), "run ./kit exercises: the set of exercise files drifted"
    for name, text in generated.items():
        assert on_disk[name] == text, f"exercises/{name} drifted from solutions/{name}: run ./kit exercises"


def test_every_exercise_has_a_grader_and_a_solution():
    assert sorted(p.stem for p in (ROOT / "solutions").glob("ex*.py")) == sorted(EXERCISES)


def test_generation_refuses_files_without_markers():
    with pytest.raises(ValueError, match="no '### BEGIN SOLUTION'"):
        generate.exercise_text("def f():\n    return 1\n", "ex99.py")
    with pytest.raises(ValueError, match="unbalanced"):
        generate.exercise_text("    ### BEGIN SOLUTION\n    x\n    ### END SOLUTION\n    ### END SOLUTION\n", "ex99.py")


def statuses(table, name):
    return [row[2] for row in table[name]]


def test_solutions_get_full_marks():
    # In-process: the same grader code the child runs (grade_one); the child process itself, its
    # JSON and its time limit are checked below and in test_grade_formats.py.
    table = {name: grade_one(ROOT / "solutions", name) for name in EXERCISES}
    assert all(status == "ok" for rows in table.values() for _, _, status, _ in rows), table


def test_untouched_exercises_read_not_attempted():
    # In-process, as above: one child per exercise cost ~0.3 s of start-up each and checked no more
    table = {name: grade_one(ROOT / "exercises", name) for name in EXERCISES}
    assert all(status == "not attempted" for rows in table.values() for _, _, status, _ in rows), table


def learner(tmp_path, body):
    src = (ROOT / "solutions" / "ex00_idt_gate.py").read_text()
    start, end = src.index("    ### BEGIN SOLUTION"), src.index("    ### END SOLUTION\n") + len("    ### END SOLUTION\n")
    (tmp_path / "ex00_idt_gate.py").write_text(src[:start] + textwrap.indent(textwrap.dedent(body), "    ") + src[end:])
    return tmp_path


def test_a_wrong_decoder_fails_and_says_why(tmp_path):
    d = learner(tmp_path, """
        lo, sel, _, attr, hi = struct.unpack("<HHBBH", raw)
        return Gate(offset=hi | lo << 16, selector=sel, type=attr & 0xF,
                    dpl=(attr >> 5) & 3, present=bool(attr & 0x80))
    """)
    rows = grade(d, only="ex00_idt_gate")["ex00_idt_gate"]
    assert [r[2] for r in rows] == ["fail", "fail"]
    assert "expected Gate(offset=" in rows[0][3]
    assert "handler ran 0 times" in rows[1][3]


def test_an_infinite_loop_fails_only_by_the_time_limit(tmp_path):
    d = learner(tmp_path, """
        while True:
            pass
    """)
    rows = grade(d, time_limit=1)["ex00_idt_gate"]
    assert all(r[2] == "fail" and "timed out after 1s" in r[3] for r in rows)


def test_a_file_that_does_not_load_is_reported(tmp_path):
    (tmp_path / "ex00_idt_gate.py").write_text("def decode_gate(raw:\n")
    rows = grade(tmp_path, only="ex00_idt_gate")["ex00_idt_gate"]
    assert all(r[2] == "error" and r[3].startswith("cannot load ex00_idt_gate.py: line 1: ")
               and r[3].endswith("(def decode_gate(raw:)") for r in rows), rows[0]   # the learner's line


@pytest.mark.parametrize("source, message", [
    ("import struct\nimport no_such_module\n",
     "line 2: ModuleNotFoundError: No module named 'no_such_module' (while Python ran the file"),
    ("def decode(raw):\n    return raw\n", "it defines no function decode_gate() (was it renamed?)"),
])
def test_a_file_that_fails_as_it_runs_names_its_own_line(tmp_path, source, message):
    (tmp_path / "ex00_idt_gate.py").write_text(source)
    rows = grade(tmp_path, only="ex00_idt_gate")["ex00_idt_gate"]
    assert all(r[2] == "error" and message in r[3] for r in rows), rows[0]
    assert "Traceback" not in rows[0][3] and "runner.py" not in rows[0][3]
