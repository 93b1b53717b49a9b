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

The save area, laid out the way the instructions store and load it (the
kernel's x86 takes its offsets from here, as AREA_* symbols; nothing else
spells them out):

  0x00 edi esi ebp esp ebx edx ecx eax   popad's order, as the stub's pushad
                                         left them in the frame (ESP: the world's,
                                         in pushad's slot)
  0x20 eip cs eflags                     iretd's order
  0x2C ss ds es fs gs                    selectors, one u32 each
  0x40 gdtr: u16 limit, u32 base         sgdt/lgdt's operand: limit, then base
  0x48 idtr: u16 limit, u32 base         sidt/lidt's
  0x50 ldtr: u16 selector                sldt/lldt: base and limit come from
                                         the LDT descriptor the selector names
  0x54 tr: u16 selector                  str/ltr: likewise, from the TSS descriptor
  0x58 cr3
  0x5C CRC-32 of 0x00..0x5B
  0x78 switches into the world  0x7C ticks run                      (128 bytes)
"""
import functools
import struct
import zlib
from typing import NamedTuple

from vmkit.hw.asm import disassemble_one
from vmkit.hw.x86 import CR0_PG, EFLAGS_IF, EXCEPTION_NAMES, TSS_BUSY, decode_segment
from . import layout
from .frame import Frame

LAYOUT = (("edi", "I"), ("esi", "I"), ("ebp", "I"), ("esp", "I"),
          ("ebx", "I"), ("edx", "I"), ("ecx", "I"), ("eax", "I"),
          ("eip", "I"), ("cs", "I"), ("eflags", "I"),
          ("ss", "I"), ("ds", "I"), ("es", "I"), ("fs", "I"), ("gs", "I"),
          ("gdtr.limit", "H"), ("gdtr.base", "I"), ("", "2x"),
          ("idtr.limit", "H"), ("idtr.base", "I"), ("", "2x"),
          ("ldtr.sel", "H"), ("", "2x"),
          ("tr.sel", "H"), ("", "2x"),
          ("cr3", "I"))
_AREA = struct.Struct("<" + "".join(f for _, f in LAYOUT))
ITEMS = tuple(n for n, _ in LAYOUT if n)
_FRAME = struct.Struct(f"<{len(Frame.FIELDS)}I")
_U32 = struct.Struct("<I")
_GDTR = struct.Struct("<HI")                     # lgdt's operand: limit, then base
_IRET = struct.Struct("<3I")                     # the frame's eip, cs, eflags: what iretd pops
OFFSET = {n: struct.calcsize("<" + "".join(f for _, f in LAYOUT[:i]))
          for i, (n, _) in enumerate(LAYOUT) if n}
WIDTH = {n: struct.calcsize("<" + f) for n, f in LAYOUT if n}
STATE_SIZE = _AREA.size                          # 0x5C
CRC, SWITCHES, TICKS = STATE_SIZE, 0x78, 0x7C
SIZE = 128
GENERAL = ITEMS[:8]
FRAME_ITEMS = GENERAL + ("eip", "cs", "eflags", "esp", "ss")     # what the stub's popad/iretd load
SEGMENTS = ("ds", "es", "fs", "gs")
# The save area's operands as the x86 names them: AREA_EDI ... AREA_GDTR (lgdt's operand) ... AREA_CR3.
# (Offsets only, used inside [ ]: keystone 0.9.2 takes `and ecx, ~SYM` for a memory operand, measured.)
SYMBOLS = {}
for _name in ITEMS:
    SYMBOLS.setdefault("AREA_" + _name.split(".")[0].upper(), OFFSET[_name])
# where the switch's x86 hands back to the dispatcher (the frame's vector slot)
SAVED, LOADED = 0x101, 0x102
RELOAD = 1                                      # ESI: load with the kernel's own LOAD (no save)
# the frame, as the x86 reaches it from ESP (frame.py)
_F = {name: 4 * i for i, name in enumerate(Frame.FIELDS)}
_CPL0_FRAME = _F["esp"]                         # a CPL 0 frame ends here: ESP before the trap
_F_EIP, _EIP, _GDTR_AT = _F["eip"], OFFSET["eip"], OFFSET["gdtr.limit"]   # (looked up once)


# every field of the 128-byte area by offset, for a labelled dump (the padding has none)
FIELDS = {**{OFFSET[n]: n for n in ITEMS}, CRC: "crc", CRC + 4: "(free)", SWITCHES: "switches",
          TICKS: "ticks"}


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


# ---- the save area ------------------------------------------------------------
def decode_area(raw):
    """Save-area bytes -> {item: value}."""
    return dict(zip(ITEMS, _AREA.unpack_from(raw)))


def read_area(memory, address):
    return decode_area(memory.read(address, STATE_SIZE))


def write_area(memory, address, state):
    """Store `state` (every item of ITEMS) and its CRC."""
    raw = _AREA.pack(*(state[n] & ((1 << 8 * WIDTH[n]) - 1) for n in ITEMS))
    memory.write(address, raw + struct.pack("<I", zlib.crc32(raw)), code=False)


def seal(memory, address):
    """The CRC-32 of what the x86 stored, stored after it; returns the CRC."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + CRC + 4 > len(view):
        crc = zlib.crc32(memory.read(address, STATE_SIZE))
        memory.write_u32(address + CRC, crc, code=False)
        return crc
    crc = zlib.crc32(view[address:address + STATE_SIZE])
    _U32.pack_into(view, address + CRC, crc)         # (in place: data, no code to flush)
    return crc


def area_intact(memory, address):
    return _intact(_span(memory, address, STATE_SIZE + 4))


def _span(memory, address, length):
    """The bytes at address .. address + length - 1, as a view of the machine's memory
    buffer (no copy: read it at once) when they lie in it; else memory.read's (its
    check: a bus error). The switch reads its save areas, the frame and descriptors so."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + length > len(view):
        return memory.read(address, length)
    return view[address:address + length]


def _intact(raw):
    """A save area's bytes and CRC: does the CRC match?"""
    return zlib.crc32(raw[:STATE_SIZE]) == _U32.unpack_from(raw, STATE_SIZE)[0]


def bump(memory, address, amount):
    """Add to a u32 counter in kernel memory (data: no translated-code flush), in place
    in the memory buffer when it lies there (a switch bumps two)."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + 4 > len(view):
        memory.write_u32(address, memory.read_u32(address) + amount, code=False)   # (mod 2**32)
        return
    _U32.pack_into(view, address, (_U32.unpack_from(view, address)[0] + amount) & 0xFFFFFFFF)


# ---- the x86 ------------------------------------------------------------------
LOAD = """
        lgdt [edi + AREA_GDTR]          ; the descriptor tables: GDTR first, the selectors below
        lldt word ptr [edi + AREA_LDTR] ;   are looked up in it (the CPU checks each descriptor)
        ltr word ptr [edi + AREA_TR]    ; TR's base and limit from its TSS descriptor, marked busy
        mov eax, [edi + AREA_CR3]       ; the address space (0: the COS's, no page directory)
        mov cr3, eax
        mov eax, [edi + AREA_ES]        ; the data segments, DS last: [edi + ...] goes through
        mov es, eax                     ;   DS, and the world's (the COS's) may end below the
        mov eax, [edi + AREA_FS]        ;   save area
        mov fs, eax
        mov eax, [edi + AREA_GS]
        mov gs, eax
        mov eax, [edi + AREA_DS]
        mov ds, eax
        lidt ss:[edi + AREA_IDTR]       ; the IDT last (through SS, the kernel's): until here a fault
                                        ;   enters the kernel's own IDT, whose stubs paging off
                                        ;   reaches (a VM's leads to its VMM at VMM_BASE, paged)
"""


def symbols_source():
    """The AREA_* offsets as assembler symbols (.set lines)."""
    return "\n".join(f".set {n}, {v:#x}" for n, v in SYMBOLS.items())


def _prologue(name):
    f = _F
    return f"""        cli                             ; (the kernel's load: exceptions disabled, always)
        ; -- the TSS being left becomes available: ltr refuses a busy one (the CPU
        ;    sets the busy bit, software clears it)
        sgdt [esp + {f['vector']}]      ; (the frame's vector and error slots: scratch)
        str eax
        and eax, 0xFFF8
        jz {name}_tr_free
        mov ecx, [esp + {f['vector'] + 2}]
        and byte ptr ss:[ecx + eax + 5], 0xFD   ; (SS: the kernel's flat data segment; a VMM's DS
{name}_tr_free:                         ;  ends at the kernel, a VM's GDT lies above it)
        lidt [{layout.KERNEL_IDTR:#x} + base]   ; the kernel's own IDT while loading: a fault here
                                        ;  enters the kernel's stubs through its CS, which every
                                        ;  world's GDT has (a VM's IDT leads to its VMM's stubs,
                                        ;  mapped only with paging on)
        mov eax, cr0                    ; paging off while loading: the kernel is identity-mapped,
        and eax, {~CR0_PG & 0xFFFFFFFF:#x}             ; and CR3 may become 0 (the COS's)
        mov cr0, eax"""


def x86_source(load=LOAD):
    """`world_switch`, reached from the stub's `dispatch` with GO_SWITCH in
    the frame's vector slot and IF clear. ESI = the running world's save area
    (0: nothing to save, load only; RELOAD: load only, with the kernel's own
    LOAD), EDI = the one to load. `load` is the part that loads the CPU
    (exercise 06 writes its own); what comes before and after it is the
    kernel's, and so is the load that puts back a world after a refused one,
    or starts a CPU: a wrong `load` cannot stop the kernel going back."""
    f = _F
    return f"""
{symbols_source()}
world_switch:
        test esi, esi
        jz world_load
        cmp esi, {RELOAD}
        je world_reload
        ; -- save: the running world's registers, from the frame the stub built ...
        mov ecx, 8
save_general:
        mov eax, [esp + 4*ecx - 4]
        mov [esi + 4*ecx - 4], eax
        loop save_general
        mov eax, [esp + {f['eip']}]
        mov [esi + AREA_EIP], eax
        mov eax, [esp + {f['cs']}]
        mov [esi + AREA_CS], eax
        mov eax, [esp + {f['eflags']}]
        mov [esi + AREA_EFLAGS], eax
        lea eax, [esp + {_CPL0_FRAME}]  ; from CPL 0 the CPU pushed no ESP/SS: the world's
        mov ecx, ss                     ; stack is where the frame ends, its SS is ours
        test byte ptr [esp + {f['cs']}], 3
        jz save_stack
        mov eax, [esp + {f['esp']}]
        mov ecx, [esp + {f['ss']}]
save_stack:
        mov [esi + AREA_ESP], eax
        mov [esi + AREA_SS], ecx
        ; -- ... and what only the CPU holds
        mov eax, [esp + {f['ds']}]      ; the world's data segments: the stub saved them in
        mov [esi + AREA_DS], eax        ; the frame (the CPU holds the kernel's now)
        mov eax, [esp + {f['es']}]
        mov [esi + AREA_ES], eax
        mov eax, [esp + {f['fs']}]
        mov [esi + AREA_FS], eax
        mov eax, [esp + {f['gs']}]
        mov [esi + AREA_GS], eax
        sgdt [esi + AREA_GDTR]
        sidt [esi + AREA_IDTR]
        sldt eax
        mov [esi + AREA_LDTR], eax
        str eax
        mov [esi + AREA_TR], eax
        mov eax, cr3
        mov [esi + AREA_CR3], eax
        cli                             ; exceptions disabled (claim 14)
        mov dword ptr [esp + {f['vector']}], {SAVED:#x}    ; the dispatcher seals it, checks the next
        jmp dispatch
world_load:
{_prologue("world_load")}
        ; -- load
{load}
        jmp load_segments
world_reload:                           ; the kernel's own load, whatever `load` is
{_prologue("world_reload")}
        movzx eax, word ptr [edi + AREA_TR]     ; a world this CPU ran: its TSS is this CPU's,
        and eax, 0xFFF8                 ; so its descriptor may be made available (a refused
        jz reload_tr_free               ; load may have left it busy in another GDT)
        cmp ax, word ptr [edi + AREA_GDTR]
        ja reload_tr_free
        mov ecx, [edi + AREA_GDTR + 2]
        and byte ptr ss:[ecx + eax + 5], 0xFD
reload_tr_free:
{LOAD}
load_segments:                          ; -- the data segments the CPU accepted, for the frame
        mov ebx, ds                     ;    (the stub's pops load them on the way out), and
        mov edx, es                     ;    the kernel's own DS/ES again: its memory lies past
        mov ebp, fs                     ;    the limit of the COS's
        mov esi, gs
        mov ax, {layout.KERNEL_DATA_SEL:#x}
        mov ds, ax
        mov es, ax
        push {layout.KERNEL_CODE_SEL:#x}    ; and its own CS: a VMM enters the kernel with its own
        call load_cs                    ;   (VMM_CODE_SEL), which the next world's GDT may not have
        jmp load_paging                 ;   (the COS's): retf pops the address call pushed, then
load_cs:                                ;   this CS, from the GDT just loaded
        retf
load_paging:                            ; -- paging on if the loaded CR3 names a page directory
        mov eax, cr3
        test eax, eax
        jz load_frame_next
        mov eax, cr0
        or eax, {CR0_PG:#x}
        mov cr0, eax
load_frame_next:
        ; -- the frame the stub's popad and iretd load (after every check: a fault
        ;    above leaves the frame as it was)
        test byte ptr [edi + AREA_CS], 3
        jnz load_frame
        mov eax, [edi + AREA_SS]        ; a CPL 0 world: iretd pops no ESP/SS, so its
        mov ss, eax                     ; frame goes where its stack ends
        mov esp, [edi + AREA_ESP]
        sub esp, {_CPL0_FRAME}
load_frame:
        mov ecx, 8
load_general:
        mov eax, [edi + 4*ecx - 4]
        mov [esp + 4*ecx - 4], eax
        loop load_general
        mov eax, [edi + AREA_EIP]
        mov [esp + {f['eip']}], eax
        mov eax, [edi + AREA_CS]
        mov [esp + {f['cs']}], eax
        mov eax, [edi + AREA_EFLAGS]
        mov [esp + {f['eflags']}], eax
        mov [esp + {f['ds']}], ebx
        mov [esp + {f['es']}], edx
        mov [esp + {f['fs']}], ebp
        mov [esp + {f['gs']}], esi
        test byte ptr [edi + AREA_CS], 3
        jz world_loaded
        mov eax, [edi + AREA_ESP]
        mov [esp + {f['esp']}], eax
        mov eax, [edi + AREA_SS]
        mov [esp + {f['ss']}], eax
world_loaded:
        mov dword ptr [esp + {f['vector']}], {LOADED:#x}   ; the dispatcher verifies, then iretd
        jmp dispatch
"""


# ---- Python's part --------------------------------------------------------------
def begin(kernel, frame, cpu, current, nxt):
    """Step 1: enter the x86 with the two save areas."""
    kernel.trace.emit("switch.begin", cpu.index, frm=current.name, to=nxt.name)
    enter(frame, cpu, current.area, nxt.area)


def enter(frame, cpu, save, load=None):
    """The stub goes to `world_switch` next: save into `save` (0: none;
    RELOAD: none, and load with the kernel's own LOAD), load `load` (None: the
    area EDI already names; the save's x86 leaves EDI as `begin` set it)."""
    frame.vector = layout.GO_SWITCH
    if load is None:
        cpu["esi"] = save                   # (one register: half a batch write's cost)
    else:
        cpu.write(esi=save, edi=load)


def saved(kernel, frame, cpu, current, nxt):
    """Back from the x86's save: seal, trace, check the next world's area;
    enter the load. Raises SwitchError (nothing loaded) if the check fails.
    Returns (base, limit) of the GDT the load's lgdt will load (from the bytes checked)."""
    emit, memory, index, at = kernel.trace.emit, kernel.memory, cpu.index, current.area
    seal(memory, at)
    emit("switch.save", index, world=current.name, area=at, eip=memory.read_u32(at + _EIP))
    emit("switch.cli", index, IF=1 if cpu["eflags"] & EFLAGS_IF else 0)
    area = _span(memory, nxt.area, STATE_SIZE + 4)
    if not _intact(area):
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
    read them (the CPU's own: the kernel's CS, which the load's retf loaded)."""
    wrong, cr0, cs = _verify(kernel.memory, frame, cpu, _AREA.unpack(_span(kernel.memory, nxt.area, STATE_SIZE)))
    if wrong:
        kernel.trace.emit("switch.load", cpu.index, world=nxt.name, ok=False, wrong=" ".join(wrong))
        raise SwitchError(f"{nxt.name}: loaded state differs from its save area in {', '.join(wrong)}")
    return cr0, cs


def started(kernel, frame, cpu, nxt, cr0=None):
    """Steps 5-7 traced: loaded and checked, the stub's iretd goes next. cr0: as `loaded`
    read it (nothing has changed it since), else read now."""
    emit, memory, index, name = kernel.trace.emit, kernel.memory, cpu.index, nxt.name
    cr0 = cpu["cr0"] if cr0 is None else cr0
    emit("switch.load", index, world=name, ok=True, area=nxt.area, paging="on" if cr0 & CR0_PG else "off")
    bump(memory, nxt.area + SWITCHES, 1)
    eip, cs, eflags = _IRET.unpack_from(_span(memory, frame.address + _F_EIP, _IRET.size))
    emit("switch.start", index, world=name, cs=cs, eip=eip)
    emit("switch.sti", index, world=name, eflags=eflags)


def refused_by_cpu(kernel, frame, vector):
    """A fault taken inside the load: what the CPU refused, in words."""
    insn = disassemble_one(kernel.memory.read(frame.eip, 16), frame.eip)
    if vector not in EXCEPTION_NAMES:
        return f"an interrupt (vector {vector:#x}) arrived inside the load, before `{insn}`: IF was set"
    return f"the CPU refused it: {EXCEPTION_NAMES[vector]}({frame.error:#x}) at `{insn}`"


def descriptor(memory, gdt_base, gdt_limit, sel):
    """The GDT descriptor a selector names, or None past the limit."""
    index = sel & ~7
    if not index or index + 7 > gdt_limit:
        return None
    return _segment(bytes(_span(memory, gdt_base + index, 8)))


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
     frame_ss) = _FRAME.unpack(_span(memory, frame.address, _FRAME.size))
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
