"""The logic behind notebooks 05 and 06: the schedule read from the trace, the
accounting, one switch recorded step by step, claim 15's before/after table,
and the scheduler hook exercise 05 plugs into."""
import re

from vmkit.kernel import save_area
from vmkit.kernel.worlds import round_robin
from vmkit.lessons import worlds as lesson
from vmkit.ui.world_diagrams import worlds_diagram
from vmkit.ui.worlds_panel import SwitchStepper, WorldsPanel, before_after_text


def test_the_timeline_lists_the_worlds_in_the_order_they_ran():
    board, cos, kernel, vms = lesson.two_vms()
    mark = board.trace.mark()
    board.run(300_000)
    turns = lesson.timeline(board.trace, mark)
    switches = board.trace.since(mark, "switch.begin")
    assert len(turns) == len(switches) + 1 >= 10
    assert [t.world for t in turns[1:]] == [e["to"] for e in switches]
    assert [t.world for t in turns[:-1]] == [e["frm"] for e in switches]
    assert all(a.end == b.start for a, b in zip(turns, turns[1:]))
    assert [t.world for t in turns[1:7]] in (["vm1", "vm2", "cos"] * 2, ["vm2", "cos", "vm1"] * 2,
                                             ["cos", "vm1", "vm2"] * 2)
    assert set(lesson.shares(turns)) == {"cos", "vm1", "vm2"}


def test_accounting_is_read_from_the_world_blocks():
    board, cos, kernel, vms = lesson.two_vms()
    board.run(300_000)
    rows = {a["world"]: a for a in lesson.accounting(kernel)}
    for w in kernel.worlds.all:
        assert rows[w.name]["switches in"] == board.memory.read_u32(w.area + save_area.SWITCHES) > 5
    assert rows["cos"]["instructions"] > rows["vm1"]["instructions"] > 0


def test_the_panel_shows_every_console_and_the_diagram_every_world():
    board, cos, kernel, vms = lesson.two_vms()
    panel = WorldsPanel(board, cos, kernel)
    panel.run(300_000)
    text = panel.text()
    assert re.search(r"^vm1 [a-z]$", text, re.M) and re.search(r"^vm2 [a-z]$", text, re.M)
    assert "cos: tick" in text
    assert panel.turns and all(f"title='{t.world} {t.start}..{t.end}'" in panel.strip.value
                               for t in panel.turns)
    source = getattr(worlds_diagram(kernel), "source", "")
    for w in kernel.worlds.all:
        assert f"save area {w.area:#x}" in source and f"{w.region[0]:#x}" in source


def test_one_switch_is_recorded_step_by_step():
    board, cos, kernel, vms = lesson.two_vms()
    board.run(100_000)
    steps = lesson.record_switch(board, kernel, "cos", "vm1")
    assert [s.kind for s in steps] == list(lesson.STEPS)
    assert steps[0].event["frm"] == "cos" and steps[0].event["to"] == "vm1"
    cos_area = kernel.worlds.all[0].area
    # the save step changed the COS's save area to what the COS resumes with
    assert save_area.decode_area(steps[1].areas["cos"])["eip"] == steps[0].world_state["eip"]
    assert steps[0].areas["cos"] != steps[1].areas["cos"] and cos_area
    # the load step put vm1's state in: CPL 3 from then on
    assert steps[3].world_state["cs"] & 3 == 1 and steps[4].world_state["cs"] & 3 == 3
    stepper = SwitchStepper(kernel, steps)
    assert "switch.load" in stepper.go(4) and "save area of vm1" in stepper.view.value


def test_the_before_after_table_lists_every_claim_15_item():
    board, cos, kernel, vms = lesson.two_vms()
    board.run(100_000)
    rows = lesson.before_after(lesson.record_switch(board, kernel))
    names = [r[1] for r in rows]
    assert set(names) == {n for n in save_area.ITEMS if not n.endswith(".flags")}
    for needed in ("eflags", "cs", "ds", "ss", "eip", "gdtr.base", "idtr.base", "ldtr.sel", "tr.sel",
                   "cr3", "eax", "esp", "edi"):
        assert needed in names
    assert all(r[5] for r in rows)
    assert any(r[2] != r[4] for r in rows if r[1] in ("cs", "eip"))       # the state really changed
    assert "descriptor tables: LDTR" in before_after_text(rows)


def test_the_scheduler_pick_is_a_hook():
    board, cos, kernel, vms = lesson.two_vms()
    assert kernel.worlds.chooser is round_robin
    picked = []

    def only_vm1(worlds, current, runnable):
        w = vms[0] if current is not vms[0] and runnable(vms[0]) else worlds[0]
        picked.append(w.name)
        return None if w is current else w
    kernel.worlds.chooser = only_vm1
    board.run(300_000)
    assert picked and "vm2" not in picked
    assert not bytes(vms[1].vmm.console) and bytes(vms[0].vmm.console)
