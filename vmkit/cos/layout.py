"""The COS's contract: every fixed address the console OS uses.

The kernel that later displaces the COS (claims 1, 4, 24) relies on these:
it reads the COS's IDT to forward interrupts to the COS's handlers, its
device list to take devices over, and calls into it through the exports
table. docs/cos.md is the prose version of this file.

Physical memory, as the COS arranges it:

    0x00500             firmware GDT (left behind once the COS loads its own)
    0x00600             firmware device table ("VMKB", see docs/machine.md)
    0x10000-0x1FFFF     COS code (COS_ENTRY is its first byte)
    0x20000-0x20FFF     COS data: exports, variables, GDT, TSS, device list, IDT
    0x90000-0x9EFFF     COS stack (ESP starts at STACK_TOP; also the TSS's ESP0)
    0x100000-0x1FFFFF   module area: the file `insmod` loads
    0x400000-RAM_TOP    page pool handed out by cos_alloc_pages (a bump pointer)
"""

# ---- code -------------------------------------------------------------------
COS_CODE = 0x10000
COS_CODE_LIMIT = 0x10000          # the code must fit below COS_DATA
COS_ENTRY = COS_CODE
STACK_TOP = 0x9F000

# ---- data -------------------------------------------------------------------
COS_DATA = 0x20000
COS_DATA_SIZE = 0x1000

# The exports table: u32 function pointers, written by the COS at boot.
#   +0 cos_alloc_pages  in: ecx = pages      out: eax = physical address of that many
#                       contiguous 4 KiB pages, or 0 (count 0, or past RAM_TOP)
#   +4 cos_print        in: esi = NUL-terminated string, printed on COM1
#   +8 cos_print_hex    in: eax, printed as 8 hex digits (no "0x")
# Every export preserves every register except its result in eax.
COS_EXPORTS = 0x20000
EXPORT_ALLOC_PAGES, EXPORT_PRINT, EXPORT_PRINT_HEX = 0, 4, 8
EXPORT_NAMES = ("cos_alloc_pages", "cos_print", "cos_print_hex")

# Configuration: u32s the Python builder writes before boot; the COS only reads them.
RAM_TOP = 0x20040                 # first byte past RAM (the board's memory size)
TIMER_PERIOD = 0x20044            # PIT reload: a timer IRQ every N instructions (1..65536)
PRINT_EVERY = 0x20048             # print "cos: tick N" every N ticks (0: never)
CONFIG_START, CONFIG_END = 0x20040, 0x20080

# State: u32s the COS zeroes at boot and keeps up to date.
STATE_START = 0x20080
TICKS = 0x20080                   # timer interrupts taken (IRQ 0)
SERIAL_IRQS = 0x20084             # serial interrupts taken (IRQ 4)
PRINTED_TICK = 0x20088            # TICKS when "cos: tick" was last printed
NEXT_FREE_PAGE = 0x2008C          # the page allocator's bump pointer (starts at PAGE_POOL)
LINE_READY = 0x20090              # 1: LINE_BUF holds a complete command line
LINE_LEN = 0x20094                # bytes collected in LINE_BUF so far
COMMANDS_DONE = 0x20098           # command lines the main loop has finished
READY = 0x2009C                   # 1 once the COS printed "COS: ready" and enabled interrupts
FAULT_VECTOR = 0x200A0            # the last CPU exception (valid when FAULTS > 0)
FAULT_EIP = 0x200A4
FAULT_ERROR = 0x200A8
FAULTS = 0x200AC
UNEXPECTED_INTS = 0x200B0         # interrupts through vectors 0x30-0xFF
MODULES_LOADED = 0x200B4          # modules whose init returned success (eax >= 0)
MODULE_RESULT = 0x200B8           # eax the last module init returned
CODE_END = 0x200BC                # first byte past the COS's instructions (its tables and
                                  # strings follow): [COS_CODE, CODE_END) disassembles linearly
SPURIOUS = 0x200C0                # u32[16]: IRQs taken per line with no driver (0, 1, 4, 5 stay 0)
STATE_END = 0x20100

# Descriptor-table pointers (the 6-byte operands of lgdt / lidt).
GDT_PTR = 0x20100
IDT_PTR = 0x20108

# Driver state: more u32s the COS zeroes at boot (the block above is full).
DRIVER_STATE_START = 0x20110
KEYS = 0x20110                    # bytes the keyboard handler read from the 8042 (port 0x60)
LAST_KEY = 0x20114                # the last of them (a scancode, 0..255)
KBD_IRQS = 0x20118                # keyboard interrupts taken (IRQ 1)
SENSOR_IRQS = 0x2011C             # sensor interrupts taken (IRQ 5)
SENSOR_LAST = 0x20120             # the reading the sensor handler last read from DATA (0..255)
DRIVER_STATE_END = 0x20140

LINE_BUF = 0x20180                # the serial line being typed, NUL-terminated when ready
LINE_MAX = 0x80

COS_GDT = 0x20200                 # null, 0x08 code, 0x10 data (ring 0, flat), 0x18 TSS
GDT_ENTRIES = 4
COS_CS, COS_DS, COS_TSS_SEL = 0x08, 0x10, 0x18

COS_TSS = 0x20280                 # 104 bytes: ESP0 = STACK_TOP, SS0 = 0x10, no I/O bitmap
TSS_LIMIT = 103

# The COS's device list: the firmware table's format ("CDEV", u32 count, then
# 16-byte entries: name[8], u16 first port, u16 port count, i8 IRQ, 3 bytes
# padding), with padding byte DEVICE_CLAIMED (entry + 13) set to 1 when a
# COS driver claimed the device.
COS_DEVICES = 0x20300
DEVICES_MAGIC = b"CDEV"
DEVICE_ENTRY = 16
DEVICE_CLAIMED = 13
MAX_DEVICES = 16

COS_IDT = 0x20800                 # 256 interrupt gates, selector 0x08, DPL 0
IDT_ENTRIES = 256
IRQ_BASE = 0x20                   # PIC master 0x20-0x27, slave 0x28-0x2F
TIMER_VECTOR, KBD_VECTOR, SERIAL_VECTOR, SENSOR_VECTOR = 0x20, 0x21, 0x24, 0x25

# ---- modules and pages ---------------------------------------------------------
MODULE_AREA = 0x100000
MODULE_AREA_SIZE = 0x100000
MODULE_MAGIC = b"CMOD"
MODULE_HEADER = 16                # magic, u32 code size, u32 init offset, u32 reserved
MODULE_CODE = MODULE_AREA + MODULE_HEADER     # the origin module code is assembled for

PAGE_SIZE = 0x1000
PAGE_POOL = 0x400000              # NEXT_FREE_PAGE's first value

# ---- defaults ---------------------------------------------------------------
DEFAULT_TIMER_PERIOD = 10_000
DEFAULT_PRINT_EVERY = 10

# Named u32 variables, for tools and widgets that show them.
VARIABLES = {name: globals()[name] for name in (
    "RAM_TOP", "TIMER_PERIOD", "PRINT_EVERY", "TICKS", "SERIAL_IRQS", "PRINTED_TICK",
    "NEXT_FREE_PAGE", "LINE_READY", "LINE_LEN", "COMMANDS_DONE", "READY", "FAULT_VECTOR",
    "FAULT_EIP", "FAULT_ERROR", "FAULTS", "UNEXPECTED_INTS", "MODULES_LOADED", "MODULE_RESULT",
    "CODE_END", "KEYS", "LAST_KEY", "KBD_IRQS", "SENSOR_IRQS", "SENSOR_LAST")}

# Regions, for "which memory does this register point into".
REGIONS = (
    (0x500, 0x600, "firmware GDT"),
    (0x600, 0x1000, "firmware device table"),
    (COS_CODE, COS_CODE + COS_CODE_LIMIT, "COS code"),
    (COS_DATA, COS_DATA + COS_DATA_SIZE, "COS data"),
    (0x90000, STACK_TOP, "COS stack"),
    (MODULE_AREA, MODULE_AREA + MODULE_AREA_SIZE, "module area"),
)


def region(address):
    """The name of the region `address` falls in, or "elsewhere"."""
    for begin, end, name in REGIONS:
        if begin <= address < end:
            return name
    return "page pool" if address >= PAGE_POOL else "elsewhere"
