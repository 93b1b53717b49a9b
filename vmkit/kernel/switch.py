"""The world switch (claims 14-15, 35-36, 45), one trace event per step.

It runs in the kernel's dispatcher, with the interrupted world's trap frame
on the kernel stack (frame.py) and the CPU at CPL 0:

  1. switch.save   the current world's state goes from the frame and the CPU
                   into its save area in kernel memory (below);
  2. switch.cli    exceptions disabled: the real IF is cleared;
  3. switch.check  the next world's save area is checked (CRC-32): a save
                   area changed since it was stored is refused, not loaded;
  4. switch.load   the next world's state goes into the frame and the CPU:
                   segment registers, GDTR/IDTR/LDTR/TR and CR3 directly
                   (and CR0.PG with CR3: on for a VM's page directory, off
                   for the COS's CR3 0; the event says `paging=`),
                   EFLAGS/CS/EIP/SS/ESP and the general registers into the
                   frame, which the stub's popad/iretd put in the registers;
                   every item is read back and compared (`verify`);
  5. switch.start  the stub's iretd starts it at the loaded CS:EIP;
  6. switch.sti    the same iretd loads the world's EFLAGS, IF set:
                   exceptions are enabled again.
(5 and 6 are emitted by Python just before the stub's iretd executes them.)

Save area: 128 bytes, little-endian u32 at these offsets, so a widget can
show the bytes and a test can poke them:

  0 eax  4 ecx  8 edx  12 ebx  16 esp  20 ebp  24 esi  28 edi
  32 eip  36 eflags  40 cs  44 ss  48 ds  52 es  56 fs  60 gs
  64 gdtr.base  68 gdtr.limit  72 idtr.base  76 idtr.limit
  80 ldtr.sel  84 ldtr.base  88 ldtr.limit  92 ldtr.flags
  96 tr.sel  100 tr.base  104 tr.limit  108 tr.flags  112 cr3
  116 CRC-32 of bytes 0..115     120 switches into the world   124 ticks run
"""
import struct
import zlib

from vmkit.hw.x86 import EFLAGS_IF
from .frame import FIELDS as FRAME_FIELDS      # the whole frame, from CPL > 0: read/written at once

FRAME_ITEMS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cs", "ss")
SEGMENTS = ("ds", "es", "fs", "gs")
TABLES = ("gdtr", "idtr", "ldtr", "tr")
ITEMS = (FRAME_ITEMS + SEGMENTS + ("gdtr.base", "gdtr.limit", "idtr.base", "idtr.limit",
         "ldtr.sel", "ldtr.base", "ldtr.limit", "ldtr.flags",
         "tr.sel", "tr.base", "tr.limit", "tr.flags", "cr3"))
OFFSET = {name: 4 * i for i, name in enumerate(ITEMS)}
STATE_SIZE = 4 * len(ITEMS)                     # 116
CRC, SWITCHES, TICKS = 116, 120, 124
SIZE = 128
_U32S = struct.Struct(f"<{len(ITEMS)}I")
_FRAME = struct.Struct(f"<{len(FRAME_FIELDS)}I")
_AFTER_EFLAGS = 4 * FRAME_FIELDS.index("esp")   # a CPL 0 frame ends here: ESP before the trap


class SwitchError(RuntimeError):
    """The switch refused to load a world: its save area is corrupt or did not load exactly."""


def read_area(memory, address):
    """The save area as {item: value}."""
    return dict(zip(ITEMS, _U32S.unpack(memory.read(address, STATE_SIZE))))


def write_area(memory, address, state):
    """Store `state` (every item of ITEMS) and its CRC."""
    raw = _U32S.pack(*(state[name] & 0xFFFFFFFF for name in ITEMS))
    memory.write(address, raw + struct.pack("<I", zlib.crc32(raw)), code=False)


def area_intact(memory, address):
    raw = memory.read(address, STATE_SIZE + 4)
    return zlib.crc32(raw[:STATE_SIZE]) == struct.unpack_from("<I", raw, STATE_SIZE)[0]


def bump(memory, address, amount):
    """Add to a u32 counter in kernel memory (data: no translated-code flush)."""
    value = (memory.read_u32(address) + amount) & 0xFFFFFFFF
    memory.write(address, struct.pack("<I", value), code=False)


def capture(frame, cpu):
    """The claim-15 state of the interrupted world: the frame holds what the
    CPU pushed (EIP, CS, EFLAGS, ESP, SS) and the stub's pushad; the rest is
    still in the CPU's registers."""
    words = dict(zip(FRAME_FIELDS, _FRAME.unpack(frame.memory.read(frame.address, _FRAME.size))))
    state = {name: words[name] for name in FRAME_ITEMS}
    if not words["cs"] & 3:        # from CPL 0 (a system world): no ESP/SS were pushed
        state["esp"], state["ss"] = frame.address + _AFTER_EFLAGS, cpu["ss"]
    state.update(zip(SEGMENTS, cpu.read(*SEGMENTS)))
    for t in TABLES:
        sel, base, limit, flags = cpu[t]
        state[f"{t}.base"], state[f"{t}.limit"] = base, limit
        if t in ("ldtr", "tr"):
            state[f"{t}.sel"], state[f"{t}.flags"] = sel, flags
    state["cr3"] = cpu["cr3"]
    return state


def install(frame, cpu, state):
    """Put `state` into the frame and the CPU (the loading half of the switch).
    For a CPL 0 world (a system world, smp.py) the iretd pops EIP, CS and
    EFLAGS only, so its ESP is where the frame ends: that world's frames sit
    at the top of its CPU's stack, and `verify` checks that it comes out right."""
    words = dict(zip(FRAME_FIELDS, _FRAME.unpack(frame.memory.read(frame.address, _FRAME.size))))
    words.update((name, state[name] & 0xFFFFFFFF) for name in FRAME_ITEMS)
    frame.memory.write(frame.address, _FRAME.pack(*(words[f] for f in FRAME_FIELDS)), code=False)
    cpu.write(**{s: state[s] for s in SEGMENTS})
    cpu["gdtr"] = (0, state["gdtr.base"], state["gdtr.limit"], 0)
    cpu["idtr"] = (0, state["idtr.base"], state["idtr.limit"], 0)
    cpu["ldtr"] = tuple(state[f"ldtr.{k}"] for k in ("sel", "base", "limit", "flags"))
    cpu["tr"] = tuple(state[f"tr.{k}"] for k in ("sel", "base", "limit", "flags"))
    set_address_space(cpu, state["cr3"])


PG = 0x80000000


def set_address_space(cpu, cr3):
    """CR3, and CR0.PG with it: world-specific state derived from the saved CR3
    (0: the COS, paging off; else a VM's page directory, paging on). Writing CR3
    flushes the TLB (Unicorn 2.1.4, measured: vmm/paging.py)."""
    cr0 = cpu["cr0"]
    if not cr3:
        if cr0 & PG:
            cpu["cr0"] = cr0 & ~PG
        if cpu["cr3"]:
            cpu["cr3"] = 0
        return
    if cpu["cr3"] != cr3:
        cpu["cr3"] = cr3
    if not cr0 & PG:
        cpu["cr0"] = cr0 | PG


def verify(frame, cpu, state):
    """Every claim-15 item, read back from the frame and the CPU: the names that differ.
    (Descriptor flags are Unicorn's hidden cache format, so only selectors,
    bases and limits are compared.)"""
    now = capture(frame, cpu)
    return [n for n in ITEMS if not n.endswith(".flags") and now[n] != state[n] & 0xFFFFFFFF]


def world_switch(kernel, frame, cpu, current, nxt, loader=install):
    """Switch from world `current` to world `nxt`; `loader` is the loading step
    (exercise: the learner's switch plugs in here). Raises SwitchError, with
    `current` still loaded, if `nxt` cannot be loaded exactly."""
    trace, memory = kernel.trace, kernel.memory
    trace.emit("switch.begin", cpu.index, frm=current.name, to=nxt.name)
    write_area(memory, current.area, capture(frame, cpu))
    trace.emit("switch.save", cpu.index, world=current.name, area=current.area, eip=frame.eip)
    cpu["eflags"] = cpu["eflags"] & ~EFLAGS_IF
    trace.emit("switch.cli", cpu.index)
    if not area_intact(memory, nxt.area):
        trace.emit("switch.check", cpu.index, world=nxt.name, ok=False, why="save area CRC mismatch")
        raise SwitchError(f"the save area of {nxt.name} at {nxt.area:#x} changed since it was stored")
    trace.emit("switch.check", cpu.index, world=nxt.name, ok=True)
    state = read_area(memory, nxt.area)
    loader(frame, cpu, state)
    set_address_space(cpu, state["cr3"])        # PG follows CR3, whichever loader ran
    wrong = verify(frame, cpu, state)
    if wrong:
        trace.emit("switch.load", cpu.index, world=nxt.name, ok=False, wrong=" ".join(wrong))
        install(frame, cpu, read_area(memory, current.area))       # back to where we were
        raise SwitchError(f"{nxt.name}: loaded state differs from its save area in {', '.join(wrong)}")
    trace.emit("switch.load", cpu.index, world=nxt.name, ok=True, area=nxt.area,
               paging="on" if cpu["cr0"] & PG else "off")
    bump(memory, nxt.area + SWITCHES, 1)
    trace.emit("switch.start", cpu.index, world=nxt.name, cs=frame.cs, eip=frame.eip)
    trace.emit("switch.sti", cpu.index, world=nxt.name, eflags=frame.eflags)
