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


# ---- notebook 11: the unload, instruction by instruction ------------------------------
import struct as _struct
from typing import NamedTuple as _NamedTuple

from vmkit.hw.asm import disassemble
from vmkit.hw.x86 import decode_gate
from vmkit.kernel import layout as _klayout, unload as _unload

COMMAND_LIMIT = 3_000_000
SHOWN_GATES = {0x0D: "#GP", 0x20: "timer", 0x90: "int 0x90"}


class Step(_NamedTuple):
    time: int
    where: str              # the instruction about to run, or the point reached
    registers: dict         # read from the CPU there
    gates: dict             # {vector name: (handler, "kernel" | "COS")} through the CPU's IDTR
    events: list            # the trace events since the previous step


def _snapshot(cpu, memory, kernel_block):
    base, limit = cpu["idtr"][1], cpu["idtr"][2]
    inside = lambda a: kernel_block[0] <= a < kernel_block[1]
    gates = {}
    for vector, name in SHOWN_GATES.items():
        if vector * 8 + 7 <= limit:
            handler = decode_gate(memory.read(base + vector * 8, 8)).offset
            gates[name] = (handler, "kernel" if inside(handler) else "COS")
    regs = {"cpl": cpu.cpl, "cs": cpu["cs"], "eip": cpu["eip"], "esp": cpu["esp"],
            "IF": int(cpu.interrupts_enabled), "gdtr": cpu["gdtr"][1], "idtr": base, "tr": cpu["tr"][0],
            "ds": cpu["ds"], "ss": cpu["ss"]}
    return regs, gates


def unload_routine(board, kernel):
    """[(address, instruction)] of the kernel's x86 `unload`, found in its block by its first
    instruction (lgdt of the record) and disassembled up to its iretd."""
    code = board.memory.read(kernel.base, _klayout.DATA)
    start = code.find(b"\x0f\x01\x15" + _struct.pack("<I", kernel.base + _unload.GDTR))
    out = []
    for address, text in disassemble(code[start:start + 0x100], kernel.base + start):
        out.append((address, text))
        if text.startswith("iretd"):
            return out
    raise RuntimeError("the kernel's unload routine has no iretd")


def unload_steps(board, cos, loader):
    """Type `rmmod` and record the CPU before the COS's int 0x90, after each lgdt, lidt and
    ltr of the kernel's `unload` and before its iretd, and where the COS is back (the loading module's second entry);
    the trace events between. Breakpoints only read the CPU; they are removed after."""
    kernel = loader.kernel
    block = kernel.block
    cpu, memory, trace = board.cpu, board.memory, board.trace
    module = loader.module
    exit_ = int.from_bytes(module[12:16], "little") + 16
    points = [(L.MODULE_AREA + module.index(b"\xcd\x90", exit_), "the COS's exit: int 0x90 (EAX = 4)")]
    routine = unload_routine(board, kernel)       # the CPU has 8 breakpoints: the instructions
    shown = [i for i, (_, t) in enumerate(routine)   # after which a table or CPL changed
             if i and routine[i - 1][1].split()[0] in ("lgdt", "lidt", "ltr")] + [len(routine) - 1]
    points += [(routine[i][0], f"kernel x86, after {routine[i - 1][1]}; next: {routine[i][1]}")
               for i in shown]
    points.append((loader.entry + 1, "the COS again: its exit calls the loading module"))
    steps, seen, mark = [], set(), [len(trace.events)]

    def record(label):
        def handler(c):
            if label in seen and not label.startswith("the COS's exit"):
                return
            seen.add(label)
            regs, gates = _snapshot(c, memory, block)
            steps.append(Step(board.now(), label, regs, gates, trace.events[mark[0]:]))
            mark[0] = len(trace.events)
        return handler
    hooks = [cpu.on_execute(address, record(label)) for address, label in points]
    try:
        cos.run_command("rmmod", COMMAND_LIMIT)
    finally:
        for hook in hooks:
            cpu.remove(hook)
    regs, gates = _snapshot(cpu, memory, block)
    steps.append(Step(board.now(), "after: the kernel's block freed", regs, gates, trace.events[mark[0]:]))
    return steps


def step_text(step):
    r = step.registers
    regs = (f"CPL {r['cpl']}  CS {r['cs']:#06x}  EIP {r['eip']:#010x}  ESP {r['esp']:#010x}  IF {r['IF']}  "
            f"GDTR {r['gdtr']:#x}  IDTR {r['idtr']:#x}  TR {r['tr']:#x}  DS {r['ds']:#x}  SS {r['ss']:#x}")
    gates = "  ".join(f"{n} -> {h:#x} ({who})" for n, (h, who) in step.gates.items())
    events = "".join(f"\n      {e}" for e in step.events if e.kind.startswith(("unload.", "kernel.inject")))
    return f"{step.time:>9}  {step.where}\n      {regs}\n      IDT: {gates}{events}"


def trapping(board, cos, loader):
    """Run a COS module that executes cli, sti, lidt (of its own IDT's pointer: an sidt at CPL 1
    would not trap and would store the kernel's IDTR), in and out; count the
    kernel entries it caused (the kernel's emulations, none once unloaded) and its CPL."""
    source = (f"init: cli\nlidt [{L.IDT_PTR:#x}]\nin al, 0x21\nout 0x21, al\nsti\n"
              "mov ax, cs\nand eax, 3\nmov [0x7f10], eax\nxor eax, eax\nret")
    mark = len(board.trace.events)
    cos.insmod(_module(source), COMMAND_LIMIT)
    emulated = [e for e in board.trace.events[mark:] if e.kind == "kernel.emulate"]
    cos.put_module(loader.module)
    return {"cpl": board.memory.read_u32(0x7f10), "kernel entries": len(emulated),
            "instructions emulated": sorted({e.data.get("insn", e.data.get("what", "?")) for e in emulated})}


def _module(source):
    from vmkit.cos.cos import COS
    return COS.make_module(source)


def load_unload_cycles(board, cos, n=20):
    """`insmod` then `rmmod`, n times on a booted COS holding the load-call module: how
    many cycles left the COS's machine as it was (fingerprint equal to the one before the
    first load) with the COS still answering a command."""
    before = fingerprint(board)
    same = 0
    for _ in range(n):
        cos.run_command("insmod", COMMAND_LIMIT)
        cos.run_command("rmmod", COMMAND_LIMIT)
        same += fingerprint(board) == before and "cos: ticks" in cos.run_command("ticks", COMMAND_LIMIT)
    return same
