"""The machine without its C library (no C compiler: counter.library() is None): the same machine,
the counter a Python code hook, the limit checks Python's; and the learner told once why it is slower."""
import pytest

from vmkit.hw import counter
from vmkit.lessons.takeover import takeover


def _run(monkeypatch, compiled):
    """The COS boots and insmods the loader with a timer tick every 2000 instructions (as long
    as run_command's step: a slice that stops early then matters), then runs on."""
    if not compiled:
        monkeypatch.setattr(counter, "_LIB", False)    # library() is None, as without a compiler
    board, cos, loader = takeover(timer_period=2000)
    assert (counter.library() is not None) is compiled
    board.run(20_000)
    events = [(e.time, e.cpu, e.kind, tuple(sorted(e.data.items()))) for e in board.trace.events]
    return board.clock, bytes(board.uart.output), events, loader.kernel is not None


@pytest.mark.needs_c("the run with the library, to compare against")
def test_without_the_library_the_machine_runs_the_same_to_the_instruction(monkeypatch):
    """Each EOI the COS's timer handler writes stops the slice early (the PIC asks the board to
    deliver the waiting serial IRQ). Unicorn's count= charged such a slice whole, so the next
    tick always came first, won over the serial line, and the COS never read 'insmod': now
    the same trace, virtual times included, as with the C counter."""
    clock, output, events, loaded = _run(monkeypatch, compiled=True)
    monkeypatch.undo()
    assert _run(monkeypatch, compiled=False) == (clock, output, events, loaded)
    assert loaded and b"vmkload: vmkernel running; COS displaced" in output


def test_without_a_compiler_the_learner_is_told_once(monkeypatch):
    monkeypatch.setattr(counter, "_LIB", None)
    monkeypatch.setattr(counter, "_build", lambda: None)
    monkeypatch.setattr(counter.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"no C compiler: none of cc, gcc, clang on PATH.*the same machine.*apt-get install gcc"):
        assert counter.library() is None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert counter.library() is None              # once: not again


def test_without_the_library_every_escape_of_the_cos_is_still_refused(monkeypatch):
    """Notebook 09's escapes (a store into the kernel's IDT past the COS's limit, a jump into
    the kernel's code past CS's limit, ...): the machine refuses each with its fault, the
    limit checks made in Python (limits_python.py) where the C filter is missing."""
    from vmkit.lessons import cos_escapes
    monkeypatch.setattr(counter, "_LIB", False)
    attempts = cos_escapes.escapes()
    assert len(attempts) == 5 and all(a.refused for a in attempts), "\n".join(map(str, attempts))
