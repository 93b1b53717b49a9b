"""What the kernel keeps from one entry to the next is kept only while what it was
made from holds: each test changes that input and sees the kernel act on the new one."""
from test_cos_contained import displaced  # noqa: F401 (a fixture)


def test_a_trap_frame_kept_by_address_checks_the_cos_stack_limit_the_kernel_has_now(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    board.run(200_000)                                  # entries: frames kept at their addresses
    assert kernel._frames
    ticks, mark = cos.var("TICKS"), board.trace.mark()
    kernel.cos_limit, limit = 0xFFF, kernel.cos_limit   # the COS's stack now lies past its limit
    board.run(200_000)
    refused = board.trace.since(mark, "kernel.cos_limit")
    assert refused and all(e["limit"] == 0xFFF and e["insn"].startswith("IRQ") for e in refused)
    assert cos.var("TICKS") == ticks                    # no tick pushed onto its stack
    kernel.cos_limit = limit
    board.run(200_000)
    assert cos.var("TICKS") > ticks                     # its own limit back: ticks again
