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
