"""Grading: a score table, exercise by exercise (like xv6's make grade).

Each exercise is graded in its own process with a time limit, so a
learner's infinite loop fails that exercise only. An untouched stub
(NotImplementedError) reads "not attempted".
"""
import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXERCISES = ["ex00_idt_gate", "ex02a_kernel_idt", "ex02b_virtual_if", "ex03_classify",
             "ex04_irq_forwarding", "ex05_scheduler", "ex06_world_switch", "ex07_mapping_cache",
             "ex08_net", "ex09_segments", "ex10_vmfs", "ex11_unload"]
TIME_LIMIT = 60          # seconds per exercise


def grade_one(directory, name, first_failure=False):
    """Run in the child process: [(check, points, status, message)].
    first_failure: stop after the first check that does not pass (the tests
    of known-wrong answers need no more)."""
    grader = importlib.import_module(f"vmkit.grading.{name}")
    path = pathlib.Path(directory) / f"{name}.py"
    results = []
    try:
        spec = importlib.util.spec_from_file_location(f"learner_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = (getattr(module, grader.FUNCTION) if isinstance(grader.FUNCTION, str)
                    else module)          # several functions: the grader takes the module
    except Exception as e:
        problem = f"cannot load {path.name}: {_load_problem(e, path, grader.FUNCTION)}"
        return [(c, p, "error", problem) for c, p, _ in grader.CHECKS]
    for check, points, fn in grader.CHECKS:
        try:
            problem = fn(function)
            results.append((check, points, "fail" if problem else "ok", problem or ""))
        except NotImplementedError:
            results.append((check, points, "not attempted", ""))
        except SystemExit as e:                # exit() in the learner's code: it would end the grader
            where = _learner_line(e, path)
            results.append((check, points, "fail", f"your code called exit() or raised SystemExit({e.code!r}){where}: "
                                                   "that ends the program; return a value instead"))
        except Exception as e:
            frames = traceback.extract_tb(e.__traceback__)
            mine = [f for f in frames if pathlib.Path(f.filename) == path]    # the learner's line that called
            where = (mine or frames)[-1]
            results.append((check, points, "fail", f"{type(e).__name__}: {e} ({pathlib.Path(where.filename).name}:{where.lineno})"))
        if first_failure and results[-1][2] != "ok":
            break
    return results


def _learner_line(e, path):
    """' (line N)' of the learner's file where `e` was raised, or ''."""
    mine = [f for f in traceback.extract_tb(e.__traceback__) if pathlib.Path(f.filename) == path]
    return f" (line {mine[-1].lineno})" if mine else ""


def _load_problem(e, path, function):
    """What stopped the learner's file loading, said as a learner would look for it:
    the line of their file, not the grader's traceback."""
    if isinstance(e, SyntaxError):
        text = (e.text or "").strip()
        return f"line {e.lineno}: {e.msg}" + (f" ({text})" if text else "")
    if isinstance(e, FileNotFoundError):
        return "no such file (copy it back from exercises/)"
    if isinstance(e, AttributeError) and isinstance(function, str):
        return f"it defines no function {function}() (was it renamed?)"
    mine = [f for f in traceback.extract_tb(e.__traceback__) if pathlib.Path(f.filename) == path]
    where = f"line {mine[-1].lineno}: " if mine else ""
    return f"{where}{type(e).__name__}: {e} (while Python ran the file, before any grading)"


def _crashed(out):
    """A child that ended without its table: its error, or, if it said nothing (os._exit in the
    learner's code, a signal), its exit status in words."""
    said = out.stderr.strip()[-300:]
    if said:
        return f"grader crashed: {said}"
    how = (f"was killed by signal {-out.returncode}" if out.returncode < 0 else
           f"ended with status {out.returncode}, saying nothing")
    return (f"the grader's process {how} before it could give a result: does your code call "
            f"os._exit(), or crash Python itself?")


def grade(directory, time_limit=TIME_LIMIT, only=None):
    """{exercise: [(check, points, status, message)]}, each graded in a child process (a missing
    file runs no learner code, so it is reported here, as the child would)."""
    table = {}
    for name in [only] if only else EXERCISES:
        if not (pathlib.Path(directory) / f"{name}.py").exists():
            table[name] = [list(row) for row in grade_one(directory, name)]   # no learner code runs: no child
            continue
        try:
            out = subprocess.run([sys.executable, "-m", "vmkit.grading", "--one", str(directory), name],
                                 cwd=ROOT,
                                 capture_output=True, text=True, timeout=time_limit)
            lines = out.stdout.strip().splitlines()
            table[name] = (json.loads(lines[-1]) if out.returncode == 0 and lines else
                           [("(whole exercise)", 0, "fail", _crashed(out))])
        except subprocess.TimeoutExpired:
            grader = importlib.import_module(f"vmkit.grading.{name}")
            table[name] = [(c, p, "fail", f"timed out after {time_limit}s (an infinite loop?)")
                           for c, p, _ in grader.CHECKS]
    return table


def print_table(table):
    score = total = 0
    for name, rows in table.items():
        for i, (check, points, status, message) in enumerate(rows):
            label = name if i == 0 else ""
            if i and message == rows[i - 1][3] and status == "error":
                message = ""                       # a file that did not load: said once
            total += points
            score += points if status == "ok" else 0
            shown = {"ok": "OK", "fail": "FAIL"}.get(status, status)
            print(f"{label:20} {check:46} {shown}" + (f"\n{'':20}   {message}" if message else ""))
    print(f"Score: {score}/{total}")
    return score, total


def check(name, directory=None):
    """The notebooks' "check your work" cell: grade one exercise, print its rows."""
    directory = pathlib.Path(directory or ROOT / "exercises")
    if name not in EXERCISES:
        raise ValueError(f"no exercise called {name!r}; there are {', '.join(EXERCISES)}")
    print_table({name: grade(directory, only=name)[name]})
