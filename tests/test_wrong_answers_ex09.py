"""Known-wrong answers to exercise 09 (guest_segment, vmm_segment) that the grader must fail,
each with the hint it must give. The grader writes the fields into a VM's GDT and runs a 2 MiB
guest that reads its last byte and the first byte past its memory; what it says comes from the
fault the CPU took and from DS as the CPU held it while the guest ran."""
import types

import pytest

from vmkit.grading import ex09_segments as grader


def right(space):
    return 0, (space.guest_end - 1) >> 12, 1


def size_not_last(space):                  # the size in pages, not the last page: one page too long
    return 0, space.guest_end >> 12, 1


def flat(space):                           # the whole 4 GiB: paging is the only fence left
    return 0, 0xFFFFF, 1


def byte_granular(space):                  # G=0: 20 bits of bytes reach 1 MiB
    return 0, 0xFFFFF, 0


def a_page_short(space):
    return 0, ((space.guest_end - 1) >> 12) - 1, 1


def bytes_with_g1(space):                  # the last offset in bytes, with G=1
    return 0, space.guest_end - 1, 1


def based_at_the_vmm(space):               # a base that is not 0
    return 0x1000, (space.guest_end - 1) >> 12, 1


def not_a_tuple(space):
    return {"base": 0, "limit": 0x1FF, "g": 1}


def g_is_a_size(space):
    return 0, 0x1FF, 4096


def the_vmms_answer(space):                # swapped: the VMM's segment, to the kernel's end
    return 0, (space.kernel_end - 1) >> 12, 1


def up_to_the_vmm(space):                  # everything below the VMM region: the guest's?
    return 0, (space.vmm_base - 1) >> 12, 1


def limit_base_g(space):                   # the fields in the wrong order
    return (space.guest_end - 1) >> 12, 0, 1


def true_division(space):                  # / gives a float
    return 0, (space.guest_end - 1) / 4096, 1


def bytes_with_g0(space):                  # the last offset in bytes, G=0: does not fit 20 bits
    return 0, space.guest_end - 1, 0


def one_byte(space):                       # limit 0, G=0: its own first instruction is past it
    return 0, 0, 0


WRONG = [
    (the_vmms_answer, "the VMM's segment may, the guest's stops at its own memory's end"),
    (up_to_the_vmm, "yours ends 0x1fc000 bytes further"),
    (limit_base_g, "the order is (base, limit, g)"),
    (true_division, "// or >> divides without a fraction"),
    (bytes_with_g0, "(G=1 makes it count 4 KiB pages)"),
    (one_byte, "#GP by the limit of its code segment at the instruction at guest address 0x0"),
    (size_not_last, "the limit field names the last offset"),
    (flat, "the page tables stopped it"),
    (byte_granular, "a 2 MiB guest needs G=1"),
    (byte_granular, "a real CPU raises #GP at guest address 0x100000"),
    (a_page_short, "limit 0x1fefff (its hidden part, read from the CPU)"),
    (bytes_with_g1, "with G=1 the limit counts 4 KiB pages"),
    (based_at_the_vmm, "A guest's addresses start at 0"),
    (not_a_tuple, "return (base, limit, g), three integers"),
    (g_is_a_size, "g is the granularity bit, 0 or 1"),
]


@pytest.mark.parametrize("answer, hint", WRONG, ids=[f"{a.__name__}-{i}" for i, (a, _) in enumerate(WRONG)])
def test_a_known_wrong_guest_segment_fails_with_its_hint(answer, hint):
    problem = grader.check_guest(types.SimpleNamespace(guest_segment=answer))
    assert problem and hint in problem, problem


def vmm_right(space):
    return 0, (space.kernel_end - 1) >> 12, 1


def vmm_alone(space):                      # the minimum that holds the VMM: the kernel is past it
    return 0, (space.vmm_end - 1) >> 12, 1


def vmm_based_at_its_region(space):        # base = where the VMM lies, limit its size up to the kernel's end
    return space.vmm_base, (space.kernel_end - space.vmm_base - 1) >> 12, 1


def vmm_byte_granular(space):
    return 0, 0xFFFFF, 0


def vmm_bytes_with_g1(space):
    return 0, space.kernel_end - 1, 1


def vmm_a_page_short(space):               # one page short of the kernel's end: its stack's top
    return 0, ((space.kernel_end - 1) >> 12) - 1, 1


def vmm_the_guests_answer(space):          # swapped: the guest's segment
    return 0, (space.guest_end - 1) >> 12, 1


def vmm_based_one_byte_on(space):         # CPL 0 then runs the VMM's code a byte off: it may never stop
    return 1, (space.kernel_end - 1) >> 12, 1


WRONG_VMM = [
    (vmm_a_page_short, "the kernel's bytes 0x43f000..0x43ffff lie past them"),
    (vmm_the_guests_answer, "gate 0xd's offset 0x3fe0d0 is past the limit 0x1fffff of its code segment 0x60"),
    (vmm_alone, "The VMM's near jmp into the kernel's code ended in #GP"),
    (vmm_alone, "past the limit 0x3fffff of CS (the CPU checks every instruction it fetches"),
    (vmm_alone, "The kernel (to 0x43ffff) lies past your segment"),
    (vmm_based_at_its_region, "The VMM's segment starts at 0"),
    (vmm_based_at_its_region, "triple fault"),
    (vmm_byte_granular, "gate 0xd's offset 0x3fe0d0 is past the limit 0xfffff of its code segment 0x60"),
    (vmm_byte_granular, "must lie inside the VMM's code segment"),
    (vmm_bytes_with_g1, "with G=1 the limit counts 4 KiB pages"),
    # misaligned code ran to the 3,000,000-instruction bound, 15 s: near the grader's time limit
    (vmm_based_one_byte_on, "did not happen within 200000 instructions"),
    (vmm_based_one_byte_on, "with base 0x1 the CPU looked for the VMM's code 0x1 bytes away"),
]


@pytest.mark.parametrize("answer, hint", WRONG_VMM,
                         ids=[f"{a.__name__}-{i}" for i, (a, _) in enumerate(WRONG_VMM)])
def test_a_known_wrong_vmm_segment_fails_with_its_hint(answer, hint):
    problem = grader.check_vmm(types.SimpleNamespace(vmm_segment=answer))
    assert problem and hint in problem, problem


def test_the_right_vmm_segment_reaches_the_kernel_with_the_same_cs_and_ds():
    run = grader.run_vmm(vmm_right)
    entry, kernel = run.seen
    assert entry.cs[0] == kernel.cs[0] == 0x60 and entry.ds[0] == kernel.ds[0] == 0x68
    assert entry.cs[1:3] == kernel.cs[1:3] == (0, run.space.kernel_end - 1)      # as the CPU holds them
    assert entry.ds[1:3] == kernel.ds[1:3] == (0, run.space.kernel_end - 1)
    assert run.space.vmm_base <= entry.eip < run.space.vmm_end                    # the VMM's x86 ...
    assert run.space.kernel_base <= kernel.eip < run.space.kernel_end             # ... the kernel's
    assert run.console.startswith("ab") and not run.stopped
    assert grader.check_vmm(types.SimpleNamespace(vmm_segment=vmm_right)) is None
    assert grader.check_vmm(types.SimpleNamespace(vmm_segment=lambda s: (0, 0xFFFFF, 1))) is None   # longer: fine


def test_the_right_guest_segment_faults_at_the_first_byte_past_and_passes():
    run = grader.run_guest(right)
    assert run.console == "a"                                   # its last byte: read
    assert run.fault["vector"] == 13 and run.fault["error"] == 0 and run.fault["eip"] == 0x13
    assert run.ds[1:3] == (0, run.space.guest_end - 1)          # DS as the CPU held it
    assert grader.check_guest(types.SimpleNamespace(guest_segment=right)) is None
    assert grader.check_guest(types.SimpleNamespace(guest_segment=lambda s: [0, 0x1FF, True])) is None  # G: True is 1


def test_a_learner_that_raises_or_loops_gets_a_clear_message(tmp_path):
    from vmkit.grading.runner import grade, grade_one
    source = (grader.__file__.replace("vmkit/grading/ex09_segments.py", "exercises/ex09_segments.py"))
    text = open(source).read()
    raising = text.replace('raise NotImplementedError("not attempted: write this (see the docstring)")',
                           "return space.base_of_the_guest", 1)
    (tmp_path / "ex09_segments.py").write_text(raising)
    rows = grade_one(tmp_path, "ex09_segments")
    assert rows[0][2] == "fail" and "AttributeError" in rows[0][3] and "ex09_segments.py:" in rows[0][3], rows
    looping = text.replace('raise NotImplementedError("not attempted: write this (see the docstring)")',
                           "while True:\n        pass", 1)
    (tmp_path / "ex09_segments.py").write_text(looping)
    rows = grade(tmp_path, time_limit=1, only="ex09_segments")["ex09_segments"]
    assert all(r[2] == "fail" and "timed out after 1s" in r[3] for r in rows), rows
