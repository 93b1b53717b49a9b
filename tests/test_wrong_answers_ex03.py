"""Known-wrong answers to exercise 03 (classify the handed-over devices): each must fail
with a hint in words, never the kernel's ClassificationError escaping the grader."""
import pytest

from vmkit.grading import ex03_classify as grader
from vmkit.kernel import devices


def returning(value):
    return lambda devices_, policy: value


def raising(devices_, policy):
    raise KeyError("serial0")


def refusing(devices_, policy):
    raise devices.ClassificationError("serial0: no")


def with_extra(devices_, policy):
    return {**devices.classify(devices_, policy), "floppy0": "shared"}


WRONG = {
    # the kernel's refusal of None escaped check_enforced as "ClassificationError: ... (devices.py:121)"
    "returns None": (returning(None), grader.check_enforced,
                     "the kernel refused what your classify returned (None): the classification is a NoneType"),
    "a device that is not there": (with_extra, grader.check_enforced,
                                   "the kernel refused what your classify returned ({"),
    "refuses a valid policy": (refusing, grader.check_enforced, "is valid (serial0 reserved), yet your classify refused it"),
    # None for a bad policy read "was accepted by your classify"
    "returns None for a bad policy": (returning(None), grader.check_bad_policies,
                                      "your classify returned None for"),
    "raises": (raising, grader.check_good_policies,
               "your classify raised KeyError: 'serial0' at line 14 of test_wrong_answers_ex03.py"),
}


@pytest.mark.parametrize("what", WRONG)
def test_a_wrong_classify_fails_with_its_hint(what):
    classify, check, hint = WRONG[what]
    message = check(classify)
    assert message and hint in message, f"{what}: {message!r}"
