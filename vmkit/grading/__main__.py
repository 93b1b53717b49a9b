"""`./kit grade [DIR]`: score the exercises in DIR (default exercises/)."""
import json
import pathlib
import sys

from .runner import grade, grade_one, print_table


def main(argv):
    if argv[:1] == ["--one"]:              # the child process that grades one exercise
        print(json.dumps(grade_one(argv[1], argv[2])))
        return 0
    directory = pathlib.Path(argv[0] if argv else "exercises")
    if not directory.is_dir():
        print(f"grade: {directory} is not a directory of exercises", file=sys.stderr)
        return 2
    print_table(grade(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
