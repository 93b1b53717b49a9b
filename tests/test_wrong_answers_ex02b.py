"""Known-wrong answers to exercise 02b (the COS's virtual IF): each must fail, with a
hint from what the machine did, and none may earn a check by doing nothing."""
import pytest

from vmkit.grading import ex02b_virtual_if as grader
from vmkit.kernel.cos_vcpu import emulate_if


def except_for(mnemonic, do):
    """The reference emulation, but `do(vcpu, frame)` for `mnemonic`."""
    def emulate(name, vcpu, frame):
        return do(vcpu, frame) if name == mnemonic else emulate_if(name, vcpu, frame)
    return emulate


def popfd_all_ones(vcpu, frame):
    frame.pop()
    vcpu.vif, frame.eflags = 1, -1


def sti_two(vcpu, frame):
    vcpu.vif = 2


def raises(name, vcpu, frame):
    raise KeyError(name)


WRONG = {
    # the COS runs with vif 1 at the takeover and its ticks went on: an empty answer earned this check
    "does nothing": (lambda name, vcpu, frame: None, grader.check_ticks_go_on,
                     "after it its virtual IF in kernel memory was 1"),
    # sti setting vif to 2 passed every check (only popfd's vif was read)
    "sti sets vif to 2": (except_for("sti", sti_two), grader.check_displaced,
                          "after the COS ran sti, its virtual CPU in kernel memory holds vif = 2; expected 1"),
    # the hint was "does sti set vcpu.vif to 1 and cli to 0?": the COS was single-stepping
    "popfd sets every flag": (except_for("popfd", popfd_all_ones), grader.check_ticks_go_on,
                              "#DB after each instruction, as TF (bit 8) is set"),
    # a traceback through the kernel's trap handler, with the learner's file and line only as its last frame
    "raises": (raises, grader.check_critical_section,
               "your emulate_if raised KeyError: 'pushfd' at line 26 of test_wrong_answers_ex02b.py "
               "(emulating the COS's pushfd)"),
}


@pytest.mark.parametrize("what", WRONG)
def test_a_wrong_emulation_fails_with_its_hint(what):
    emulate, check, hint = WRONG[what]
    message = check(emulate)
    assert message and hint in message, f"{what}: {message!r}"
