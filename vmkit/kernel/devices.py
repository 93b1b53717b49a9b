"""The device hand-over and the three device classes (claims 5-8, 31-32, 44).

After the takeover the COS hands the kernel the list of devices it
controls (its own enumeration, the "CDEV" list in COS memory). A policy,
editable like ESX's hardware configuration, puts every device in exactly one
class; `apply` makes the machine enforce it:

  host-managed  the COS's: its ports are granted in the kernel TSS's I/O
                bitmap (the COS reaches them directly, at CPL 1); its IRQs
                enter the kernel, which masks the line and forwards them to
                the COS (irq.py).
  reserved      the kernel's: ports not granted, so a COS access traps and
                is refused; IRQs stay in the kernel.
  shared        both: ports not granted, so COS accesses trap and the kernel
                serves them alongside its own (scsi_share.py for the SCSI
                controller); IRQs are the kernel's, which forwards what
                belongs to the COS.

Whatever validated the policy, the kernel keeps its own limits
(`check_classes`): the PIC and the PIT stay reserved (it took them with the
interrupt vectors), and only devices it has a sharing front for are shared.
"""
import struct
from collections.abc import Mapping
from typing import NamedTuple

from vmkit.hw.x86 import TSS_SIZE
from . import layout

CLASSES = ("host-managed", "reserved", "shared")
DEFAULT_POLICY = {
    "host-managed": ["serial0", "kbd0", "sensor0"],
    "reserved": ["pic0", "pit0"],
    "shared": ["scsi0", "nic0", "nic1"],
}
BOOT_DISK = "scsi0"              # the COS boots from the disk behind this controller
# The kernel took these with the interrupt vectors: every world's interrupts come
# from the PIT and pass through the PIC, so the COS must not program them.
KERNEL_OWNED = {"pic": "the PIC (every world's interrupts pass through it)",
                "pit": "the PIT (every world's timer ticks come from it)"}
# The kinds the kernel has a sharing front for (scsi_share.py, nic_share.py): a
# shared device of another kind would only have the COS's accesses refused.
SHAREABLE = ("scsi", "nic")
MEMBERS = (list, tuple, set, frozenset)


class ClassificationError(ValueError):
    pass


class Device(NamedTuple):
    name: str                    # kind + index among devices of that kind: "nic0", "nic1"
    kind: str
    base: int
    count: int
    irq: int | None

    @property
    def ports(self):
        return range(self.base, self.base + self.count)


def read_cos_list(memory, address):
    """Decode the COS's device list ("CDEV", count, 16-byte entries) from emulated memory."""
    magic, count = struct.unpack("<4sI", memory.read(address, 8))
    if magic != b"CDEV" or count > 64:
        raise ClassificationError(f"no COS device list at {address:#x} (magic {magic!r}, count {count})")
    seen, devices = {}, []
    for i in range(count):
        raw = memory.read(address + 8 + 16 * i, 16)
        kind = raw[:8].rstrip(b"\0").decode("latin-1")
        base, ports, irq = struct.unpack_from("<HHb", raw, 8)
        index = seen[kind] = seen.get(kind, -1) + 1
        devices.append(Device(f"{kind}{index}", kind, base, ports, None if irq < 0 else irq))
    return devices


def classify(devices, policy):
    """{device name: class} for a policy {class: [device names]} (exercise 03).

    Every device in exactly one class; refuse, naming the device, a device in
    two classes, a name no device has, a device left out, an unknown class,
    and reserving the COS's boot-disk controller (the COS would lose its disk:
    it may be shared, not reserved)."""
    names = {d.name for d in devices}
    result = {}
    for cls, members in policy.items():
        if cls not in CLASSES:
            raise ClassificationError(f"unknown class {cls!r}: the classes are {', '.join(CLASSES)}")
        for name in members:
            if name not in names:
                raise ClassificationError(f"{name}: no such device (the COS handed over {', '.join(sorted(names))})")
            if name in result:
                raise ClassificationError(f"{name}: in two classes, {result[name]} and {cls}")
            result[name] = cls
    missing = sorted(names - set(result))
    if missing:
        raise ClassificationError(f"{missing[0]}: not classified (every device needs a class)")
    if result.get(BOOT_DISK) == "reserved":
        raise ClassificationError(f"{BOOT_DISK}: the COS's boot disk controller cannot be reserved; share it")
    return result


def check_policy_shape(policy):
    """A policy is a mapping {class: [device names]}; refuse anything else
    before anyone reads it, saying what was given instead."""
    if not isinstance(policy, Mapping):
        raise ClassificationError(f"a policy maps each class to a list of device names, "
                                  f"like {{'reserved': ['pic0', 'pit0'], ...}}; this is a "
                                  f"{type(policy).__name__}: {policy!r:.60}")
    for cls, members in policy.items():
        if not isinstance(members, MEMBERS) or not all(isinstance(n, str) for n in members):
            raise ClassificationError(f"{cls!r}: a class holds a list of device names, not {members!r:.60}")


def check_classes(devices, classes):
    """The kernel's own limits, whatever validated the policy (exercise 03's
    classify included): every device in one of the three classes, and no
    class the machine cannot honour."""
    if not isinstance(classes, Mapping):
        raise ClassificationError(f"the classification is a {type(classes).__name__}, "
                                  f"not a mapping {{device name: class}}")
    names = {d.name for d in devices}
    for name in classes:
        if name not in names:
            raise ClassificationError(f"{name}: no such device (the COS handed over {', '.join(sorted(names))})")
    for d in devices:
        cls = classes.get(d.name)
        if cls is None:
            raise ClassificationError(f"{d.name}: not classified (every device needs a class)")
        if cls not in CLASSES:
            raise ClassificationError(f"{d.name}: unknown class {cls!r} (the classes are {', '.join(CLASSES)})")
        if d.kind in KERNEL_OWNED and cls != "reserved":
            raise ClassificationError(f"{d.name}: the kernel took {KERNEL_OWNED[d.kind]} with the interrupt "
                                      f"vectors; it stays reserved, it cannot be {cls}")
        if cls == "shared" and d.kind not in SHAREABLE:
            silent = " and the COS's console would go silent" if d.kind == "serial" else ""
            raise ClassificationError(f"{d.name}: the kernel cannot share a {d.kind} device (it shares "
                                      f"{' and '.join(SHAREABLE)} controllers): every COS access to it "
                                      f"would be refused{silent}")


def bitmap_for(devices, classes):
    """The I/O permission bitmap: a clear bit per port of a host-managed device."""
    bitmap = bytearray(b"\xff" * (65536 // 8 + 1))
    for d in devices:
        if classes[d.name] == "host-managed":
            for port in d.ports:
                bitmap[port // 8] &= ~(1 << (port % 8))
    return bytes(bitmap)


def write_bitmap(kernel, bitmap):
    kernel.memory.write(kernel.base + layout.TSS + TSS_SIZE, bitmap, code=False)
