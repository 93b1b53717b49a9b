"""A module the COS loads after the takeover is patched (pushfd/popfd/iretd to int3)
the first time the kernel sees the COS after it is copied in, as a binary translator
meets new code; one already patched is left as it is, patch table and all."""
from vmkit.cos import layout as cos_layout
from vmkit.cos.cos import COS
from test_cos_contained import displaced, run_module  # noqa: F401 (a fixture)

CODE = cos_layout.MODULE_CODE
SOURCE = "init:\npushfd\npopfd\nxor eax, eax\nret"


def patched(board, kernel):
    """(the module's first two bytes in memory, what the kernel's patch table says of them)"""
    return board.memory.read(CODE, 2), kernel.patches.get(CODE), kernel.patches.get(CODE + 1)


def test_a_module_copied_in_after_the_takeover_runs_patched(displaced):
    board, cos, loader = displaced
    run_module(board, cos, SOURCE)
    assert patched(board, loader.kernel) == (b"\xcc\xcc", "pushfd", "popfd")
    assert cos.var("MODULE_RESULT") == 0                 # its pushfd/popfd trapped and were emulated


def test_a_module_whose_header_alone_changes_keeps_its_patches(displaced):
    board, cos, loader = displaced
    run_module(board, cos, SOURCE)
    board.memory.write(cos_layout.MODULE_AREA + 12, b"\x01\x00\x00\x00")   # the reserved word
    board.run(200_000)                                   # timer ticks: the COS traps (EOI, iretd)
    assert loader.kernel.vcpu.traps and board.cpu.shutdown is None
    assert patched(board, loader.kernel) == (b"\xcc\xcc", "pushfd", "popfd")


def test_the_same_module_copied_again_is_patched_again(displaced):
    board, cos, loader = displaced
    run_module(board, cos, SOURCE)
    cos.put_module(COS.make_module(SOURCE))               # its original bytes back
    assert board.memory.read(CODE, 2) == b"\x9c\x9d"
    board.run(200_000)
    assert patched(board, loader.kernel) == (b"\xcc\xcc", "pushfd", "popfd")


def test_another_module_forgets_the_old_ones_patches(displaced):
    board, cos, loader = displaced
    run_module(board, cos, SOURCE)
    run_module(board, cos, "init:\nnop\nnop\npushfd\npopfd\nxor eax, eax\nret")
    kernel = loader.kernel
    assert board.memory.read(CODE, 4) == b"\x90\x90\xcc\xcc"
    assert kernel.patches.get(CODE) is None and kernel.patches.get(CODE + 2) == "pushfd"
