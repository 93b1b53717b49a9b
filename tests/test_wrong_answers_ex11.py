"""Known-wrong answers to exercise 11 (the unload's reinstatement order) that the grader must
fail, each with the hint it must give. The grader runs each order on a real load, activity and
unload (two CPUs, a SCSI read in flight, a key pressed while the COS masked its line); what the
COS lost is read from the machine."""
import pytest

from vmkit.grading import ex11_unload as grader
from vmkit.kernel import unload

RIGHT = ["park", "unpatch", "tables", "devices", "free"]
WRONG = [
    (["park", "tables", "devices", "free"], "check_cpl0", "the patch list was not restored"),
    (["park", "tables", "devices", "free", "unpatch"], "check_cpl0", "is still int3 (0xCC)"),
    (["park", "unpatch", "devices", "free"], "check_cpl0", "tables not reloaded: IDTR 0x"),
    (["park", "unpatch", "tables", "free"], "check_devices", "the PIC was not handed back"),
    (["park", "unpatch", "tables", "free", "devices"], "check_devices",
     "handed back after the kernel's block was freed"),
    (["unpatch", "tables", "devices", "free"], "check_devices", "CPU 1 was not parked"),
    (["unpatch", "tables", "park", "devices", "free"], "check_devices", "CPU 1 was not parked"),
    (["park", "unpatch", "tables", "devices"], "check_removed", "was not freed"),
    (["park", "unpatch", "free", "tables", "devices"], "check_removed", "\"free\" came before \"tables\""),
    (["park", "unpatch", "tables", "devices", "devices"], "check_cpl0", "listed twice"),
    (["park", "unpatch", "tables", "devices", "clear"], "check_cpl0", "no unload step called 'clear'"),
    ("park unpatch tables devices free", "check_cpl0", "is a list of step names"),
]


@pytest.mark.parametrize("order, check, hint", WRONG, ids=[f"{i}-{c}" for i, (_, c, _) in enumerate(WRONG)])
def test_a_wrong_order_fails_with_its_hint(order, check, hint):
    problem = getattr(grader, check)(lambda: order)
    assert problem and hint in problem, problem


def test_cpu1_left_in_a_block_not_freed_is_not_said_to_be_in_a_freed_one():
    problem = grader.check_devices(lambda: ["unpatch", "tables", "devices"])
    assert "CPU 1 was not parked: it is at EIP" in problem and "(in the kernel's block)" in problem, problem
    problem = grader.check_devices(lambda: ["unpatch", "tables", "devices", "free"])
    assert "(in the kernel's block, freed: zeros now)" in problem, problem


def test_the_right_order_passes_every_check_and_is_the_kernels():
    assert tuple(RIGHT) == unload.ORDER
    assert [fn(lambda: RIGHT) for _, _, fn in grader.CHECKS] == [None, None, None]


def test_a_skipped_unpatch_is_seen_as_the_int3_the_cos_faulted_on():
    seen = grader._seen(("park", "tables", "devices", "free"))
    assert seen["int3"] and all(a in seen["patches"] for a in seen["int3"])
    assert "fault 3" in seen["tail"] and seen["cpl"] == 0


def test_devices_handed_back_in_the_kernel_before_the_tables_lose_nothing_here():
    # The kernel still forwards every IRQ until "tables" (it masks a line as it enters, the COS
    # acknowledges, and a retried int 0x90 gets what its virtual PIC lets in first): on this
    # machine the early hand-back costs the COS nothing, so the grader does not fail it.
    order = ("devices", "park", "unpatch", "tables", "free")
    assert [fn(lambda: list(order)) for _, _, fn in grader.CHECKS] == [None, None, None]
    assert grader._seen(order)["keys"] == 1


def test_a_bad_order_in_the_kernel_is_a_refusal_the_cos_prints_and_nothing_changes():
    from vmkit.hw.board import Board
    from vmkit.cos.cos import COS
    from vmkit.loader import Loader
    board = Board()
    cos, loader = COS.boot(board), Loader(board)
    cos.put_module(loader.module)
    cos.run_command("insmod", grader.LIMIT)
    loader.kernel.unload_order = ["park", "tables", "clear"]
    out = cos.run_command("rmmod", grader.LIMIT)
    assert "vmkload: refused: no unload step called 'clear'" in out
    assert loader.kernel.contains(board.cpu["idtr"][1])        # still displaced: the kernel's IDT
    loader.kernel.unload_order = unload.ORDER
    assert "COS at CPL 0" in cos.run_command("rmmod", grader.LIMIT) and board.cpu.cpl == 0


def test_an_order_that_never_comes_or_ends_the_process_is_stopped_and_named(monkeypatch):
    from vmkit.grading import limit
    monkeypatch.setattr(limit, "CALL_LIMIT", 0.3)

    def forever():
        while True:
            pass

    def exits():
        raise SystemExit(1)
    assert "your reinstatement_order() had not returned after 0.3 s" in grader.check_cpl0(forever)
    assert "your reinstatement_order() raised SystemExit" in grader.check_devices(exits)
