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
"""
import struct
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
