"""Grades exercise 03: the kernel classifies the handed-over devices with the
learner's function; good policies must come out right, bad ones refused
naming the device with nothing applied, and the result enforced."""
from vmkit.kernel import devices
from vmkit.lessons import interrupts

from .learner import checked, guard

GOOD = [devices.DEFAULT_POLICY,
        {"host-managed": ["serial0", "kbd0", "sensor0", "scsi0"], "reserved": ["pic0", "pit0"], "shared": []},
        {"host-managed": [], "reserved": ["pic0", "pit0", "serial0", "kbd0", "sensor0"], "shared": ["scsi0"]}]
# (what makes the policy bad, what the refusal must start with or name, the damage to a good policy)
BAD = [("serial0 in two classes", "serial0", lambda p: p["reserved"].append("serial0")),
       ("floppy0, no device of the list", "floppy0", lambda p: p["shared"].append("floppy0")),
       ("kbd0 in no class", "kbd0", lambda p: p["host-managed"].remove("kbd0")),
       ("the boot disk's controller scsi0 reserved", "scsi0",
        lambda p: (p["shared"].remove("scsi0"), p["reserved"].append("scsi0"))),
       ("the unknown class 'Reserved'", "'Reserved'",
        lambda p: (p["host-managed"].remove("serial0"), p.setdefault("Reserved", []).append("serial0")))]


def _guarded(classify):
    """The learner's classify: its ClassificationError is its answer, any other exception a hint."""
    return guard(classify, "classify", lambda devices_, policy: f"classifying by the policy {policy}",
                 expected=(devices.ClassificationError,))


def _machine(classify):
    board, cos, kernel = interrupts.displaced(disk=None)
    kernel.classify = _guarded(classify)
    return board, cos, kernel


def _policy(base, names):
    return {cls: [n for n in members if n in names] for cls, members in base.items()}


@checked
def check_good_policies(classify):
    classify = _guarded(classify)
    from tempfile import mkdtemp
    from vmkit.hw.disk import DiskImage
    board, cos, kernel = interrupts.displaced(disk=DiskImage.create(mkdtemp() + "/d.img", 16))
    names = {d.name for d in kernel.devices}
    for policy in GOOD:
        policy = _policy(policy, names)
        want = devices.classify(kernel.devices, policy)
        try:
            got = classify(kernel.devices, policy)
        except devices.ClassificationError as e:
            return f"policy {policy} is valid, yet your classify refused it: {e}"
        if not isinstance(got, dict):
            return f"policy {policy}: classify returned {got!r}; return a dict {{device name: class}}"
        if dict(got) != want:
            return f"policy {policy}: expected {want}, got {dict(got)}"
    return None


@checked
def check_bad_policies(classify):
    classify = _guarded(classify)
    from tempfile import mkdtemp
    from vmkit.hw.disk import DiskImage
    board, cos, kernel = interrupts.displaced(disk=DiskImage.create(mkdtemp() + "/d.img", 16))
    said = []                                  # what the learner's classify answered, policy by policy

    def watched(devices_, policy):
        try:
            said.append(classify(devices_, policy))
        except devices.ClassificationError as e:
            said.append(e)
            raise
        return said[-1]

    kernel.classify = watched
    names = {d.name for d in kernel.devices}
    for what, named, damage in BAD:
        policy = _policy(devices.DEFAULT_POLICY, names)
        damage(policy)
        before = dict(kernel.classes)
        said.clear()
        try:
            kernel.apply_policy(policy)
            kernel_refused = False
        except devices.ClassificationError:
            kernel_refused = True
        if said and not isinstance(said[-1], (dict, devices.ClassificationError)):
            return (f"your classify returned {said[-1]!r} for {policy}: {what} makes it invalid, "
                    f"so it must raise ClassificationError naming it")
        if not said or not isinstance(said[-1], devices.ClassificationError):
            return (f"{policy} was accepted by your classify"
                    + (" (the kernel's own check refused it)" if kernel_refused else "")
                    + f": {what} makes it invalid")
        message = str(said[-1])
        if named.startswith("'") and named not in message:
            return f"the error for {what} should name it ({named}); it says {message!r}"
        if not named.startswith("'") and not message.startswith(named):
            return f"the error for {what} should start with '{named}:', it says {message!r}"
        if kernel.classes != before:
            return "a refused policy changed the classes in force"
    return None


@checked
def check_enforced(classify):
    board, cos, kernel = _machine(classify)
    names = {d.name for d in kernel.devices}
    policy = _policy(devices.DEFAULT_POLICY, names)
    policy["host-managed"].remove("serial0")
    policy["reserved"].append("serial0")
    said = []                                  # what the learner's classify answered
    learners = kernel.classify
    kernel.classify = lambda devices_, policy_: said.append(learners(devices_, policy_)) or said[-1]
    try:
        kernel.apply_policy(policy)
    except devices.ClassificationError as e:
        if not said:
            return f"policy {policy} is valid (serial0 reserved), yet your classify refused it: {e}"
        return (f"policy {policy}: the kernel refused what your classify returned ({said[-1]!r}): {e}. "
                f"Nothing was applied, so serial0 stayed the COS's")
    before = len(cos.console())
    board.run(1_200_000)
    if len(cos.console()) != before:
        return "serial0 reserved, yet the COS still printed on it"
    return None


CHECKS = [("classifies good policies", 1, check_good_policies),
          ("refuses bad ones, naming the device", 2, check_bad_policies),
          ("the machine enforces the result", 1, check_enforced)]
FUNCTION = "classify"
