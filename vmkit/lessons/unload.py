"""The unload, for notebook 11, the tests and the benchmark: a fingerprint of
the COS's machine, to compare before the load and after the unload.

What is compared: the CPU's architectural state that the load changed (CR0,
CR3, CPL, GDTR, IDTR, LDTR, TR, the segment selectors, IOPL), the 8259A pair
as the COS programmed it (masks, vector bases), and every page of memory.
What is left out, because the COS itself changes it whenever it runs (its
timer handler, command loop and stack), loaded or not:

  COS state and driver state  ticks, interrupt counters, COMMANDS_DONE,
                              MODULES_LOADED, keyboard bytes (layout.STATE_*,
                              DRIVER_STATE_*) -- except NEXT_FREE_PAGE and
                              RAM_TOP, the allocator, which are compared;
  the line buffer             what was typed (LINE_BUF);
  the COS's stack             calls and interrupt frames below STACK_TOP;
  IF and the general registers  where the COS happens to be in its loop.
The kernel's block is not left out: the page pool held zeros before the
load, and the unload clears the block, so it must be zeros again.
"""
import hashlib

from vmkit.cos import layout as L

PAGE = 0x1000
CPU_ITEMS = ("cr0", "cr3", "cpl", "gdtr", "idtr", "ldtr", "tr", "cs", "ds", "es", "fs", "gs", "ss")
EXCLUDED = ((L.STATE_START, L.STATE_END), (L.DRIVER_STATE_START, L.DRIVER_STATE_END),
            (L.LINE_BUF, L.LINE_BUF + L.LINE_MAX), (0x90000, L.STACK_TOP))
KEPT = (L.NEXT_FREE_PAGE, L.RAM_TOP)


def fingerprint(board):
    """{part: value}: the CPU items, the PIC, the allocator, and a hash per page."""
    cpu, memory = board.cpu, board.memory
    parts = {}
    for name in CPU_ITEMS:
        value = cpu.cpl if name == "cpl" else cpu[name]
        if name == "tr":
            value = value[:3]                       # busy both times; flags aside
        parts[f"cpu.{name}"] = value
    parts["cpu.iopl"] = (cpu["eflags"] >> 12) & 3
    for chip in board.pic.chips:
        parts[f"pic.{chip.name}"] = (chip.imr, chip.vector_base)
    for address in KEPT:
        parts[f"cos.{L.region(address)}@{address:#x}"] = memory.read_u32(address)
    raw = bytearray(memory.read(0, memory.size))
    for begin, end in EXCLUDED:
        raw[begin:end] = bytes(end - begin)
    for page in range(0, memory.size, PAGE):
        parts[f"page {page:#x}"] = hashlib.sha256(raw[page:page + PAGE]).hexdigest()[:16]
    return parts


def digest(parts):
    return hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()


def differences(before, after, board=None):
    """Lines naming each part that differs; for a page, its region and first differing byte."""
    out = []
    for key in before:
        if before[key] != after.get(key):
            line = f"{key}: {before[key]} -> {after.get(key)}"
            if key.startswith("page ") and board is not None:
                line += f" ({L.region(int(key[5:], 16))})"
            out.append(line)
    return out
