"""Which bytes of a guest are code it can execute: recursive-descent disassembly.

A linear sweep takes every byte for an instruction, so data that happens to
decode as iretd (0xCF) would be patched and the guest would read back 0xCC.
Recursive descent starts where execution can start (the guest's entry point;
each handler its IDT names, when it executes lidt) and follows control flow:
the next instruction, and the targets of direct jumps, calls and conditional
branches (jcc, loop, jecxz). A path ends at ret, iretd, an unconditional jmp,
ud2, a byte that does not decode, or the end of the guest's memory.

What it cannot see: targets computed at run time (an indirect jmp or call
through a register or memory: jump tables, function pointers; a return
address pushed by hand), code the guest writes or copies at run time, and a
handler put into its IDT after its last lidt. An iretd reached only so is
not patched and runs as the CPU's own iretd at CPL 3: it returns (a frame the
VMM built holds the guest's real CS), but at CPL 3 it cannot change IF, so
the guest's virtual IF stays as the interrupt gate left it, clear: that VM
gets no more virtual interrupts (it stops at its next hlt) until it executes
sti. No other world is affected.
"""
from capstone import Cs, CS_ARCH_X86, CS_MODE_32, CS_GRP_CALL, CS_GRP_JUMP
from capstone.x86 import X86_OP_IMM

ENDS = frozenset({"jmp", "ljmp", "ret", "retf", "iret", "iretd", "ud2"})
CHUNK = 64                      # bytes decoded at a time: capstone decodes a whole buffer at once
MAX_INSN = 15
_cs = Cs(CS_ARCH_X86, CS_MODE_32)
_cs.detail = True


def _target(insn):
    """The address a direct jump, call or branch goes to, else None."""
    if not (insn.group(CS_GRP_JUMP) or insn.group(CS_GRP_CALL)):
        return None
    ops = insn.operands
    if ops and all(op.type == X86_OP_IMM for op in ops):
        return ops[-1].imm & 0xFFFFFFFF          # (a far ljmp/lcall: selector, offset)
    return None                                  # through a register or memory: not seen


def reachable(code, base, starts, seen):
    """Decode, from each address in `starts`, every instruction control can
    reach inside `code` (the guest's memory, loaded at `base`). `seen` holds
    the addresses already decoded (updated): they are not decoded again.
    Returns {address: mnemonic} of the instructions found now."""
    found, todo, end = {}, list(starts), base + len(code)
    while todo:
        at = todo.pop()
        while base <= at < end and at not in seen:
            last = None
            for insn in _cs.disasm(code[at - base:at - base + CHUNK], at):
                if insn.address in seen:
                    last = None
                    break
                seen.add(insn.address)
                found[insn.address] = insn.mnemonic
                target = _target(insn)
                if target is not None:
                    todo.append(target)
                last = insn
                if insn.mnemonic in ENDS:
                    break
            if last is None or last.mnemonic in ENDS:
                break                            # an end, known code, or bytes that do not decode
            at = last.address + last.size
    return found
