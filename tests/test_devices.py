"""Claims 5-8, 31-32, 44: the device list handed over, three classes, each enforced."""
import pytest

from vmkit.hw.disk import DiskImage
from vmkit.kernel.devices import ClassificationError
from vmkit.lessons import takeover


@pytest.fixture
def displaced(tmp_path):
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 64), nics=1)
    yield board, cos, loader.kernel
    board.close()


def test_the_cos_hands_over_the_list_it_enumerated(displaced):
    board, cos, kernel = displaced
    enumerated = [(d.name, d.port, d.ports, d.irq) for d in cos.devices()]
    assert [(d.kind, d.base, d.count, d.irq) for d in kernel.devices] == enumerated
    assert {"pic0", "pit0", "serial0", "scsi0", "nic0"} <= {d.name for d in kernel.devices}
    assert "vmkload: device list handed over" in cos.console()


def test_default_classes(displaced):
    board, cos, kernel = displaced
    assert kernel.classes["scsi0"] == kernel.classes["nic0"] == "shared"
    assert kernel.classes["serial0"] == "host-managed"
    assert kernel.classes["pit0"] == kernel.classes["pic0"] == "reserved"


def test_a_cos_access_to_a_reserved_device_traps_and_does_not_reach_it(displaced):
    board, cos, kernel = displaced
    period = board.pit.period
    mark = takeover.run_module(board, cos, "init:\nmov al, 0x34\nout 0x43, al\nmov al, 7\nout 0x40, al\nout 0x40, al\nret")
    refused = [e["insn"] for e in board.trace.since(mark, "kernel.refused")]
    assert refused == ["out 0x43", "out 0x40", "out 0x40"]
    assert board.pit.period == period and not board.trace.since(mark, "pit.start")


def test_a_host_managed_device_is_reached_directly(displaced):
    board, cos, kernel = displaced
    mark = board.trace.mark()
    cos.run_command("mem", 3_000_000)
    assert not [e for e in board.trace.since(mark, "kernel.refused", "kernel.emulate") if "0x3f" in e["insn"]]
    assert "mem" in cos.console()[-200:]


def test_reclassifying_the_serial_port_takes_it_from_the_cos_and_back(displaced):
    board, cos, kernel = displaced
    policy = {c: [n for n, k in kernel.classes.items() if k == c] for c in ("host-managed", "reserved", "shared")}
    policy["host-managed"].remove("serial0")
    policy["reserved"].append("serial0")
    kernel.apply_policy(policy)
    before = len(cos.console())
    board.run(1_500_000)
    assert len(cos.console()) == before                       # its `out`s now trap and are refused
    assert any(e["insn"].startswith("out") for e in board.trace.of("kernel.refused"))
    policy["reserved"].remove("serial0")
    policy["host-managed"].append("serial0")
    kernel.apply_policy(policy)
    board.run(1_500_000)
    assert "cos: tick" in cos.console()[before:]


@pytest.mark.parametrize("change, message", [
    (lambda p: p["reserved"].append("serial0"), "serial0: in two classes"),
    (lambda p: p["shared"].append("floppy0"), "floppy0: no such device"),
    (lambda p: p["host-managed"].remove("serial0"), "serial0: not classified"),
    (lambda p: (p["shared"].remove("scsi0"), p["reserved"].append("scsi0")), "scsi0: the COS's boot disk"),
    (lambda p: p.update({"borrowed": []}), "unknown class 'borrowed'"),
])
def test_an_invalid_classification_is_refused_and_the_old_one_stays(displaced, change, message):
    board, cos, kernel = displaced
    old = dict(kernel.classes)
    bitmap = board.memory.read(kernel.base + 0xB000, 0x2068)
    policy = {c: [n for n, k in old.items() if k == c] for c in ("host-managed", "reserved", "shared")}
    change(policy)
    with pytest.raises(ClassificationError, match=message):
        kernel.apply_policy(policy)
    assert kernel.classes == old
    assert board.memory.read(kernel.base + 0xB000, 0x2068) == bitmap
    assert board.trace.of("kernel.policy_refused")


def moved(kernel, name, cls):
    policy = {c: [n for n, k in kernel.classes.items() if k == c and n != name]
              for c in ("host-managed", "reserved", "shared")}
    policy.setdefault(cls, []).append(name)
    return policy


def accept_anything(devices, policy):
    """A classify that checks nothing: the kernel's own limits must still hold."""
    return {name: cls for cls, names in policy.items() for name in names}


@pytest.mark.parametrize("classify", [None, accept_anything], ids=["kernel's classify", "a classify that checks nothing"])
@pytest.mark.parametrize("policy, message", [
    (lambda k: moved(k, "pit0", "host-managed"), "pit0: the kernel took the PIT .* with the interrupt vectors"),
    (lambda k: moved(k, "pic0", "host-managed"), "pic0: the kernel took the PIC .* with the interrupt vectors"),
    (lambda k: moved(k, "pit0", "shared"), "pit0: the kernel took the PIT"),
    (lambda k: moved(k, "serial0", "shared"), "serial0: the kernel cannot share a serial device .* console would go silent"),
    (lambda k: moved(k, "kbd0", "shared"), "kbd0: the kernel cannot share a kbd device"),
    (lambda k: moved(k, "serial0", "Reserved"), r"serial0: unknown class 'Reserved'|unknown class 'Reserved'"),
    (lambda k: 5, "a policy maps each class to a list of device names.* int: 5"),
    (lambda k: None, "a policy maps each class .* NoneType"),
    (lambda k: [("reserved", ["pic0", "pit0"])], "a policy maps each class .* list"),
    (lambda k: {**moved(k, "scsi0", "shared"), "shared": "scsi0"}, "'shared': a class holds a list of device names, not 'scsi0'"),
    (lambda k: {**moved(k, "scsi0", "shared"), "shared": [0]}, "'shared': a class holds a list of device names"),
])
def test_the_kernel_refuses_what_it_cannot_honour_and_the_old_policy_stays(displaced, classify, policy, message):
    board, cos, kernel = displaced
    if classify is not None:
        kernel.classify = classify
    old, routes = dict(kernel.classes), dict(kernel.irqs.routes)
    bitmap = board.memory.read(kernel.base + 0xB000, 0x2068)
    with pytest.raises(ClassificationError, match=message):
        kernel.apply_policy(policy(kernel))
    assert kernel.classes == old and kernel.irqs.routes == routes
    assert board.memory.read(kernel.base + 0xB000, 0x2068) == bitmap      # the TSS's I/O bitmap, unchanged
    assert board.trace.of("kernel.policy_refused")


def test_after_a_refusal_the_timer_and_the_console_go_on(displaced):
    """pit0 host-managed refused: the COS's `out`s to the PIT still trap, its ticks
    and its console go on."""
    board, cos, kernel = displaced
    with pytest.raises(ClassificationError):
        kernel.apply_policy(moved(kernel, "pit0", "host-managed"))
    with pytest.raises(ClassificationError):
        kernel.apply_policy(moved(kernel, "serial0", "shared"))
    period, ticks, printed = board.pit.period, cos.ticks(), len(cos.console())
    mark = takeover.run_module(board, cos, "init:\nmov al, 0x34\nout 0x43, al\nmov al, 7\nout 0x40, al\nout 0x40, al\nret")
    board.run(1_000_000)
    assert [e["insn"] for e in board.trace.since(mark, "kernel.refused")] == ["out 0x43", "out 0x40", "out 0x40"]
    assert board.pit.period == period
    assert cos.ticks() > ticks + 50 and len(cos.console()) > printed
