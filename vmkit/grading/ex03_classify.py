"""Grades exercise 03: the kernel classifies the handed-over devices with the
learner's function; good policies must come out right, bad ones refused
naming the device with nothing applied, and the result enforced."""
from vmkit.kernel import devices
from vmkit.lessons import interrupts

GOOD = [devices.DEFAULT_POLICY,
        {"host-managed": ["serial0", "kbd0", "sensor0", "scsi0"], "reserved": ["pic0", "pit0"], "shared": []},
        {"host-managed": [], "reserved": ["pic0", "pit0", "serial0", "kbd0", "sensor0"], "shared": ["scsi0"]}]
BAD = [("serial0", lambda p: p["reserved"].append("serial0")),
       ("floppy0", lambda p: p["shared"].append("floppy0")),
       ("kbd0", lambda p: p["host-managed"].remove("kbd0")),
       ("scsi0", lambda p: (p["shared"].remove("scsi0"), p["reserved"].append("scsi0")))]


def _machine(classify):
    board, cos, kernel = interrupts.displaced(disk=None)
    kernel.classify = classify
    return board, cos, kernel


def _policy(base, names):
    return {cls: [n for n in members if n in names] for cls, members in base.items()}


def check_good_policies(classify):
    from tempfile import mkdtemp
    from vmkit.hw.disk import DiskImage
    board, cos, kernel = interrupts.displaced(disk=DiskImage.create(mkdtemp() + "/d.img", 16))
    names = {d.name for d in kernel.devices}
    for policy in GOOD:
        policy = _policy(policy, names)
        want = devices.classify(kernel.devices, policy)
        got = classify(kernel.devices, policy)
        if dict(got) != want:
            return f"policy {policy}: expected {want}, got {dict(got)}"
    return None


def check_bad_policies(classify):
    from tempfile import mkdtemp
    from vmkit.hw.disk import DiskImage
    board, cos, kernel = interrupts.displaced(disk=DiskImage.create(mkdtemp() + "/d.img", 16))
    kernel.classify = classify
    names = {d.name for d in kernel.devices}
    for device, damage in BAD:
        policy = _policy(devices.DEFAULT_POLICY, names)
        damage(policy)
        before = dict(kernel.classes)
        try:
            kernel.apply_policy(policy)
        except devices.ClassificationError as e:
            if not str(e).startswith(device):
                return f"the error for a bad {device} should start with '{device}:', it says {str(e)!r}"
        else:
            return f"{policy} was accepted; {device} makes it invalid"
        if kernel.classes != before:
            return "a refused policy changed the classes in force"
    return None


def check_enforced(classify):
    board, cos, kernel = _machine(classify)
    names = {d.name for d in kernel.devices}
    policy = _policy(devices.DEFAULT_POLICY, names)
    policy["host-managed"].remove("serial0")
    policy["reserved"].append("serial0")
    kernel.apply_policy(policy)
    before = len(cos.console())
    board.run(1_200_000)
    if len(cos.console()) != before:
        return "serial0 reserved, yet the COS still printed on it"
    return None


CHECKS = [("classifies good policies", 1, check_good_policies),
          ("refuses bad ones, naming the device", 2, check_bad_policies),
          ("the machine enforces the result", 1, check_enforced)]
FUNCTION = "classify"
