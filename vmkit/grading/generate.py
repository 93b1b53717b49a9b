"""Make exercises/ from solutions/: each BEGIN/END SOLUTION region becomes a stub.

As nbgrader does, the reference answer and the learner's starting point are
one file, so they cannot drift; tests/test_exercises.py fails when the
checked-in exercises/ differs from what this produces.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n", re.M | re.S)
STUB = '{indent}raise NotImplementedError("not attempted: write this (see the docstring)")\n'


def exercise_text(solution_text, name="<solution>"):
    out, n = REGION.subn(lambda m: STUB.format(indent=m.group(1)), solution_text)
    if n == 0:
        raise ValueError(f"{name}: no '### BEGIN SOLUTION' / '### END SOLUTION' region")
    if "### BEGIN SOLUTION" in out or "### END SOLUTION" in out:
        raise ValueError(f"{name}: unbalanced solution markers")
    return out


def generate(solutions=ROOT / "solutions", exercises=ROOT / "exercises"):
    """{exercise file name: text} for every solution file."""
    return {p.name: exercise_text(p.read_text(), p.name) for p in sorted(solutions.glob("ex*.py"))}


def main():
    target = ROOT / "exercises"
    target.mkdir(exist_ok=True)
    for name, text in generate().items():
        (target / name).write_text(text)
        print(f"exercises/{name}")


if __name__ == "__main__":
    sys.exit(main())
