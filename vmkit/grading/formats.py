"""The score table in the shapes an LMS reads.

gradescope: Gradescope's autograder results.json (its documented keys: a
top-level score, execution_time and output, and one test per check with
name, score, max_score, status "passed"/"failed" and output).
junit: JUnit XML (testsuites > testsuite per exercise > testcase per check;
a failed check has <failure>, one that could not be loaded <error>, an
untouched stub <skipped>), which CI systems and most LMS plug-ins import.

Both are built from the same table print_table prints: {exercise: [(check,
points, status, message)]}."""
import json
import xml.etree.ElementTree as ET

STATUS_TEXT = {"ok": "passed", "fail": "failed", "not attempted": "not attempted", "error": "error"}


def _total(table):
    score = sum(p for rows in table.values() for _, p, s, _ in rows if s == "ok")
    return score, sum(p for rows in table.values() for _, p, _, _ in rows)


def gradescope(table, execution_time=None):
    """results.json as a dict."""
    score, total = _total(table)
    tests = []
    for name, rows in table.items():
        for check, points, status, message in rows:
            tests.append({"name": f"{name}: {check}", "score": points if status == "ok" else 0,
                          "max_score": points, "status": "passed" if status == "ok" else "failed",
                          "output": message or STATUS_TEXT.get(status, status),
                          "tags": [name], "visibility": "visible"})
    out = {"score": score, "output": f"Score: {score}/{total}", "tests": tests}
    if execution_time is not None:
        out["execution_time"] = round(execution_time)
    return out


def gradescope_text(table, execution_time=None):
    return json.dumps(gradescope(table, execution_time), indent=1) + "\n"


def junit(table, execution_time=None):
    """JUnit XML as an ElementTree root: one <testsuite> per exercise."""
    root = ET.Element("testsuites", name="vmkit exercises")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for name, rows in table.items():
        suite = ET.SubElement(root, "testsuite", name=name)
        mine = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for check, points, status, message in rows:
            case = ET.SubElement(suite, "testcase", classname=f"vmkit.grading.{name}", name=check)
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="points", value=str(points))
            mine["tests"] += 1
            if status == "not attempted":
                ET.SubElement(case, "skipped", message="not attempted")
                mine["skipped"] += 1
            elif status == "error":
                ET.SubElement(case, "error", message=message[:200], type="error").text = message
                mine["errors"] += 1
            elif status != "ok":
                ET.SubElement(case, "failure", message=message[:200] or "failed", type=status).text = message
                mine["failures"] += 1
        for k, v in mine.items():
            suite.set(k, str(v))
            counts[k] += v
    for k, v in counts.items():
        root.set(k, str(v))
    if execution_time is not None:
        root.set("time", f"{execution_time:.3f}")
    return root


def junit_text(table, execution_time=None):
    root = junit(table, execution_time)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
