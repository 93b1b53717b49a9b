"""Known-wrong answers to exercise 02a (the kernel's IDT): each must fail with a hint
that says why, in words, never a raw trace event's repr."""
import pytest

from vmkit.grading import ex02a_kernel_idt as grader
from vmkit.hw.x86 import encode_gate


def build(dpl=lambda v, cos: 1 if v in cos else 0, ret=None, raises=None):
    def build_kernel_idt(stubs, selector, cos_vectors):
        if raises:
            raise raises
        if ret is not None:
            return ret
        return b"".join(encode_gate(stubs[v], selector, type=0xE, dpl=dpl(v, cos_vectors)) for v in range(256))
    return build_kernel_idt


WRONG = {
    # the refusal was shown as "[Event(time=21132, cpu=0, kind='load.refused', data={...})]"
    "returns an int": (build(ret=0), "gates",
                     "the loading module refused the load: build_idt must give bytes, it gave"),
    "returns a str": (build(ret="x" * 2048), "everything",
                      "the loading module refused the load: build_idt must give bytes, it gave str"),
    "half a table": (build(ret=bytes(1024)), "everything",
                     "refused the load: the kernel IDT must be 2048 bytes, build_idt gave 1024"),
    "raises": (build(raises=KeyError(7)), "gates",
               "your build_kernel_idt raised KeyError: 7 at line 12 of test_wrong_answers_ex02a.py"),
    # the hint now says who may then raise it
    "DPL 3 for the COS's vectors": (build(dpl=lambda v, cos: 3 if v in cos else 0), "gates",
                                    "a VM's, could then raise vector 0x3 with `int 0x3`"),
    "DPL 0 for the COS's vectors": (build(dpl=lambda v, cos: 0), "gates",
                                    "through a DPL 0 gate its `int` is a #GP"),
}


@pytest.mark.parametrize("what", WRONG)
def test_a_wrong_idt_fails_with_its_hint(what):
    answer, check, hint = WRONG[what]
    message = (grader.check_gates if check == "gates" else grader.check_kernel_gets_everything)(answer)
    assert message and hint in message, f"{what}: {message!r}"
    assert "Event(" not in message
