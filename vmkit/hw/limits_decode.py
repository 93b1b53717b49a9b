"""The slow path of the segment-limit checks: which segment an access went through, and
is it past that segment's limit (limits.py says what is checked, and where).

What the C filter (limits.c: `vmkit_limit`) cannot let through is decoded here
(capstone): the segment the instruction at CS:EIP uses (its prefix, else SS for an
ESP/EBP base or an implicit stack access, ES for a string destination, else DS), and
its limit decides. The CPU's own reads of the GDT, LDT, IDT or TSS (a segment load,
an iretd, a delivery) go through no segment: no limit bounds them.

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
in C (limits.c: `gdt_now`), so a segment the load loads is judged by the
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
"""
import capstone.x86 as cx
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from unicorn import UC_MEM_WRITE

from .x86 import decode_segment, GP, SS_FAULT

FLAT = 0xFFFFFFFF
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")
# implicit stack accesses: the instruction has no memory operand for them
_STACK = {"push", "pop", "pushal", "popal", "pushad", "popad", "pushfd", "popfd", "pushf", "popf",
          "call", "ret", "enter", "leave", "iretd", "iret"}
disasm = Cs(CS_ARCH_X86, CS_MODE_32)
disasm.detail = True
_SEG_NAMES = {getattr(cx, f"X86_REG_{r.upper()}"): r for r in SEGMENT_REGS}


class Violation:
    """An access past a limit, found inside the hook; delivered once the run stopped."""
    def __init__(self, vector, eip, address, size, segment, limit, old, count):
        self.vector, self.eip, self.address, self.size = vector, eip, address, size
        self.segment, self.limit, self.old, self.count = segment, limit, old, count

    @property
    def why(self):
        return (f"{self.size}-byte access at {self.address:#x} past the limit {self.limit:#x} "
                f"of {self.segment.upper()}")


class SlowPath:
    """A part of SegmentLimits (limits.py), as delivery.py is of the CPU: the accesses the C
    filter hands to Python, decoded. Uses its `cpu`, `violation`, `decoded` and `_held`."""

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
            if inside(d, offset, size):
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
        insn = next(disasm.disasm(code, eip), None)
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
            held = self._held()             # the filter holds (as limits.c does)
            if sel & 4 or held is None or held[:2] == (table, limit) or index + 8 > len(held[2]):
                return None
            return decode_segment(held[2][index:index + 8])
        try:
            return decode_segment(cpu.memory.read(table + index, 8))
        except ValueError:
            return None


def holds(d, cpl):
    """Can CS hold this descriptor at this CPL (a non-conforming code segment's DPL is the
    CPL, a conforming one's at most)? If not, the GDT is not the one CS was loaded from."""
    if d is None or not (d.s and d.type & 8):
        return False
    return d.dpl <= cpl if d.type & 4 else d.dpl == cpl


def expand_down(d):
    """A data segment (type bit 3 clear) with the expand-down bit (2) set."""
    return not d.type & 8 and bool(d.type & 4)


def inside(d, offset, size):
    """Is [offset, offset + size) inside the segment's limit?"""
    last = offset + size - 1
    if expand_down(d):                      # (limit, 4 GiB or 64 KiB with B clear]
        return offset > d.limit and last <= (FLAT if d.db else 0xFFFF)
    return last <= d.limit

