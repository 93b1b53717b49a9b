"""`./kit grade --format gradescope|junit`: the score table in the shapes an LMS
and CI read, checked against their published shape, from a real grading run
(one exercise solved, one wrong, one untouched, the rest missing)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from vmkit.grading.runner import EXERCISES

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Gradescope's autograder results.json: the keys its specification documents
TOP_KEYS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
            "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_KEYS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
             "tags", "visibility", "extra_data"}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    d = tmp_path_factory.mktemp("submission")
    shutil.copy(ROOT / "solutions" / "ex00_idt_gate.py", d)                 # right
    wrong = (ROOT / "exercises" / "ex03_classify.py").read_text()
    (d / "ex03_classify.py").write_text(wrong.replace(
        'raise NotImplementedError("not attempted: write this (see the docstring)")', "return {}"))
    shutil.copy(ROOT / "exercises" / "ex05_scheduler.py", d)                # untouched
    return d


def grade(*args):
    out = subprocess.run([sys.executable, "-m", "vmkit.grading", *map(str, args)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_gradescope_results_json(submission, tmp_path):
    grade(submission, "--format", "gradescope", "-o", tmp_path / "results.json")
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) <= TOP_KEYS and "tests" in results
    for t in results["tests"]:
        assert set(t) <= TEST_KEYS and {"name", "score", "max_score", "output"} <= set(t)
        assert isinstance(t["name"], str) and isinstance(t["output"], str)
        assert 0 <= t["score"] <= t["max_score"] and t["status"] in ("passed", "failed")
        assert t["visibility"] in VISIBILITY
    by_exercise = {}
    for t in results["tests"]:
        by_exercise.setdefault(t["name"].split(":")[0], []).append(t)
    assert list(by_exercise) == EXERCISES
    assert all(t["status"] == "passed" and t["score"] == t["max_score"] for t in by_exercise["ex00_idt_gate"])
    assert any(t["status"] == "failed" and t["output"] for t in by_exercise["ex03_classify"])
    assert all(t["output"] == "not attempted" and t["score"] == 0 for t in by_exercise["ex05_scheduler"])
    assert results["score"] == sum(t["score"] for t in results["tests"])
    assert results["score"] >= sum(t["max_score"] for t in by_exercise["ex00_idt_gate"])


def test_junit_xml(submission):
    root = ET.fromstring(grade(submission, "--format", "junit"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == EXERCISES
    for s in suites:
        cases = s.findall("testcase")
        assert int(s.get("tests")) == len(cases) > 0
        for kind, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            assert int(s.get(attr)) == sum(len(c.findall(kind)) for c in cases)
        for c in cases:
            assert c.get("name") and c.get("classname") == f"vmkit.grading.{s.get('name')}"
            assert len([x for x in c if x.tag in ("failure", "error", "skipped")]) <= 1
    for attr in ("tests", "failures", "errors", "skipped"):
        assert int(root.get(attr)) == sum(int(s.get(attr)) for s in suites)
    named = {s.get("name"): s for s in suites}
    assert int(named["ex00_idt_gate"].get("failures")) == int(named["ex00_idt_gate"].get("errors")) == 0
    assert int(named["ex03_classify"].get("failures")) >= 1
    assert int(named["ex05_scheduler"].get("skipped")) == int(named["ex05_scheduler"].get("tests"))
    assert int(named["ex07_mapping_cache"].get("errors")) == int(named["ex07_mapping_cache"].get("tests"))


def test_default_is_the_table_and_bad_flags_are_one_line(submission):
    assert "Score: " in grade(submission)
    out = subprocess.run([sys.executable, "-m", "vmkit.grading", str(submission), "--format", "csv"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "csv" in out.stderr
