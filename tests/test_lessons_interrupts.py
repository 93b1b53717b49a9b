"""The logic behind notebooks 03 and 04: an IRQ's steps from the trace, the
device panel's consequences read from the machine, the shared SCSI demo."""
import pytest

from vmkit.hw.x86 import TSS_SIZE
from vmkit.kernel import layout
from vmkit.kernel.kernel import WORK_LENGTH
from vmkit.lessons import devices, interrupts

ORDER = ["raised", "into the kernel", "masked", "queued", "the COS runs", "delivered", "the COS's EOI", "unmasked"]


@pytest.fixture
def displaced():
    return interrupts.displaced()


@pytest.fixture
def machine():
    board, cos, kernel = devices.machine()
    yield board, cos, kernel
    board.close()


# ---- irq_steps -------------------------------------------------------------------------
def test_irq_steps_of_a_serial_irq_are_the_claimed_order(displaced):
    board, cos, kernel = displaced
    board.run(4_000)                           # the COS idles in the kernel's idle loop
    assert kernel.away == "idle"
    steps = interrupts.follow(board, cos, kernel, "serial")
    assert [s.name for s in steps] == ORDER
    assert [s.event.kind for s in steps] == ["irq.raise", "cpu.deliver", "irq.masked", "irq.queued",
                                             "kernel.cos_runs", "kernel.inject", "irq.cos_eoi", "irq.unmasked"]
    times = [s.time for s in steps]
    assert times == sorted(times)
    by_name = {s.name: s.event for s in steps}
    assert by_name["into the kernel"]["vector"] == 0x24 and kernel.contains(by_name["into the kernel"]["handler"])
    assert by_name["delivered"]["vector"] == 0x24 and not kernel.contains(by_name["delivered"]["handler"])
    assert all(by_name[n]["line"] == interrupts.SERIAL for n in ("raised", "masked", "queued", "the COS's EOI"))


def test_irq_steps_follow_the_first_irq_and_borrow_nothing_from_a_later_one(displaced):
    board, cos, kernel = displaced
    kernel.irqs.masking = False                # no masked / unmasked steps of its own
    mark = board.trace.mark()
    cos.type("a")
    board.run(2_000)
    kernel.irqs.masking = True                 # the second IRQ is masked and unmasked
    cos.type("b")
    board.run(2_000)
    steps = interrupts.irq_steps(board.trace, mark, interrupts.SERIAL)
    names = [s.name for s in steps]
    assert "masked" not in names and "unmasked" not in names
    assert names[0] == "raised" and names[-1] == "the COS's EOI"
    first_raise = board.trace.since(mark, "irq.raise")[0]
    assert steps[0].event is first_raise
    later = [e for e in board.trace.since(mark, "irq.masked")]
    assert later and all(e.time > steps[-1].time for e in later)


def test_irq_steps_stop_at_the_first_missing_required_step(displaced):
    board, cos, kernel = displaced
    mark = board.trace.mark()
    cos.type("c")
    board.run(3)                               # into the kernel, not yet delivered
    names = [s.name for s in interrupts.irq_steps(board.trace, mark, interrupts.SERIAL)]
    assert names[:2] == ["raised", "into the kernel"] and "delivered" not in names
    assert interrupts.irq_steps(board.trace, mark, interrupts.SENSOR) == []


def test_an_irq_raised_while_the_kernel_works_waits_until_the_cos_next_runs(displaced):
    board, cos, kernel = displaced
    interrupts.until_kernel_works(board, kernel)
    assert kernel.away == "work"
    work = kernel.work_done()
    steps = interrupts.follow(board, cos, kernel, "serial", during_work=False)
    by_name = {s.name: s for s in steps}
    assert by_name["into the kernel"].event["cpl"] == "0->0"          # it interrupted the kernel
    assert by_name["queued"].time < by_name["the COS runs"].time <= by_name["delivered"].time
    assert interrupts.waited(steps) > 3_000                            # the rest of a piece of work
    assert kernel.work_done() >= (work // WORK_LENGTH + 1) * WORK_LENGTH   # it finished that piece


def test_until_kernel_works_gives_up_after_its_limit(displaced):
    board, cos, kernel = displaced
    with pytest.raises(TimeoutError):
        interrupts.until_kernel_works(board, kernel, step=100, limit=1_000)


# ---- the IRQ timeline widget ---------------------------------------------------------------
def test_the_timeline_shows_the_delay_of_an_irq_raised_during_kernel_work(displaced):
    from vmkit.ui.irq_timeline import IrqTimeline
    board, cos, kernel = displaced
    timeline = IrqTimeline(board, cos, kernel)
    prompt = timeline.trigger("keyboard")
    assert [s.name for s in prompt][:2] == ["raised", "into the kernel"]
    delayed = timeline.trigger("serial", during_work=True)
    assert interrupts.waited(delayed) > 3_000
    assert f"queued → delivered: {interrupts.waited(delayed)} instructions" in timeline.text()
    assert "raised while the kernel was at its own work" in timeline.text()
    assert "<table>" in timeline.view.value and "delivered" in timeline.view.value


def test_the_storm_panel_puts_both_settings_side_by_side():
    from vmkit.ui.irq_timeline import StormPanel
    panel = StormPanel(instructions=20_000)
    panel.run(masking=False)
    panel.run(masking=True)
    text = panel.text().splitlines()
    assert "masking on" in text[0] and "masking off" in text[0]
    storm = next(line for line in text if line.startswith("storm detected"))
    assert storm.split()[2] == "no" and "after 201 IRQs" in storm


# ---- notebook 03: the consequences, read from the machine ------------------------------------
def test_the_panel_says_a_reserved_devices_ports_trap_and_are_refused(machine):
    from vmkit.ui.device_panel import DevicePanel
    board, cos, kernel = machine
    panel = DevicePanel(board, cos, kernel)
    assert _row(panel, "serial0")[1] == devices.DIRECT
    panel.choose("serial0", "reserved")
    assert panel.apply()
    assert _row(panel, "serial0")[1:] == (devices.REFUSED, "the kernel")
    assert "serial0" in panel.table.value and devices.REFUSED in panel.table.value
    printed, refused = panel.run()
    assert printed == 0 and any(e["insn"].startswith("out 0x3f8") for e in refused)


def test_the_port_column_is_read_from_the_tss_bitmap_not_from_the_classes(machine):
    board, cos, kernel = machine
    kernel.apply_policy(devices.moved(devices.policy_of(kernel), "serial0", "reserved"))
    serial = next(d for d in kernel.devices if d.name == "serial0")
    at = kernel.base + layout.TSS + TSS_SIZE + serial.base // 8      # 0x3f8..0x3ff: one byte
    assert board.memory.read(at, 1) == b"\xff"
    board.memory.write(at, b"\x00", code=False)                      # grant them behind the kernel's back
    assert kernel.classes["serial0"] == "reserved"
    assert devices.port_access(kernel, serial) == devices.DIRECT
    board.memory.write(at, b"\x0f", code=False)
    assert devices.port_access(kernel, serial) == devices.MIXED


def test_shared_and_host_managed_consequences(machine):
    board, cos, kernel = machine
    rows = {d.name: (access, irq) for d, _, access, irq in devices.consequences(kernel)}
    assert rows["scsi0"] == (devices.SERVED, "the kernel, forwarded when it is the COS's")
    assert rows["kbd0"][0] == devices.DIRECT and "through the kernel (masked" in rows["kbd0"][1]
    assert rows["pic0"][0] == devices.VIRTUAL_PIC
    kernel.irqs.masking = False
    assert "masking switched off" in devices.irq_route(kernel, next(d for d in kernel.devices if d.name == "kbd0"))


@pytest.mark.parametrize("change, message", [
    (lambda p: p["reserved"].append("serial0"), "serial0: in two classes"),
    (lambda p: devices.moved(p, "scsi0", "reserved"), "scsi0: the COS's boot disk"),
])
def test_the_panel_shows_a_refusal_and_the_old_classes_stay(machine, change, message):
    from vmkit.ui.device_panel import DevicePanel
    board, cos, kernel = machine
    panel = DevicePanel(board, cos, kernel)
    before, bitmap = dict(kernel.classes), devices.io_bitmap(kernel)
    policy = devices.policy_of(kernel)
    policy = change(policy) or policy
    assert not panel.apply(policy)
    assert message in panel.text() and "still the previous one" in panel.text()
    assert kernel.classes == before and devices.io_bitmap(kernel) == bitmap
    assert {n: dd.value for n, dd in panel.dropdowns.items()} == before


def test_the_device_diagram_draws_what_the_bitmap_says(machine):
    from vmkit.ui.device_diagrams import device_graph
    board, cos, kernel = machine
    assert 'cos -> serial0 [label="ports: direct"' in device_graph(kernel).source
    kernel.apply_policy(devices.moved(devices.policy_of(kernel), "serial0", "reserved"))
    source = device_graph(kernel).source
    assert 'cos -> serial0 [label="ports: trap\n→ refused"' in source
    assert "cluster_reserved" in source


# ---- the shared SCSI controller ------------------------------------------------------------
def test_share_scsi_serves_both_and_the_cos_waits_its_turn(machine):
    board, cos, kernel = machine
    result = devices.share_scsi(board, cos, kernel)
    assert result["completed"] == {"cos": 2, "kernel": 12}
    assert result["COS read back its block"] and result["kernel read back its blocks"]
    assert result["doorbells rung while busy"] == 0
    kinds = [(e.kind, e.data.get("owner")) for e in result["events"]]
    starts = [owner for kind, owner in kinds if kind == "scsi.share_start"]
    assert starts == ["kernel"] * 6 + ["cos"] * 2 + ["kernel"] * 6
    ring = kinds.index(("kernel.emulate", None))                   # the COS's first trapped doorbell
    assert ("scsi.share_done", "kernel") in kinds[ring:ring + 2]   # ... came while the kernel's was in flight


def _row(panel, name):
    return next((d.name, access, irq) for d, _, access, irq in devices.consequences(panel.kernel) if d.name == name)
