"""The displaced COS cannot run the kernel's code: a jump past its code segment's limit
is a #GP(0) at the jump's target, before the instruction there runs (the platform checks
each fetch against CS's limit, hw/limits.py), delivered into the kernel."""
from test_cos_contained import displaced, run_module   # noqa: F401 (a fixture)


def test_a_cos_jump_into_the_kernels_code_faults_at_its_target(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    target = kernel.base + kernel.image.entry + 0x20
    mark = run_module(board, cos, f"""
init:   mov eax, {target:#x}
        jmp eax""")
    faults = [e for e in board.trace.since(mark, "cpu.fault") if e["eip"] == target]
    assert [(e["vector"], e["error"]) for e in faults] == [(13, 0)]
    assert "of CS" in faults[0]["why"] and "past the limit" in faults[0]["why"]
    delivered = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 13]
    assert delivered and kernel.contains(delivered[0]["handler"])     # into the kernel's IDT
    assert board.cpu.shutdown is None                                  # the kernel runs on
