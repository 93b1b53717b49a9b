"""The learner's function as a grader calls it, or plugs it into the machine.

An exception the learner's code raises, or a value of the wrong shape it
returns, would otherwise leave the machine as a traceback through the
grader's or the kernel's frames (a TypeError at a grader's line reads as a
line of the learner's own file, which has the same name). `guard` turns it
into `Wrong`, a sentence naming the function, the call and the learner's
own line; `checked` makes a check return that sentence as its hint.
"""
import functools
import pathlib
import traceback

PACKAGE = pathlib.Path(__file__).resolve().parents[1]      # vmkit/: frames that are not the learner's


class Wrong(Exception):
    """What the learner's function did wrong, said for the learner: a check's hint."""


def _their_line(e):
    mine = [f for f in traceback.extract_tb(e.__traceback__)
            if not pathlib.Path(f.filename).resolve().is_relative_to(PACKAGE)]
    return f" at line {mine[-1].lineno} of {pathlib.Path(mine[-1].filename).name}" if mine else ""


def _name(e):
    kind = type(e)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def guard(function, name, called=lambda *args: "", expected=()):
    """`function`, whose exceptions become Wrong: "your NAME raised X: ... at line N (CALLED)".
    `called(*args)` says which call it was. NotImplementedError (the untouched stub) passes
    through: the runner reads it as "not attempted"; so do the `expected` exceptions, those
    the exercise asks for (a refusal)."""
    passed = (NotImplementedError, Wrong, *expected)

    @functools.wraps(function)
    def call(*args):
        try:
            return function(*args)
        except passed:
            raise
        except RecursionError as e:
            raise Wrong(f"your {name} recursed without end{_their_line(e)} ({called(*args)})") from None
        except Exception as e:
            raise Wrong(f"your {name} raised {_name(e)}: {e}{_their_line(e)} ({called(*args)})") from None
    return call


def checked(check):
    """A check whose Wrong, wherever the learner's function raised it, is its hint."""
    @functools.wraps(check)
    def run(function):
        try:
            return check(function)
        except Wrong as e:
            return str(e)
    return run
