"""Segment limits, which Unicorn does not check: the platform does.

A data access whose offset runs past the limit of the segment it goes through
is a #GP(0) on a real CPU, or a #SS(0) when that segment is SS. QEMU (and so
Unicorn 2.1.4) loads base and limit into the hidden part of a segment
register but checks neither on a load or a store. Checking every access from
Python would cost more than the emulation; so only accesses that *can* cross
a limit are looked at:

  - the linear ranges past the limit of every code/data descriptor in the GDT
    that CPL > 0 may load (DPL 1..3) and that does not reach 4 GiB get a
    memory hook, limited to that range (a segment whose limit is the full
    4 GiB needs none). Measured (Unicorn 2.1.4): such a hook costs nothing
    measurable for code that never touches the range;
  - in the hook, a filter in C (counter.c: `vmkit_limit`) lets through CPL 0
    and any access inside the limit of every segment register loaded now, so
    the kernel's own accesses and a flat-segmented VM's cost no Python;
  - what is left is decoded here (capstone): the segment the instruction uses
    (its prefix, else SS for an ESP/EBP base or an implicit stack access, ES for
    a string destination, else DS), and its limit decides.

A violation stops the run. Measured (Unicorn 2.1.4, a Python `UC_HOOK_MEM_*`
hook calling `emu_stop`): a load is abandoned before its destination register
is written; a store has landed in memory but no register has changed (`push`
leaves ESP as it was) and EIP is still the instruction's. So the old bytes,
read in the hook, are put back, and the fault is delivered at that EIP through
whatever IDT is loaded (CPU.raise_fault): the instruction did not happen.

The descriptors are read when the software that owns the GDT says it changed
(`CPU.descriptors_changed`), as a real CPU reads a descriptor only when a
segment register is loaded. Not checked: instruction fetch past CS's limit (a
code hook limited to a range slows every instruction, counter.c) and accesses
at CPL 0. Without a C compiler (no C counter, counter.py) no limit is checked.
"""
import ctypes

import capstone.x86 as cx
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc

from . import unicorn_quirks
from .x86 import decode_segment, GP, SS_FAULT

SELECTORS = 64                              # as LIMIT_SELECTORS in counter.c
FLAT = 0xFFFFFFFF
# Unicorn matches a hook's range against an access's first byte: the range starts this
# much below the limit, so an access that straddles it is seen too (the filter then checks
# its last byte); 15: the longest operand of a 32-bit instruction (fxsave's is bigger).
STRADDLE = 15
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")
_SLOW = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, ctypes.c_int)
_REG_READ = ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p)
# implicit stack accesses: the instruction has no memory operand for them
_STACK = {"push", "pop", "pushal", "popal", "pushad", "popad", "pushfd", "popfd", "pushf", "popf",
          "call", "ret", "enter", "leave", "iretd", "iret"}
# instructions that read a descriptor from the GDT/LDT without a memory operand of theirs there
_DESCRIPTOR_LOADS = {"iretd", "iret", "retf", "ljmp", "lcall", "lds", "les", "lfs", "lgs", "lss",
                     "ltr", "lldt", "lar", "lsl", "verr", "verw", "int", "int3", "into"}
_disasm = Cs(CS_ARCH_X86, CS_MODE_32)
_disasm.detail = True
_SEG_NAMES = {getattr(cx, f"X86_REG_{r.upper()}"): r for r in SEGMENT_REGS}


class _State(ctypes.Structure):
    """struct vmkit_limits in counter.c, field for field."""
    _fields_ = [("reg_read", ctypes.c_void_p), ("slow", ctypes.c_void_p),
                ("regs", ctypes.c_int64 * 6), ("nsel", ctypes.c_uint64),
                ("base", ctypes.c_uint64 * SELECTORS), ("limit", ctypes.c_uint64 * SELECTORS)]


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
        self.ranges = ()                    # the hooked linear ranges, (first, last)
        self.violation = None
        self._hooks = []
        self._seen = None                   # (GDTR base, limit, table bytes, least DPL) last refreshed
        self._known = {}                    # such a key -> its table for the filter and its ranges
        if library is None:
            return
        self._slow = _SLOW(self._on_slow)   # kept alive: C holds a pointer to it
        self.state = _State(_REG_READ.value, ctypes.cast(self._slow, ctypes.c_void_p).value,
                            (ctypes.c_int64 * 6)(*(getattr(X, "UC_X86_REG_" + r.upper())
                                                   for r in SEGMENT_REGS)), 0)

    # ---- which ranges ------------------------------------------------------------
    def refresh(self, cpl=None):
        """Read the GDT the CPU's GDTR names and hook the ranges past the limits
        of the segments CPL > 0 may load (with `cpl`: the segments a program at that
        CPL may load, DPL >= cpl; a CPL 3 world cannot load the COS's DPL 1 segments,
        so its accesses need no hook). Nothing to do if nothing changed."""
        if self.lib is None:
            return
        _, base, limit, _ = self.cpu["gdtr"]
        table = b""
        for length in (SELECTORS * 8, min(limit + 1, SELECTORS * 8)):
            try:                            # the filter's table goes past the limit when it can:
                table = self.cpu.memory.read(base, length) if limit else b""   # a world with a
                break                       # longer GDTR over the same table finds its selectors
            except ValueError:
                continue
        least = max(1, cpl or 0)
        seen = (base, limit, table, least)
        if seen == self._seen:
            return
        self._seen = seen
        known = self._known.get(seen)
        if known is None:                   # a world switch goes between a few: decode each once
            if len(self._known) > 64:
                self._known.clear()
            known = self._known[seen] = _decode(table, limit, least)
        s = self.state
        s.nsel = len(table) // 8
        bases, limits, ranges = known
        s.base[:s.nsel], s.limit[:s.nsel] = bases, limits
        self._hook(ranges)

    def _hook(self, ranges):
        if tuple(ranges) == self.ranges:
            return
        uc = self.cpu.uc
        for h in self._hooks:
            _uc.uclib.uc_hook_del(uc._uch, ctypes.c_size_t(h))
        if self._hooks:
            unicorn_quirks.clear_exception_record(uc)   # as CPU.remove: hook_del under paging
        self._hooks = []
        for first, last in ranges:
            handle = ctypes.c_size_t()
            err = _uc.uclib.uc_hook_add(uc._uch, ctypes.byref(handle),
                                        ctypes.c_int(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE),
                                        ctypes.cast(self.lib.vmkit_limit, ctypes.c_void_p),
                                        ctypes.byref(self.state), ctypes.c_uint64(first),
                                        ctypes.c_uint64(last))
            if err:
                raise RuntimeError(f"cannot hook {first:#x}-{last:#x} for segment limits (unicorn error {err})")
            self._hooks.append(handle.value)
        self.ranges = tuple(ranges)         # (no trace event: they change at every world switch)

    # ---- the slow path: which segment, and is it past the limit -----------------------
    def _on_slow(self, kind, address, size):
        cpu = self.cpu
        try:
            if self._system_access(address, size):
                return
            eip = cpu["eip"]
            segment = self._segment_of(eip, address)
            d = self._descriptor(cpu[segment])
            if d is None:
                return
            offset = (address - d.base) & FLAT
            if _inside(d, offset, size):
                return
            old = self._old_bytes(address, size) if kind == UC_MEM_WRITE else None
            self.violation = Violation(SS_FAULT if segment == "ss" else GP, eip, address, size,
                                       segment, d.limit, old, cpu.counter.count)
            cpu.uc.emu_stop()
        except Exception as e:              # never let an exception cross the C hook
            self.violation = e
            cpu.uc.emu_stop()

    def _old_bytes(self, address, size):
        """What a store past the limit may have overwritten: its bytes, or those in its
        first page when the next is not writable here (the store cannot have landed there)."""
        try:
            return self.cpu.read_linear(address, size)
        except ValueError:
            return self.cpu.read_linear(address, min(size, 0x1000 - (address & 0xFFF)))

    def _system_access(self, address, size):
        """The CPU's own access to a descriptor table it has loaded: an instruction that
        loads a segment register (iretd, a far transfer, mov/pop/lds.. of a selector)
        reads the descriptor, and sets its accessed bit, through GDTR/LDTR, not through a
        segment register, so no limit applies. (A VM's GDT lies in its VMM region, past
        its guest's limit.) Only such an instruction, and only where none of its own
        memory operands points: a store into a loaded table is checked as any store."""
        cpu = self.cpu
        tables = cpu.read_with_tables((), ("gdtr", "ldtr"))[1]
        if not any(limit and base <= address and address + size - 1 <= base + limit
                   for _, base, limit, _ in tables):
            return False
        try:
            eip = cpu["eip"]
            insn = next(_disasm.disasm(cpu.read_linear(eip, 16), eip), None)
        except ValueError:
            return False
        if insn is None:
            return False
        loads = insn.mnemonic in _DESCRIPTOR_LOADS or any(
            op.type == cx.X86_OP_REG and op.reg in _SEG_NAMES for op in insn.operands[:1])
        return loads and not any(op.type == cx.X86_OP_MEM for op in insn.operands[:1])

    def _segment_of(self, eip, address):
        cpu = self.cpu
        code = b""
        for n in (16, 0x1000 - (eip & 0xFFF)):     # an instruction at a page's end: up to it
            try:
                code = cpu.read_linear(eip, min(n, 16))
                break
            except ValueError:
                continue
        insn = next(_disasm.disasm(code, eip), None)
        if insn is None:
            return "ds"
        mems = [op.mem for op in insn.operands if op.type == cx.X86_OP_MEM]
        if insn.mnemonic == "lea":
            mems = []
        if not mems:
            return "ss" if insn.mnemonic in _STACK or insn.mnemonic.startswith(("push", "pop")) else "ds"
        regs = dict(zip(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"),
                        cpu.read("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")))
        choice = None
        for m in mems:
            segment = _SEG_NAMES.get(m.segment) or ("ss" if m.base in (cx.X86_REG_ESP, cx.X86_REG_EBP) else "ds")
            offset = m.disp
            if m.base:
                offset += regs.get(insn.reg_name(m.base), 0)
            if m.index:
                offset += regs.get(insn.reg_name(m.index), 0) * m.scale
            d = self._descriptor(cpu[segment])
            if d is not None and (d.base + offset) & FLAT == address:
                return segment
            choice = choice or segment
        return choice

    def _descriptor(self, sel):
        """The descriptor a selector names, as the CPU loaded it (None: null or unreadable)."""
        cpu = self.cpu
        if (sel & ~3) == 0:
            return None
        _, table, limit, _ = cpu["ldtr"] if sel & 4 else cpu["gdtr"]
        index = sel & ~7
        if index + 7 > limit:
            return None
        try:
            return decode_segment(cpu.memory.read(table + index, 8))
        except ValueError:
            return None

    # ---- after the run stopped -----------------------------------------------------
    def take(self):
        """The violation the last run stopped for (its store undone), or None."""
        v, self.violation = self.violation, None
        if isinstance(v, Exception):            # the platform's own failure: stop, as a handler's does
            self.cpu.stop(f"the segment-limit check failed: {type(v).__name__}: {v}")
            raise v
        if v is not None and v.old is not None:          # physical: drops translated code too
            self.cpu.memory.write(self.cpu.translate_linear(v.address), v.old)
        return v


def _decode(table, limit, least):
    """(bases, limits) of every entry for the C filter, and the merged ranges past the
    limits of the segments within the GDT's limit of DPL >= least."""
    bases, limits, ranges = [], [], []
    for i in range(len(table) // 8):
        d = decode_segment(table[8 * i:8 * i + 8])
        segment = d.s and d.present
        down = segment and _expand_down(d)
        bases.append(d.base if segment else 0)
        limits.append(0 if down else d.limit if segment else FLAT)   # expand-down: always decoded
        if 8 * i + 7 > limit:
            continue                        # not loadable now: no range of its own
        if down and d.dpl >= least:         # valid offsets lie *above* its limit
            ranges.append((d.base, min(FLAT, d.base + d.limit)))
        elif segment and d.dpl >= least and d.limit < FLAT and d.base + d.limit < FLAT:
            ranges.append((max(d.base, d.base + d.limit + 1 - STRADDLE), FLAT))
            if d.base:                      # an offset past the limit may wrap below the base
                ranges.append((0, d.base - 1))
    return bases, limits, _merge(ranges)


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
