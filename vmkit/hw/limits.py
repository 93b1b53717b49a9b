"""Segment limits, which Unicorn does not check: the platform does.

An access whose offset runs past the limit of the segment it goes through is a
#GP(0) on a real CPU, or a #SS(0) when that segment is SS, at every CPL, and the
CPU checks it *before* paging translates the address. QEMU (and so Unicorn
2.1.4) loads base and limit into the hidden part of a segment register but
checks neither on a load, a store or a fetch. Checking every access from Python
would cost more than the emulation; so only accesses that *can* cross a limit
are looked at. What is checked, and how:

  - Data accesses, paging off (linear = physical): the linear ranges past the
    limit of every code/data descriptor in the GDT that can be loaded (with
    `cpl`: DPL >= that CPL, and DPL 0, which the CPL 0 software it enters loads
    for itself) and that does not reach 4 GiB get a memory hook limited to that
    range (measured, Unicorn 2.1.4: it costs nothing for code that never
    touches the range). In the hook, a filter in C (counter.c: `vmkit_limit`)
    lets through any access inside the limit of every segment register loaded
    now, and any access whose instruction cannot use the registers it is
    outside of (the instruction's prefixes and opcode, read in C: the kernel's
    pushes and flat DS go through while FS and GS still hold the COS's shorter
    segment); what is left is decoded here (capstone): the segment the
    instruction uses (its prefix, else SS for an ESP/EBP base or an implicit
    stack access, ES for a string destination, else DS), and its limit decides.
    The CPU's own reads of the GDT, LDT, IDT or TSS (a segment load, an iretd,
    a delivery) go through no segment: no limit bounds them.
  - Paging on: no hook. Measured (Unicorn 2.1.4): a memory hook is matched
    against, and given, the *physical* address of the access when paging is on
    (a load at linear 0xFFF8 mapped to 0x20FFF8: a hook on 0xF000-0xFFFF never
    fires, one on 0x20F000-0x20FFFF fires with 0x20FFF8), so no offset can be
    computed from it. A limit is then checked where the access also faults on
    its page (`page_fault`): Unicorn raises the #PF before any memory hook runs
    (the TLB fill fails first), and a real CPU would have raised #GP/#SS, the
    limit coming first; the platform decodes the instruction at CS:EIP
    (through this CPU's MMU, CPU.read_linear) and delivers that instead, with
    the trace of a limit violation. So a guest whose segments end at its
    memory's end, with no page present past it (or only supervisor pages),
    gets #GP at the first byte past its memory; an access past a limit that
    lands on a page the CPL may use is not checked while paging is on. QEMU
    has already written CR2 when the #PF is turned into a #GP (a real CPU
    leaves CR2 as it was for a #GP).
  - Instruction fetch: the C counter's code hook, which runs before every
    instruction anyway, compares the instruction's linear address with the
    lowest address past the limit of a loadable code segment (counter.c:
    `fetch_from`; a code hook is given the *linear* address, paged or not), and
    above it reads CS and checks the instruction's last byte against CS's
    limit: past it, the run stops before the instruction and #GP(0) is
    delivered at it. A fetch that page-faults is checked the same way in
    `page_fault`. A CS from an LDT is not checked.
  - An interrupt or exception: the gate's offset against the limit of the code
    segment it names (delivery.py: #GP, before anything is pushed).

A flat stretch: the hooks cost every access in their ranges (Unicorn's hook path and the
filter: ~60 ns each, measured), and in the COS's world the range past the COS's limit is
all of the kernel's memory: its stack, its data, its work loop's counter. While CS, SS, DS
and ES are flat (base 0, limit 4 GiB, in the table the filter judges from) at CPL 0, paging
off, no access an instruction makes through them can be past a limit, so the platform takes
the hooks off. It does not trust the code to stay so: the C counter, which runs before every
instruction anyway, reads each instruction's prefixes and opcode from memory while the hooks
are off and stops the run before any it has not listed as harmless (counter.c: `flat_allows`):
a segment register load (`mov`/`pop` to one, `lds` & co., a far `jmp`/`call`/`ret`, `iretd`),
an FS or GS prefix while that register is not flat, `int`, an instruction that can fault
(`div`, `bound`, an invalid encoding, x87), `popfd` (TF), I/O, and anything that changes
CR0, GDTR or the debug registers; so no delivery happens with the hooks off, and the hooks
are back (`after_run`, from CPU.run) after every such run, whatever ended it, before any
handler or delivery runs. When a stretch begins: the filter counts the accesses in a row it
saw in that state, and at STRETCH_AFTER it asks the counter to stop before the next
instruction (not a run's first: it may be a breakpoint the run resumes past), which reads
the registers again there (also EFLAGS.TF and VM, DR7's enables, GDTR against the table) and
stops if all hold; the platform then removes the hooks and the run goes on. Both stops
count the instruction as a breakpoint's hit does, and CPU.run takes it back: the same
instructions retire in the same virtual time (a port's stop request in the same run keeps
it, as the counter would have). Measured (Unicorn 2.1.4): a memory hook added after code was
translated fires for that code, and one deleted stops firing at once, with no
retranslation; called from C (counter.c adds and deletes the hooks), `uc_hook_del` ~0.1 µs,
`uc_hook_add` ~0.25 µs (through ctypes from Python, 3 and 3-8 µs); a stretch costs 10-15 µs, so
only a long one pays: the kernel's work loop (3,000 iterations, two accesses each) does,
a kernel entry's few pushes (made while DS and ES still hold the COS's segments) do not
begin one.

A data violation found in a hook stops the run. Measured (Unicorn 2.1.4, a
Python `UC_HOOK_MEM_*` hook calling `emu_stop`): a load is abandoned before its
destination register is written; a store has landed in memory but no register
has changed (`push` leaves ESP as it was) and EIP is still the instruction's.
So the old bytes, read in the hook, are put back, and the fault is delivered
at that EIP through whatever IDT is loaded (CPU.raise_fault): the instruction
did not happen.

The descriptors are read when the software that owns the GDT says it changed
(`CPU.descriptors_changed`), as a real CPU reads a descriptor only when a
segment register is loaded. Unicorn does not expose the hidden part of a
segment register to a hook (CPU.segment reads it from a saved context: far too
slow per access), so limits are judged from the GDT that GDTR names: the
filter's copy while GDTR still names the table it was read from, else (an
`lgdt` since, as in a world switch's load, between the kernel's refresh at its
start, `loading`, and the one at its end) that GDT's entries read from memory
in C (counter.c: `gdt_now`), so a segment the load loads is judged by the
descriptor it was loaded from, not by the entry of the same selector in the
GDT the switch left. CS, which the load does not change until its retf, is
judged from the table it was loaded from while that table has it (a VMM's
CS, which the COS's GDT lacks); a data register loaded before that lgdt, by
its selector's entry in the new GDT (the kernel's SS and DS are the same in
every world's GDT; a world's FS and GS left from before are not used by the
load, and the filter looks only at the registers an instruction can use). Where CS
cannot hold that GDT's entry at its CPL (a non-conforming code segment's DPL
is the CPL), CS was loaded from another table (a CPU between the firmware's GDT
and the kernel's) and no limit is judged from this one.

A world switch tells the platform twice (at its load's start, `loading` the next world's
GDT, and at its end), and goes between a few configurations: a world's own, and the load's
from one world's GDT to the next's. So the C filter keeps each configuration it has been in
(counter.c: `vmkit_limits_refresh`, PREPARED of them, the least recently used replaced): its
key (GDTR, the GDT's bytes, the CPL and paging the software will run at, the loading GDT's
GDTR and bytes) and what this module decoded from it once (the arrays, the lowest fetch
checked, the ranges). A refresh reads GDTR, CR0 and the tables' bytes in C and installs the
configuration they match byte for byte, or hands the new key to Python to decode: a GDT
edited in place under the same GDTR (an accessed bit the CPU set, a descriptor the kernel
rewrote) is a new key, never a stale one. Measured (a world switch between two VMs and the
COS): a refresh ~2 µs, of which C ~0.7 (the hooks' add and delete 0.4); reading, comparing
and installing it all from Python cost 13-19 µs. Deleting a memory hook while paging is on
leaves nothing in Unicorn's exception record (uc_hook_del invalidates the translated code a
hook instrumented, which only a code or block hook has: Unicorn 2.1.4's
`hooked_regions_check`; tests/test_limits_prepared.py), so none is cleared.
Without a C compiler (no C counter, counter.py) only
the checks made in Python remain: the #PF path and the gate's offset.
"""
import ctypes
import functools
import struct

import capstone.x86 as cx
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc

from .x86 import decode_segment, CR0_PG, GP, SS_FAULT

SELECTORS = 64                              # as LIMIT_SELECTORS in counter.c
RANGES = 4 * SELECTORS                      # as LIMIT_RANGES: two tables' ranges, two an entry at most
PREPARED = 32                               # as LIMIT_PREPARED: configurations kept
REFRESH_MISS, HOOK_FAILED = -1, -2          # as in counter.c
FLAT_WANT, FLAT_ON, FLAT_STOP, FLAT_END = 1, 2, 4, 8   # as in counter.c
# Filtered accesses in a row at CPL 0 with CS, SS, DS, ES flat after which the hooks are
# suspended (a flat stretch): a suspension and the hooks' return cost 10-15 µs, the filter
# ~60 ns an access (measured: the module's docstring).
STRETCH_AFTER = 256
NO_FETCH_CHECK = 0xFFFFFFFFFFFFFFFF
CONFORMING, NOT_CODE = 0x10, 0xFF                # as in counter.c
FLAT = 0xFFFFFFFF
# Unicorn matches a hook's range against an access's first byte: the range starts this
# much below the limit, so an access that straddles it is seen too (the filter then checks
# its last byte); 15: the longest operand of a 32-bit instruction (fxsave's is bigger).
STRADDLE = 15
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")
_SLOW = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, ctypes.c_int)
_REG_READ_BATCH = ctypes.cast(_uc.uclib.uc_reg_read_batch, ctypes.c_void_p)
# implicit stack accesses: the instruction has no memory operand for them
_STACK = {"push", "pop", "pushal", "popal", "pushad", "popad", "pushfd", "popfd", "pushf", "popf",
          "call", "ret", "enter", "leave", "iretd", "iret"}
_disasm = Cs(CS_ARCH_X86, CS_MODE_32)
_disasm.detail = True
_SEG_NAMES = {getattr(cx, f"X86_REG_{r.upper()}"): r for r in SEGMENT_REGS}


class _Prepared(ctypes.Structure):
    """struct vmkit_prepared in counter.c, field for field: one configuration of the filter."""
    _fields_ = [("stamp", ctypes.c_uint64), ("gdt_base", ctypes.c_uint64), ("gdt_limit", ctypes.c_uint64),
                ("table_len", ctypes.c_uint64), ("cpl", ctypes.c_uint64), ("paging", ctypes.c_uint64),
                ("loading", ctypes.c_uint64), ("load_base", ctypes.c_uint64), ("load_limit", ctypes.c_uint64),
                ("other_len", ctypes.c_uint64), ("nsel", ctypes.c_uint64), ("fetch_from", ctypes.c_uint64),
                ("nranges", ctypes.c_uint64),
                ("first", ctypes.c_uint64 * RANGES), ("last", ctypes.c_uint64 * RANGES),
                ("base", ctypes.c_uint64 * SELECTORS), ("limit", ctypes.c_uint64 * SELECTORS),
                ("code", ctypes.c_uint64 * SELECTORS),
                ("table", ctypes.c_ubyte * (8 * SELECTORS)), ("other", ctypes.c_ubyte * (8 * SELECTORS))]


class _State(ctypes.Structure):
    """struct vmkit_limits in counter.c, field for field."""
    _fields_ = [("slow", ctypes.c_void_p),
                ("regs", ctypes.c_int64 * 6), ("nsel", ctypes.c_uint64),
                ("base", ctypes.c_uint64 * SELECTORS), ("limit", ctypes.c_uint64 * SELECTORS),
                ("code", ctypes.c_uint64 * SELECTORS),
                ("ram", ctypes.c_void_p), ("ram_size", ctypes.c_uint64), ("eip_id", ctypes.c_int64), ("cr0_id", ctypes.c_int64),
                ("quiet", ctypes.c_uint64), ("reg_read_batch", ctypes.c_void_p),
                ("calls", ctypes.c_uint64), ("looked", ctypes.c_uint64),
                ("gdt_base", ctypes.c_uint64), ("gdt_limit", ctypes.c_uint64), ("gdtr_id", ctypes.c_int64),
                ("counter", ctypes.c_void_p), ("flat_run", ctypes.c_uint64), ("fsgs_flat", ctypes.c_uint64),
                ("eflags_id", ctypes.c_int64), ("dr7_id", ctypes.c_int64),
                ("hook_add", ctypes.c_void_p), ("hook_del", ctypes.c_void_p), ("hook_type", ctypes.c_int64),
                ("suspended", ctypes.c_uint64),
                ("nranges", ctypes.c_uint64), ("first", ctypes.c_uint64 * RANGES), ("last", ctypes.c_uint64 * RANGES),
                ("nhooks", ctypes.c_uint64), ("hooks", ctypes.c_uint64 * RANGES),
                ("current", ctypes.c_int64), ("clock", ctypes.c_uint64),
                ("reused", ctypes.c_uint64), ("misses", ctypes.c_uint64),
                ("pending", _Prepared), ("prepared", _Prepared * PREPARED)]


class Violation:
    """An access past a limit, found inside the hook; delivered once the run stopped."""
    def __init__(self, vector, eip, address, size, segment, limit, old, count):
        self.vector, self.eip, self.address, self.size = vector, eip, address, size
        self.segment, self.limit, self.old, self.count = segment, limit, old, count

    @property
    def why(self):
        return (f"{self.size}-byte access at {self.address:#x} past the limit {self.limit:#x} "
                f"of {self.segment.upper()}")


class SegmentLimits:
    """One CPU's limit checks (see the module's docstring)."""

    def __init__(self, cpu, library):
        self.cpu = cpu
        self.lib = library
        self.violation = None
        self.decoded = 0                    # accesses the C filter handed to Python (the slow path)
        self.stretches = 0                  # flat stretches begun (tests, figures)
        self.state = None                   # the C filter's (counter.c); `quiet` > 0 while the
        if library is None:                 # platform delivers: its register writes load CS and SS
            return
        self._slow = _SLOW(self._on_slow)   # kept alive: C holds a pointer to it
        self.state = _State(ctypes.cast(self._slow, ctypes.c_void_p).value,
                            (ctypes.c_int64 * 6)(*(getattr(X, "UC_X86_REG_" + r.upper())
                                                   for r in SEGMENT_REGS)), 0)
        s = self.state
        s.ram, s.ram_size = cpu.memory.address, cpu.memory.size
        s.eip_id, s.cr0_id, s.reg_read_batch = X.UC_X86_REG_EIP, X.UC_X86_REG_CR0, _REG_READ_BATCH.value
        s.gdtr_id = X.UC_X86_REG_GDTR
        s.eflags_id, s.dr7_id = X.UC_X86_REG_EFLAGS, X.UC_X86_REG_DR7
        s.hook_add = ctypes.cast(_uc.uclib.uc_hook_add, ctypes.c_void_p).value
        s.hook_del = ctypes.cast(_uc.uclib.uc_hook_del, ctypes.c_void_p).value
        s.hook_type, s.current = UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, -1
        self._at = ctypes.addressof(s)
        self._uch = cpu.uc._uch
        self._refresh, self._install = library.vmkit_limits_refresh, library.vmkit_limits_install
        self._suspend, self._resume_c = library.vmkit_limits_suspend, library.vmkit_limits_resume
        for f in (self._refresh, self._install, self._resume_c):
            f.restype = ctypes.c_int64
        self._suspend.restype = None
        self._refresh.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint64)
        for f in (self._install, self._suspend, self._resume_c):
            f.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        c = self._counter = cpu.counter.state
        c.limits = ctypes.addressof(s)      # the fetch check reads CS's limit here
        s.counter = ctypes.addressof(c)     # the filter asks the counter for a flat stretch
        c.stretch_after = STRETCH_AFTER

    # ---- which ranges ------------------------------------------------------------
    def refresh(self, cpl=None, paging=None, loading=None):
        """Read the GDT the CPU's GDTR names and hook the ranges past the limits of the
        segments that can be loaded: with `cpl`, those a program at that CPL may load
        (DPL >= cpl: a CPL 3 world cannot load the COS's DPL 1 segments) and the DPL 0
        ones the CPL 0 software it enters loads for itself; without, all. With paging on,
        none: a hook sees physical addresses then (the module's docstring); `paging`: as
        the software will have it (the hooks' filter passes any access made while paging
        is still on). `loading`: (base, limit) of a GDT the software's x86 is about to load
        with lgdt before it tells the platform again (a world switch's next world's): the
        ranges past its segments' limits are hooked too, and the filter judges an access
        made after that lgdt from the GDT GDTR then names (counter.c: `gdt_now`), so a
        segment the load loads is judged by its own descriptor. Nothing to do if nothing
        changed. GDTR, CR0 and the tables' bytes are read in C (counter.c:
        `vmkit_limits_refresh`), which installs a configuration it has held before if they
        match it byte for byte (a world switch goes between a few); only a new one is
        decoded here."""
        if self.lib is None:
            return
        got = self._refresh(self._uch, self._at, cpl or 0, -1 if paging is None else int(bool(paging)),
                            1 if loading else 0, *(loading or (0, 0)))
        if got == REFRESH_MISS:
            got = self._prepare()
        if got <= HOOK_FAILED:
            raise RuntimeError(f"cannot hook the ranges past the segment limits (unicorn error {HOOK_FAILED - got})")

    def _prepare(self):
        """A configuration C has not held (its key left in `pending`): decode it, and let C
        keep it and install it."""
        p = self.state.pending
        at = ctypes.addressof(p)
        table = ctypes.string_at(at + _Prepared.table.offset, p.table_len)
        other = ctypes.string_at(at + _Prepared.other.offset, p.other_len) if p.loading else None
        block = _prepared(table, p.gdt_limit, p.cpl, other, p.load_limit)
        ctypes.memmove(at + _Prepared.nsel.offset, block, len(block))
        return self._install(self._uch, self._at)

    @property
    def ranges(self):
        """The linear ranges hooked (wanted hooked: during a flat stretch they are off), (first, last)."""
        s = self.state
        if s is None:
            return ()
        return tuple(zip(s.first[:s.nranges], s.last[:s.nranges]))

    @property
    def suspended(self):
        """A flat stretch: the hooks off, `ranges` still wanted."""
        return self.state is not None and bool(self.state.suspended)

    @property
    def _hooks(self):
        """Unicorn's handles of the hooks installed now."""
        s = self.state
        return [] if s is None else list(s.hooks[:s.nhooks])

    def _held(self):
        """(GDTR base, limit, the table's bytes) of the configuration installed, or None."""
        s = self.state
        if s is None or s.current < 0:
            return None
        p = s.prepared[s.current]
        return p.gdt_base, p.gdt_limit, ctypes.string_at(ctypes.addressof(p) + _Prepared.table.offset, p.table_len)

    # ---- a flat stretch: the hooks off while no access can be past a limit -------------
    def after_run(self, other_stop):
        """After every run whose counter has its `flat` set (CPU.run): a stretch that had the
        hooks off ends (they are back before anything else runs); one the counter stopped to
        begin starts, unless the run also stopped for something else (`other_stop`: a
        fault, a violation, a port's stop request). True: the counter stopped before an
        instruction it counted (as a breakpoint's hit), only to begin or end a stretch: the
        run goes on there, and the instruction counts when it runs."""
        if self.lib is None:
            return False
        c = self._counter
        flat = c.flat
        if flat & FLAT_ON:
            self._resume()
            return bool(flat & FLAT_END) and not other_stop
        if not flat & FLAT_STOP:
            return False                    # (FLAT_WANT: the counter looks at its next instruction)
        c.flat = 0
        if other_stop:
            return False
        self._suspend(self._uch, self._at)   # (paging is off: the counter checked)
        self.stretches += 1
        c.flat = FLAT_ON
        return True

    def _resume(self):
        """The hooks back, as `ranges` wants them (a stretch over)."""
        if self.state.suspended:
            got = self._resume_c(self._uch, self._at)
            if got:
                raise RuntimeError(f"cannot hook the ranges past the segment limits (unicorn error {HOOK_FAILED - got})")

    # ---- the slow path: which segment, and is it past the limit -----------------------
    def _on_slow(self, kind, address, size):
        cpu = self.cpu
        self.decoded += 1
        try:
            eip = cpu["eip"]
            access = self._access(eip, address)
            if access is None:
                return                      # the CPU's own read of a descriptor table
            segment, d = access[:2]
            offset = (address - d.base) & FLAT
            if _inside(d, offset, size):
                return
            old = None
            if kind == UC_MEM_WRITE:
                try:
                    old = cpu.read_linear(address, size)
                except ValueError:          # not memory (a device's register, the local APIC's):
                    pass                    # nothing to put back
            self.violation = Violation(SS_FAULT if segment == "ss" else GP, eip, address, size,
                                       segment, d.limit, old, cpu.counter.count)
            cpu.uc.emu_stop()
        except Exception as e:              # never let an exception cross the C hook
            self.violation = e
            cpu.uc.emu_stop()

    def page_fault(self):
        """A #PF is about to be delivered at EIP: a real CPU checks the segment's limit
        before it translates the address, so an access past its segment's limit is a
        #GP(0) (#SS(0) through SS) even where the page is not present. Returns that
        Violation, delivered instead of the #PF, or None. Only this path pays: nothing is
        decoded when every loaded segment is flat. The instruction is read at CS's base +
        EIP through this CPU's MMU (read_linear), as it fetched it; the access is the one of
        its operands that holds CR2 (the linear address that faulted). Also an instruction
        that starts past CS's limit: a real CPU would not have fetched it (#GP(0))."""
        cpu = self.cpu
        values = dict(zip(SEGMENT_REGS, cpu.read(*SEGMENT_REGS)))
        loaded = {r: self._descriptor(sel) for r, sel in values.items()}
        if not _holds(loaded["cs"], values["cs"] & 3):
            return None                     # CS came from another GDT (counter.c: cs_described)
        if all(d is None or (d.base == 0 and d.limit == FLAT and not _expand_down(d)) for d in loaded.values()):
            return None
        cr2, eip = cpu.read("cr2", "eip")
        cs = loaded["cs"]
        if cs is not None and not _inside(cs, eip, 1):
            return Violation(GP, eip, (cs.base + eip) & FLAT, 1, "cs", cs.limit, None, cpu.counter.count)
        if cs is not None and self._fetch_crossed(cs, eip, cr2):
            return Violation(GP, eip, cr2, 1, "cs", cs.limit, None, cpu.counter.count)
        access = self._access(eip, cr2)
        if access is None:
            return None
        segment, d, offset, size = access
        if _inside(d, offset, size):
            return None
        return Violation(SS_FAULT if segment == "ss" else GP, eip, (d.base + offset) & FLAT, size,
                         segment, d.limit, None, cpu.counter.count)

    def unmapped(self, address):
        """An access at `address` (paging off: linear = physical) to memory the machine does
        not have stopped the run (Unicorn fires no read/write hook for it): a real CPU checks
        the limit of the segment the access goes through first. The Violation if it is past
        that limit, else None (with paging on the address Unicorn gives is physical, and
        no access of the instruction's matches it: None)."""
        eip = self.cpu["eip"]
        access = self._access(eip, address)
        if access is None:
            return None
        segment, d, offset, size = access
        if _inside(d, offset, size):
            return None
        return Violation(SS_FAULT if segment == "ss" else GP, eip, address, size, segment, d.limit,
                         None, self.cpu.counter.count)

    def _fetch_crossed(self, cs, eip, cr2):
        """Did the fetch of the instruction at EIP fault at CR2, past CS's limit (an
        instruction whose first bytes are inside it and the rest on a page not present)?
        Its bytes before CR2 are read (they are on a present page): if they hold no whole
        instruction, the fetch needed CR2's byte, and a real CPU refused it at the limit."""
        at = (cs.base + eip) & FLAT
        offset = (cr2 - cs.base) & FLAT
        if not 0 < (cr2 - at) & FLAT < 15 or _inside(cs, offset, 1):
            return False
        try:
            head = self.cpu.read_linear(at, (cr2 - at) & FLAT)
        except ValueError:
            return False
        insn = next(_disasm.disasm(head, eip), None)
        return insn is None or insn.size > len(head)

    def _access(self, eip, address):
        """(segment, its descriptor, offset, size) of the access of the instruction at
        EIP that `address` (linear) falls in: the memory operand that holds it (its segment
        from its prefix, else SS for an ESP/EBP base, ES for a string destination, else
        DS), else the stack for an instruction that uses it (push, pop, call, ret, iretd...).
        None: not an access of the instruction's through a segment (the CPU's own read of a
        descriptor table or the TSS, which no segment limit bounds) or nothing decodable."""
        cpu = self.cpu
        cs = self._descriptor(cpu["cs"])
        at = ((cs.base if cs else 0) + eip) & FLAT
        code = b""
        for n in (16, 0x1000 - (at & 0xFFF)):     # an instruction at a page's end: up to it
            try:
                code = cpu.read_linear(at, min(n, 16))
                break
            except ValueError:
                continue
        insn = next(_disasm.disasm(code, eip), None)
        if insn is None:
            return None
        mems = [op for op in insn.operands if op.type == cx.X86_OP_MEM]
        if insn.mnemonic in ("lea", "nop") or insn.mnemonic.startswith("prefetch"):
            mems = []
        regs = dict(zip(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"),
                        cpu.read("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")))
        for op in mems:
            m = op.mem
            segment = _SEG_NAMES.get(m.segment) or ("ss" if m.base in (cx.X86_REG_ESP, cx.X86_REG_EBP) else "ds")
            offset = m.disp
            if m.base:
                offset += regs.get(insn.reg_name(m.base), 0)
            if m.index:
                offset += regs.get(insn.reg_name(m.index), 0) * m.scale
            offset &= FLAT
            d = self._descriptor(cpu[segment])
            if d is not None and 0 <= (address - d.base - offset) & FLAT < max(op.size, 1):
                return segment, d, offset, max(op.size, 1)
        if self._in_tables(address):
            return None
        stack = insn.mnemonic in _STACK or insn.mnemonic.startswith(("push", "pop"))
        if not stack:
            return None
        d = self._descriptor(cpu["ss"])
        return None if d is None else ("ss", d, (address - d.base) & FLAT, 1)

    def _in_tables(self, address):
        """Is `address` in the GDT, LDT, IDT or TSS loaded now (the CPU's own reads of them
        on a segment load, an iretd, a far jump: accesses no segment limit bounds)?"""
        _, tables = self.cpu.read_with_tables((), ("gdtr", "ldtr", "idtr", "tr"))
        return any(limit and 0 <= address - base <= limit for _, base, limit, _ in tables)

    def _descriptor(self, sel):
        """The descriptor a selector names, as the CPU loaded it (None: null or unreadable)."""
        cpu = self.cpu
        if (sel & ~3) == 0:
            return None
        _, table, limit, _ = cpu["ldtr"] if sel & 4 else cpu["gdtr"]
        index = sel & ~7
        if index + 7 > limit:               # after an lgdt, loaded before it: from the table
            held = self._held()             # the filter holds (as counter.c does)
            if sel & 4 or held is None or held[:2] == (table, limit) or index + 8 > len(held[2]):
                return None
            return decode_segment(held[2][index:index + 8])
        try:
            return decode_segment(cpu.memory.read(table + index, 8))
        except ValueError:
            return None

    # ---- after the run stopped -----------------------------------------------------
    def take(self):
        """The violation the last run stopped for (its store undone; or an instruction
        fetched past CS's limit, which the counter stopped before), or None."""
        v, self.violation = self.violation, None
        c = self.cpu.counter.state if self.lib is not None else None
        if v is None and c is not None and c.fetch_fault:
            address, c.fetch_fault = c.fetch_fault - 1, 0
            cs = self._descriptor(self.cpu["cs"])
            v = Violation(GP, self.cpu["eip"], address, 1, "cs", cs.limit if cs else FLAT, None, c.fetch_count)
            return v
        if isinstance(v, Exception):            # the platform's own failure: stop, as a handler's does
            self.cpu.stop(f"the segment-limit check failed: {type(v).__name__}: {v}")
            raise v
        if v is not None and v.old is not None:          # physical: drops translated code too
            self.cpu.memory.write(self.cpu.translate_linear(v.address), v.old)
        return v


@functools.lru_cache(maxsize=256)
def _prepared(table, limit, least, other, other_limit):
    """What the C filter holds of a configuration, decoded (struct vmkit_prepared from `nsel`
    to `code`), packed for one memmove: every machine of a run (each CPU, each board) goes
    between the same few GDTs, so each configuration is decoded once in a process (a pure
    function of its arguments). `other`: the bytes of a GDT about to be loaded, or None."""
    bases, limits, code, ranges, fetch_from = _decoded(table, limit, least)
    if other is not None:
        ranges = _union(ranges, _decoded(other, other_limit, least)[3])
    firsts = [first for first, _ in ranges] + [0] * (RANGES - len(ranges))
    lasts = [last for _, last in ranges] + [0] * (RANGES - len(ranges))
    pad = bytes(8 * SELECTORS - len(bases))
    return (struct.pack(f"<3Q{RANGES}Q{RANGES}Q", len(table) // 8, fetch_from, len(ranges), *firsts, *lasts)
            + bases + pad + limits + pad + code + pad)


@functools.lru_cache(maxsize=256)
def _decoded(table, limit, least):
    """_decode's arrays packed as the C filter holds them (u64 each), for a memmove: a world
    switch goes between a few GDTs, and every machine of a run between the same few, so
    each is decoded once (a pure function of its arguments)."""
    bases, limits, code, ranges, fetch_from = _decode(table, limit, least)
    pack = lambda values: struct.pack(f"<{len(values)}Q", *values)
    return pack(bases), pack(limits), pack(code), tuple(ranges), fetch_from


@functools.lru_cache(maxsize=256)
def _union(ranges, more):
    return tuple(_merge(ranges + more))


def _decode(table, limit, least):
    """(bases, limits, code DPLs) of every entry for the C filter, the merged ranges past the limits
    of the segments within the GDT's limit of DPL >= least or DPL 0, and the lowest linear
    address an instruction of such a code segment may start at and still cross its limit
    (NO_FETCH_CHECK: every such code segment is flat)."""
    bases, limits, code, ranges, fetch_from = [], [], [], [], NO_FETCH_CHECK
    for i in range(len(table) // 8):
        d = decode_segment(table[8 * i:8 * i + 8])
        segment = d.s and d.present
        down = segment and _expand_down(d)
        bases.append(d.base if segment else 0)
        limits.append(0 if down else d.limit if segment else FLAT)   # expand-down: always decoded
        if 8 * i + 7 > limit:               # not loadable now: no range of its own, and
            code.append(NOT_CODE)           # not the CS of a CPU that runs on this table
            continue
        code.append(d.dpl | (CONFORMING if d.type & 4 else 0) if segment and d.type & 8 else NOT_CODE)
        loadable = d.dpl >= least or d.dpl == 0
        if segment and loadable and d.type & 8 and d.limit < FLAT:    # code: its fetches
            fetch_from = min(fetch_from, 0 if d.base else max(0, d.limit + 1 - STRADDLE))
        if down and loadable:               # valid offsets lie *above* its limit
            ranges.append((d.base, min(FLAT, d.base + d.limit)))
        elif segment and loadable and d.limit < FLAT and d.base + d.limit < FLAT:
            ranges.append((max(d.base, d.base + d.limit + 1 - STRADDLE), FLAT))
            if d.base:                      # an offset past the limit may wrap below the base
                ranges.append((0, d.base - 1))
    return bases, limits, code, _merge(ranges), fetch_from


def _holds(d, cpl):
    """Can CS hold this descriptor at this CPL (a non-conforming code segment's DPL is the
    CPL, a conforming one's at most)? If not, the GDT is not the one CS was loaded from."""
    if d is None or not (d.s and d.type & 8):
        return False
    return d.dpl <= cpl if d.type & 4 else d.dpl == cpl


def _expand_down(d):
    """A data segment (type bit 3 clear) with the expand-down bit (2) set."""
    return not d.type & 8 and bool(d.type & 4)


def _inside(d, offset, size):
    """Is [offset, offset + size) inside the segment's limit?"""
    last = offset + size - 1
    if _expand_down(d):                     # (limit, 4 GiB or 64 KiB with B clear]
        return offset > d.limit and last <= (FLAT if d.db else 0xFFFF)
    return last <= d.limit


def _merge(ranges):
    out = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out
