"""The world switch (claims 14-15, 35-36, 45): x86 in the kernel image does it,
Python decides, checks and traces it.

The scheduler (worlds.py) decides which world runs next; then the CPU that
switches goes through these steps, one trace event each:

  1. switch.begin  the scheduler picked `nxt`; the dispatcher leaves GO_SWITCH
                   in the frame's vector slot, ESI = the running world's save
                   area, EDI = the next's, and the stub jumps to `world_switch`;
  2. switch.save   x86 stores the running world's state in its save area: the
                   general registers, EIP, CS, EFLAGS, ESP, SS from the trap
                   frame, the rest as only the CPU holds it (mov from DS..GS,
                   sgdt, sidt, sldt, str, mov from CR3; DS..GS from
                   the frame, where the stub pushed them); back in the dispatcher,
                   Python adds the CRC-32;
  3. switch.cli    x86 `cli`: exceptions disabled (the event reads IF back);
  4. switch.check  Python checks the next world's save area (CRC-32): one
                   changed since it was stored is refused, nothing loaded;
  5. switch.load   x86 loads the next world, with paging off (the kernel is
                   identity-mapped) and the kernel's own IDT loaded (a fault in
                   the load enters the kernel, not a VMM whose stubs need paging):
                   lgdt, lldt, ltr (on the TSS descriptor the
                   CPU itself reads from the GDT, which must be *available*: the
                   descriptor of the TSS being left is made available first, as
                   kernels do when they reload TR), CR3, the data segments
                   (the CPU checks each selector against the new GDT; DS last,
                   as the loads read the save area through DS), lidt (last), which the
                   kernel then stores into the frame for the stub's pops before
                   loading its own DS/ES again; then paging on if CR3 names a page directory (0: the
                   COS's, paging stays off); then the frame the stub's popad and
                   iretd will load; back in the dispatcher, Python reads every
                   register and the frame back and compares (`verify`);
  6. switch.start  the stub's iretd starts it at the loaded CS:EIP;
  7. switch.sti    the same iretd loads the world's EFLAGS: IF set, exceptions
                   enabled again (the event gives the EFLAGS the iretd loads).
(6 and 7 are emitted just before the stub's iretd executes them.)

A fault the CPU takes while loading (an ltr of a selector that is not an
available TSS, an lldt of one that is not an LDT, a data segment the GDT
does not have) reaches the kernel as any fault does; the kernel sees that it
came from the switch, refuses that world, and loads the world it left again.

The save area's layout, its CRC and counters: save_area.py; the x86: switch_x86.py.
"""
import contextlib
import functools
import struct
from typing import NamedTuple

from vmkit.hw.asm import disassemble_one
from vmkit.hw.switch_seal import Sealing
from vmkit.hw.switch_verify import Verifying, names
from vmkit.hw.x86 import CR0_PG, EFLAGS_IF, EXCEPTION_NAMES, TSS_BUSY, decode_segment
from . import layout
from .frame import Frame
from .save_area import (FRAME_ITEMS, ITEMS, OFFSET, SEGMENTS, STATE_SIZE, SWITCHES, WIDTH, _AREA, bump, intact,
                        seal, span)
from .switch_x86 import SAVED, _CPL0_FRAME, _F

_FRAME = struct.Struct(f"<{len(Frame.FIELDS)}I")
_GDTR = struct.Struct("<HI")                     # lgdt's operand: limit, then base
_EIP, _GDTR_AT = OFFSET["eip"], OFFSET["gdtr.limit"]   # (looked up once)


class SwitchError(RuntimeError):
    """The switch refused to load a world: its save area is corrupt, the CPU
    refused what it holds, or it did not load exactly."""


class Switch(NamedTuple):
    """A switch in flight on one CPU, between the dispatcher's entries (worlds.py)."""
    frm: object         # the world being left
    to: object          # the world being loaded
    mode: str           # "switch"; "restore": `frm` again, `to` was refused;
                        # "start": a CPU's first world
    away: str = None    # the COS's away state (CPU 0) when it was left



def begin(kernel, frame, cpu, current, nxt):
    """Step 1: enter the x86 with the two save areas; `saved`'s step armed in C for them."""
    kernel.trace.emit("switch.begin", cpu.index, frm=current.name, to=nxt.name)
    enter(frame, cpu, current.area, nxt.area)
    if SEAL_IN_C and not kernel.__dict__.get("step_by_step"):
        frm, to, at = current.name, nxt.name, current.area

        def events(eip, IF):                # `saved`'s, from what C read
            return (("switch.save", {"world": frm, "area": at, "eip": eip}), ("switch.cli", {"IF": IF}),
                    ("switch.check", {"world": to, "ok": True}))
        _sealing(kernel).arm(cpu, at, nxt.area, events)


def enter(frame, cpu, save, load=None):
    """The stub goes to `world_switch` next: save into `save` (0: none;
    RELOAD: none, and load with the kernel's own LOAD), load `load` (None: the
    area EDI already names; the save's x86 leaves EDI as `begin` set it)."""
    frame.vector = layout.GO_SWITCH
    if load is None:
        cpu["esi"] = save                   # (one register: half a batch write's cost)
    else:
        cpu.write(esi=save, edi=load)


# `saved`'s step is done in C where the save's x86 reaches the dispatcher (hw/switch_seal.c),
# when it is the ordinary one: the run does not stop there (False: always the Python's)
SEAL_IN_C = True


def _sealing(kernel):
    """The board's C sealing step, given the kernel's layout once."""
    sealing = kernel.__dict__.get("_sealing")
    if sealing is None:
        base, end = kernel.block
        layout_ = dict(at=kernel.base + kernel.image.dispatch, size=STATE_SIZE, slot=_F["vector"],
                       frame=_F["vector"] + 4, saved=SAVED, go=layout.GO_SWITCH, gdtr_at=_GDTR_AT,
                       eip_at=_EIP, low=base, high=end)
        sealing = kernel._sealing = Sealing(kernel.board, layout_)
    return sealing


@contextlib.contextmanager
def step_by_step(kernel):
    """Inside: every step of a switch is the Python's, the CPU stopped at each (a tool that
    reads the machine at each step's event, lessons/worlds.record_switch, needs the stop)."""
    kernel.step_by_step = True
    for cpu in kernel.board.cpus:           # a switch already under way: its SAVED stops too
        disarm(kernel, cpu)
    try:
        yield
    finally:
        kernel.step_by_step = False


def disarm(kernel, cpu):
    """The switch is back in the Python (or refused): nothing armed for it."""
    sealing = kernel.__dict__.get("_sealing")
    if sealing is not None:
        sealing.disarm(cpu)


def saved(kernel, frame, cpu, current, nxt):
    """Back from the x86's save: seal, trace, check the next world's area;
    enter the load. Raises SwitchError (nothing loaded) if the check fails.
    (hw/switch_seal.c does the same in C when it can: `begin` arms it.)
    Returns (base, limit) of the GDT the load's lgdt will load (from the bytes checked)."""
    emit, memory, index, at = kernel.trace.emit, kernel.memory, cpu.index, current.area
    seal(memory, at)
    emit("switch.save", index, world=current.name, area=at, eip=memory.read_u32(at + _EIP))
    emit("switch.cli", index, IF=1 if cpu["eflags"] & EFLAGS_IF else 0)
    area = span(memory, nxt.area, STATE_SIZE + 4)
    if not intact(area):
        emit("switch.check", index, world=nxt.name, ok=False, why="save area CRC mismatch")
        raise SwitchError(f"the save area of {nxt.name} at {nxt.area:#x} changed since it was stored")
    emit("switch.check", index, world=nxt.name, ok=True)
    frame.vector = layout.GO_SWITCH         # enter(frame, cpu, 0): ESI 0, load only; EDI names
    cpu["esi"] = 0                          # nxt.area still (a wrong one fails the verify)
    limit, base = _GDTR.unpack_from(area, _GDTR_AT)
    return base, limit


def loaded(kernel, frame, cpu, nxt):
    """Back from the x86's load: what the CPU loaded, compared with the save area.
    Raises SwitchError naming the items that differ; returns (CR0, CS) as the verify
    read them (the CPU's own: the kernel's CS, which the load's retf loaded).
    (hw/switch_verify.c reads and compares in C when it can; `_verify` is the reference.)"""
    verifying = _verifying(kernel) if VERIFY_IN_C else None
    mask = None if verifying is None else verifying.verify(cpu, frame.address, nxt.area)
    if mask is None:
        memory = kernel.memory
        wrong, cr0, cs = _verify(memory, frame, cpu, _AREA.unpack(span(memory, nxt.area, STATE_SIZE)))
    else:
        state = verifying.state
        wrong, cr0, cs = names(mask, ITEMS) if mask else None, state.cr0, state.cs
    if wrong:
        kernel.trace.emit("switch.load", cpu.index, world=nxt.name, ok=False, wrong=" ".join(wrong))
        raise SwitchError(f"{nxt.name}: loaded state differs from its save area in {', '.join(wrong)}")
    return cr0, cs


# `loaded`'s reads and comparisons are done in C (hw/switch_verify.c) where the frame,
# the area and the descriptors lie plainly in RAM (False: always the Python's `_verify`)
VERIFY_IN_C = True


def _verifying(kernel):
    """The board's C verify, given the save area's and the frame's layout once."""
    verifying = kernel.__dict__.get("_verifying")
    if verifying is None:
        frame_word = {n: _F[n] for n in FRAME_ITEMS + SEGMENTS}
        items = tuple((n, frame_word.get(n, n), OFFSET[n], WIDTH[n]) for n in ITEMS)
        verifying = kernel._verifying = Verifying(kernel.board, items, dict(
            size=_FRAME.size, cs=_F["cs"], eip=_F["eip"], eflags=_F["eflags"], cpl0_end=_CPL0_FRAME))
    return verifying


def started(kernel, frame, cpu, nxt, cr0=None):
    """Steps 5-7 traced: loaded and checked, the stub's iretd goes next. cr0: as `loaded`
    read it (nothing has changed it since), else read now. (Each event through `emit`: a
    tool that reads the machine at each step's event replaces it, lessons/worlds.record_switch.)"""
    emit, index, name = kernel.trace.emit, cpu.index, nxt.name
    cr0 = cpu["cr0"] if cr0 is None else cr0
    emit("switch.load", index, world=name, ok=True, area=nxt.area, paging="on" if cr0 & CR0_PG else "off")
    bump(kernel.memory, nxt.area + SWITCHES, 1)
    emit("switch.start", index, world=name, cs=frame.cs, eip=frame.eip)
    emit("switch.sti", index, world=name, eflags=frame.eflags)


def refused_by_cpu(kernel, frame, vector):
    """A fault taken inside the load: what the CPU refused, in words. (The load runs at CPL 0
    with paging off: its EIP is a physical address.)"""
    memory, eip = kernel.memory, frame.eip
    if not 2 <= eip <= memory.size - 16:    # (a jump out of memory: its fetch faulted there)
        insn = f"{eip:#x}, outside the machine's memory"
    else:
        before = memory.read(eip - 2, 2)
        software = ("int3" if vector == 3 and before[1:] == b"\xcc" else
                    f"int {vector:#x}" if before == bytes([0xCD, vector]) else None)
        if software:                    # an `int n` is a trap: EIP is already past it
            return (f"it executed `{software}` inside the load: a software interrupt enters the kernel "
                    f"(vector {vector:#x}) before the world is loaded")
        insn = disassemble_one(memory.read(eip, 16), eip)
    if vector not in EXCEPTION_NAMES:
        return f"an interrupt (vector {vector:#x}) arrived inside the load, before `{insn}`: IF was set"
    return f"the CPU refused it: {EXCEPTION_NAMES[vector]}({frame.error:#x}) at `{insn}`"


def descriptor(memory, gdt_base, gdt_limit, sel):
    """The GDT descriptor a selector names, or None past the limit."""
    index = sel & ~7
    if not index or index + 7 > gdt_limit:
        return None
    return _segment(bytes(span(memory, gdt_base + index, 8)))


@functools.lru_cache(maxsize=256)
def _segment(raw):
    """A descriptor's 8 bytes, decoded (a switch goes between a few worlds' TSS and LDT
    descriptors: each decoded once)."""
    return decode_segment(raw)


def tss_base(memory, state):
    """The base of the TSS a save area's TR selector names in its GDT: what ltr loads."""
    d = descriptor(memory, state["gdtr.base"], state["gdtr.limit"], state["tr.sel"])
    return None if d is None else d.base


# the plain registers a verify reads, in one call into Unicorn
_PLAIN = ("ss", "cr3", "cr0", "eflags", "cs")
_TABLES = ("gdtr", "idtr", "ldtr", "tr")


def observe(memory, frame, cpu):
    """The claim-15 state the world on `frame` resumes with, as the frame and
    the CPU hold it now, in save-area items."""
    (ss, cr3, _, _, _), tables = cpu.read_with_tables(_PLAIN, _TABLES)
    return dict(zip(ITEMS, _observed(memory, frame, ss, cr3, *tables)))


def _observed(memory, frame, ss, cr3, gdtr, idtr, ldtr, tr):
    """observe's values in ITEMS' order (the save area's), from the frame's words and
    registers already read: a tuple to compare with the save area's in one go."""
    (edi, esi, ebp, _, ebx, edx, ecx, eax, gs, fs, es, ds, _, _, eip, cs, eflags, esp,
     frame_ss) = _FRAME.unpack(span(memory, frame.address, _FRAME.size))
    if cs & 3:
        ss = frame_ss
    else:                                   # a CPL 0 frame: its stack ends where the frame does
        esp = frame.address + _CPL0_FRAME
    return (edi, esi, ebp, esp, ebx, edx, ecx, eax, eip, cs, eflags, ss, ds, es, fs, gs,  # the
            gdtr[2], gdtr[1], idtr[2], idtr[1], ldtr[0], tr[0], cr3)     # stub's pops load DS..GS


def verify(memory, frame, cpu, state):
    """Every claim-15 item, read back from the frame and the CPU: the names that
    differ. The tables' hidden parts are checked against the descriptors the
    selectors name (TR's base must be its TSS descriptor's, and that
    descriptor busy), IF must be clear (the load ran with exceptions
    disabled), and CR0.PG must follow CR3. `state`: the save area's items, as
    a dict or in ITEMS' order. (Its registers in one call into Unicorn, the
    frame in one read, compared as one tuple.)"""
    return _verify(memory, frame, cpu, state)[0]


def _verify(memory, frame, cpu, state):
    """verify's names, and CR0 and CS as it read them."""
    (ss, cr3, cr0, eflags, cs), tables = cpu.read_with_tables(_PLAIN, _TABLES)
    gdtr, _, ldtr, tr = tables
    now = _observed(memory, frame, ss, cr3, *tables)
    want = state if isinstance(state, tuple) else tuple(state[n] for n in ITEMS)
    wrong = [] if now == want else [n for n, got, was in zip(ITEMS, now, want) if got != was]
    gdt = (memory, gdtr[1], gdtr[2])
    tss = descriptor(*gdt, tr[0])
    if tss is None or (tss.base, tss.limit) != tr[1:3] or tss.type != TSS_BUSY or tss.s:
        wrong.append("tr.descriptor")
    ldt = descriptor(*gdt, ldtr[0])
    if ldtr[0] & ~3 and (ldt is None or (ldt.base, ldt.limit) != ldtr[1:3]):
        wrong.append("ldtr.descriptor")
    if bool(cr0 & CR0_PG) != bool(want[-1]):          # (the last item: CR3)
        wrong.append("cr0.pg")
    if eflags & EFLAGS_IF:
        wrong.append("IF")
    return wrong, cr0, cs
