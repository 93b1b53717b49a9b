"""Numbers the COS's x86 source shares: the ports of the devices it drives,
the PIC mask it programs, magic numbers as u32s, and a string helper.

The drivers use fixed ports and lines, as a PC OS of the time did for its
ISA devices; a driver claims a device only where the device table puts it
at its ports and line (its handler's vector is fixed in the IDT)."""
import struct

from . import layout as L

PIC_MASTER_MASK = 0xFF & ~(1 << 0 | 1 << 2 | 1 << 4)   # timer, cascade, serial
COM1, LSR = 0x3F8, 0x3FD
PIC_MASTER_DATA, PIC_MASTER_ELCR = 0x21, 0x4D0
KBD_DATA, KBD_STATUS, KBD_IRQ = 0x60, 0x64, 1           # the 8042: status bit 0 = a byte waits
KBD_ENABLE = 0xAE                                       # 8042 command: enable the keyboard
SENSOR_DATA, SENSOR_IRQ = 0x300, 5                      # DATA, STATUS (+1), CONTROL (+2)
SENSOR_STATUS, SENSOR_CONTROL = SENSOR_DATA + 1, SENSOR_DATA + 2
# IRQ lines with a COS driver, and the handler their vector's gate names;
# every other line gets a stub into irq_spurious.
IRQ_HANDLERS = {0: "timer_handler", 1: "kbd_handler", 4: "serial_handler", 5: "sensor_handler"}
CMOD = struct.unpack("<I", L.MODULE_MAGIC)[0]
VMKB = struct.unpack("<I", b"VMKB")[0]
CDEV = struct.unpack("<I", L.DEVICES_MAGIC)[0]


def string(label, text):
    """A NUL-terminated string as assembly data."""
    return f"{label}: .byte " + ", ".join(f"{b:#x}" for b in text.encode() + b"\0")
