"""Segment limits while paging is on, and on memory the machine lacks: checked where the
access also faults (limits.py says what is checked, and where).

Paging on: no hook. Measured (Unicorn 2.1.4): a memory hook is matched
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
leaves CR2 as it was for a #GP). A fetch that page-faults is checked the
same way, against CS's limit.
"""
from .limits_decode import FLAT, SEGMENT_REGS, Violation, disasm, expand_down, holds, inside
from .x86 import GP, SS_FAULT


class PagingChecks:
    """A part of SegmentLimits (limits.py): the checks made where an access faults. Uses its
    `cpu` and the slow path's `_access` and `_descriptor` (limits_decode.py)."""

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
        if not holds(loaded["cs"], values["cs"] & 3):
            return None                     # CS came from another GDT (limits.c: cs_described)
        if all(d is None or (d.base == 0 and d.limit == FLAT and not expand_down(d)) for d in loaded.values()):
            return None
        cr2, eip = cpu.read("cr2", "eip")
        cs = loaded["cs"]
        if cs is not None and not inside(cs, eip, 1):
            return Violation(GP, eip, (cs.base + eip) & FLAT, 1, "cs", cs.limit, None, cpu.counter.count)
        if cs is not None and self._fetch_crossed(cs, eip, cr2):
            return Violation(GP, eip, cr2, 1, "cs", cs.limit, None, cpu.counter.count)
        access = self._access(eip, cr2)
        if access is None:
            return None
        segment, d, offset, size = access
        if inside(d, offset, size):
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
        if inside(d, offset, size):
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
        if not 0 < (cr2 - at) & FLAT < 15 or inside(cs, offset, 1):
            return False
        try:
            head = self.cpu.read_linear(at, (cr2 - at) & FLAT)
        except ValueError:
            return False
        insn = next(disasm.disasm(head, eip), None)
        return insn is None or insn.size > len(head)
