"""Exercise 03 — classify the devices the COS handed over (claims 5-8).

`devices` is the list the COS handed the kernel: objects with `.name`
("serial0", "scsi0", "nic0", ...), `.kind`, `.ports`, `.irq`. `policy` maps
each class to the names in it, like ESX's hardware configuration:

    {"host-managed": [...], "reserved": [...], "shared": [...]}

Return {device name: class}. Every device must end up in exactly one
class. Refuse a bad policy by raising ClassificationError with a message
that starts with the device's name, then a colon:

- a class name other than the three            ("unknown class 'x'" is fine here)
- a device named in two classes                 "serial0: in two classes, ..."
- a name that is no device of the list          "floppy0: no such device ..."
- a device in no class                          "kbd0: not classified ..."
- the COS's boot disk controller (BOOT_DISK) reserved: the COS would lose
  its own disk; it may be shared                "scsi0: the COS's boot disk ..."

The kernel applies the result only if you return one: on an error nothing
changes, and the previous classification stays in force.
"""
from vmkit.kernel.devices import CLASSES, BOOT_DISK, ClassificationError


def classify(devices, policy):
    """{device name: "host-managed" | "reserved" | "shared"}, or ClassificationError."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
