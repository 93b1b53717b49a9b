"""The COS: a ring-0 x86 operating system, as assembly text.

`program()` is the whole source, assembled for COS_CODE; `build()` returns
its bytes and the addresses of its named labels. The COS is written as any
small 1990s kernel: it uses cli/sti/hlt, pushfd/popfd, lgdt/lidt/ltr, in/out
and iretd directly. That is the point: once a second kernel displaces it to
CPL 1, those instructions trap (or are patched) and the kernel emulates them.

The source is split by concern, in the order it is assembled:

    boot.py       entry to `sti`: tables, PIC, PIT, UART, enumeration, banner
    commands.py   the main loop and the commands typed on COM1
    handlers.py   exception stubs, IRQ handlers, serial_collect
    drivers.py    device enumeration, each driver's probe (and attach)
    library.py    the exports and the printing helpers
    data.py       after `cos_code_end`: vector tables, drivers table, strings

Code first, then (after `cos_code_end`) tables and strings, so a linear
disassembly of [COS_CODE, cos_code_end) sees only instructions.
"""
import functools
import struct

from vmkit.hw.asm import assemble
from . import layout as L
from .boot import BOOT
from .commands import MAIN
from .data import DATA
from .drivers import DRIVERS
from .handlers import HANDLERS
from .library import LIBRARY

# Labels whose addresses build() reports (the IDT diagram, tests, the kernel).
SYMBOLS = ("cos_entry", "main_loop", "timer_handler", "serial_handler", "kbd_handler",
           "sensor_handler", "probe_kbd", "probe_sensor", "irq_spurious",
           "irq_stubs", "irq_stubs_end", "exc_stubs", "exc_stubs_end", "fault_common",
           "unexpected_handler", "cos_alloc_pages", "cos_print", "cos_print_hex",
           "run_line", "cmd_insmod", "cos_code_end")


def program():
    """The whole COS as one assembly text (see module doc)."""
    return "\n".join((BOOT, MAIN, HANDLERS, DRIVERS, LIBRARY, "cos_code_end:", DATA))


@functools.lru_cache(maxsize=1)
def build():
    """(code bytes, {label: address}) for the COS at COS_CODE. Cached: the
    source does not depend on the configuration, which lives in COS data."""
    text = program() + "\n.long " + ", ".join(SYMBOLS)
    code = assemble(text, L.COS_CODE)
    table, code = code[-4 * len(SYMBOLS):], code[:-4 * len(SYMBOLS)]
    symbols = dict(zip(SYMBOLS, struct.unpack(f"<{len(SYMBOLS)}I", table)))
    if len(code) > L.COS_CODE_LIMIT:
        raise AssertionError(f"COS code is {len(code):#x} bytes, more than {L.COS_CODE_LIMIT:#x}")
    return code, symbols
