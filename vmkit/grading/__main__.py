"""`./kit grade [DIR] [--format table|gradescope|junit] [-o FILE]`: score the
exercises in DIR (default exercises/). The table is for a person; gradescope
writes Gradescope's results.json, junit JUnit XML (formats.py)."""
import argparse
import json
import pathlib
import sys
import time

from . import formats
from .runner import TIME_LIMIT, grade, grade_one, print_table

WRITERS = {"gradescope": formats.gradescope_text, "junit": formats.junit_text}


class _Parser(argparse.ArgumentParser):
    def error(self, message):                  # one line, status 2
        print(f"grade: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if argv[:1] == ["--one"]:              # the child process that grades one exercise
        print(json.dumps(grade_one(argv[1], argv[2])))
        return 0
    p = _Parser(prog="grade", description="Score the exercises, each in its own process "
                f"with a {TIME_LIMIT}s time limit.")
    p.add_argument("directory", nargs="?", default="exercises", help="the exercises to grade (default exercises/)")
    p.add_argument("--format", choices=("table", "gradescope", "junit"), default="table",
                   help="table (for a person, the default), gradescope (results.json), junit (XML)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the gradescope/junit result to FILE "
                   "(default: standard output)")
    args = p.parse_args(argv)
    directory = pathlib.Path(args.directory)
    if not directory.is_dir():
        print(f"grade: {directory} is not a directory of exercises", file=sys.stderr)
        return 2
    if args.format == "table":
        print_table(grade(directory))
        return 0
    started = time.monotonic()                 # reported only: grading does not depend on it
    text = WRITERS[args.format](grade(directory), time.monotonic() - started)
    if args.output:
        try:
            pathlib.Path(args.output).write_text(text)
        except OSError as e:
            print(f"grade: cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
