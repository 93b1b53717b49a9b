"""What a learner sees must fit and must show everything: notebook 03's device diagram fits a
notebook's column, and the schedule strips of notebooks 05 and 07 show every turn, however short."""
import re
import shutil

import pytest

from vmkit.lessons import worlds
from vmkit.lessons.worlds import Turn
from vmkit.ui.worlds_panel import MIN_TURN_PX, timeline_html

COLUMN_PX = 900          # JupyterLab's notebook column, about


def cells(strip_html):
    """(title, width in px) of each cell of a rendered strip, in order."""
    return [(title, int(w)) for title, w in
            re.findall(r"<div title='([^']*)' style='[^']*width:(\d+)px", strip_html)]


def test_a_one_instruction_turn_shows_in_the_strip():
    turns = [Turn("cos", 0, 100_000), Turn("vm1", 100_000, 100_001), Turn("vm2", 100_001, 200_000)]
    shown = cells(timeline_html(turns, width=720))
    assert [t for t, _ in shown] == ["cos 0..100000", "vm1 100000..100001", "vm2 100001..200000"]
    assert shown[1][1] >= MIN_TURN_PX
    assert shown[0][1] == shown[2][1] > 300          # the long turns keep their proportions


def test_many_short_turns_wrap_onto_rows_and_each_keeps_its_width():
    turns, t = [], 0
    for _ in range(150):                            # notebook 07's CPU 1: 450 turns in 300,000
        for world, n in (("system1", 1726), ("vm1", 137), ("vm3", 137)):
            turns.append(Turn(world, t, t + n))
            t += n
    strip = timeline_html(turns, width=720)
    shown = cells(strip)
    assert len(shown) == len(turns) and min(w for _, w in shown) >= MIN_TURN_PX
    assert "flex-wrap:wrap" in strip and "width:720px" in strip
    assert shown[0][1] > shown[1][1]                # longer turns stay longer


def test_every_turn_of_a_real_schedule_is_visible():
    board, cos, kernel, vms = worlds.two_vms()
    board.run(100_000)
    mark = board.trace.mark()
    board.run(200_000)
    turns = worlds.timeline(board.trace, mark)
    vm_turns = [t for t in turns if t.world != "cos"]
    assert vm_turns and all(t.end - t.start < 1000 for t in vm_turns)    # short, as in notebook 05
    shown = cells(timeline_html(turns))
    assert [t for t, _ in shown] == [f"{t.world} {t.start}..{t.end}" for t in turns]
    assert min(w for _, w in shown) >= MIN_TURN_PX


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed")
def test_the_device_diagram_fits_a_notebook_column():
    from vmkit.lessons import devices
    from vmkit.ui.device_diagrams import device_diagram_html
    board, cos, kernel = devices.machine()
    svg = device_diagram_html(kernel)
    width_pt = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
    assert width_pt * 96 / 72 <= COLUMN_PX
    assert all(d.name in svg for d in kernel.devices)   # scaled to fit, not cut
