"""Known-wrong answers to exercise 10 (resolve) that the grader must fail, each with the hint
it must give. The grader plugs them into the kernel's block resolution while VMs read and write
their VDISKs: a wrong address is a wrong read (or a failed request) seen by the guest's driver."""
import pytest

from vmkit.grading import ex10_vmfs as grader
from vmkit.kernel.vmfs_address import number


def right(fd, block, pointer_block):
    if not fd.pointer_blocks:
        return fd.addresses[block]
    return pointer_block(number(fd.addresses[block // 1024]))[block % 1024]


def no_pointer_block_level(fd, block, pointer_block):          # the descriptor's entry itself
    return fd.addresses[block // 1024] if fd.pointer_blocks else fd.addresses[block]


def off_by_one_in_the_pointer_block(fd, block, pointer_block):
    if not fd.pointer_blocks:
        return fd.addresses[block]
    return pointer_block(number(fd.addresses[block // 1024]))[(block + 1) % 1024]


def direct_addresses_past_256(fd, block, pointer_block):        # ignores fd.pointer_blocks
    if block < 256:
        return fd.addresses[block]
    return pointer_block(number(fd.addresses[block // 1024]))[block % 1024]


def the_number_not_the_address(fd, block, pointer_block):      # type bits lost
    return number(right(fd, block, pointer_block))


def always_through_pointer_blocks(fd, block, pointer_block):
    return pointer_block(number(fd.addresses[block // 1024]))[block % 1024]


def direct_below_256_blocks(fd, block, pointer_block):          # a file of 256 blocks is direct too
    if fd.blocks < 256:
        return fd.addresses[block]
    return pointer_block(number(fd.addresses[block // 1024]))[block % 1024]


def direct_up_to_1024_blocks(fd, block, pointer_block):         # 1024: a pointer block's, not a descriptor's
    if fd.blocks <= 1024:
        return fd.addresses[block]
    return pointer_block(number(fd.addresses[block // 1024]))[block % 1024]


def the_index_as_the_pointer_block_number(fd, block, pointer_block):
    if not fd.pointer_blocks:
        return fd.addresses[block]
    return pointer_block(block // 1024)[block % 1024]


def tbz_cleared(fd, block, pointer_block):                      # "flag bits" masked off
    return right(fd, block, pointer_block) & ~0x20


def as_a_float(fd, block, pointer_block):
    return float(right(fd, block, pointer_block))


WRONG = [
    (direct_below_256_blocks, "check_direct", "has no pointer blocks"),
    (direct_up_to_1024_blocks, "check_indirect", "used as direct block addresses, but this file has 300"),
    (the_index_as_the_pointer_block_number, "check_indirect", "pointer_block(p) takes the pointer block's "
                                                             "number, number(fd.addresses[block // 1024])"),
    (tbz_cleared, "check_writes", "bit 5 (TBZ, to be zeroed) cleared"),
    (as_a_float, "check_direct", "(a float, not an int)"),
    (no_pointer_block_level, "check_indirect", "one level of indirection is missing"),
    (off_by_one_in_the_pointer_block, "check_indirect", "off-by-one in the index (block % 1024"),
    (direct_addresses_past_256, "check_indirect", "used as direct block addresses"),
    (the_number_not_the_address, "check_indirect", "wrong type bits"),
    (the_number_not_the_address, "check_direct", "wrong type bits"),
    (always_through_pointer_blocks, "check_direct", "has no pointer blocks"),
]


@pytest.mark.parametrize("answer, check, hint", WRONG, ids=[f"{a.__name__}-{c}" for a, c, _ in WRONG])
def test_a_wrong_answer_fails_with_its_hint(answer, check, hint):
    problem = getattr(grader, check)(answer)
    assert problem and hint in problem, problem
    assert "VDISK block" in problem                                 # names the block


def test_the_right_answer_passes_every_check():
    assert [fn(right) for _, _, fn in grader.CHECKS] == [None, None, None]


def loops_forever(fd, block, pointer_block):
    while True:
        pass


def exits(fd, block, pointer_block):
    raise SystemExit(0)


@pytest.mark.parametrize("answer, hint", [
    (loops_forever, "had not returned after 0.3 s: a loop that never ends?"),
    (exits, "raised SystemExit: the grader calls your function")])
def test_a_resolve_that_never_returns_is_stopped_and_named(answer, hint, monkeypatch):
    from vmkit.grading import limit
    monkeypatch.setattr(limit, "CALL_LIMIT", 0.3)
    problem = grader.check_indirect(answer)
    assert problem and hint in problem and "your resolve, called for VDISK block 0" in problem, problem
