"""The displaced COS, contained: its segments end below the kernel.

The loader gives the COS's code and data descriptors (DPL 1) a limit just
below the kernel's block, and everything from there up (the kernel, the VMs'
memory, their page tables) is past it. Paging could not do this (its
user/supervisor bit counts CPL 1 as supervisor); a segment limit does, and
the platform enforces it (hw/limits.py): a COS access past its limit is a
#GP(0) at that instruction, with nothing stored, into the kernel.

The kernel reports it (a `kernel.cos_limit` event naming the address and
what lies there) and skips the instruction: the COS goes on, its store
undone, a load leaving its register as it was — as a write to ROM goes
nowhere. (Reflecting the #GP to the COS's own handler would stop the COS for
good: its fault handler halts.) A jump past its limit is different: the CPU
refused to fetch the instruction there (the kernel's or a VM's bytes, not the
COS's), so there is nothing of the COS's to skip; that #GP(0) is reflected to
the COS, as a real CPU would deliver it (`fetched_past_limit`).

Devices the COS programs through the kernel (the shared SCSI controller and
NIC) are held to the same limit: every address and length the COS gives
them for DMA must lie inside its memory (`check_dma`), or the kernel refuses
the request (a `kernel.cos_dma` event, an error status to the COS). A bus
master checks no segment limit: without this, one SCSI read would put a
disk block over the kernel's IDT.
"""
import struct

from capstone.x86 import X86_OP_MEM

from vmkit.hw.x86 import segment_limit
from . import layout, traps

_DESCRIPTOR = struct.Struct("<II")              # a GDT descriptor's two words
PLACES = ((layout.IDT, layout.IDT + 256 * 8, "the kernel's IDT"),
          (layout.GDT, layout.GDT + 8 * 16, "the kernel's GDT"),
          (layout.TSS, layout.VM_TSS, "the kernel's TSS"),
          (layout.CODE, layout.DATA, "the kernel's code"))


def cos_limit(kernel):
    """The last offset the COS's data segment reaches, read from the kernel's GDT."""
    return _limit(kernel, layout.COS_DATA_SEL)


def _limit(kernel, selector):
    """The limit of the kernel GDT's descriptor `selector`, read where it lies (every
    COS trap asks: its two words in one read of the buffer, the kernel's block, not a
    decoded descriptor)."""
    return segment_limit(*_DESCRIPTOR.unpack_from(kernel.memory._view, kernel.base + layout.GDT + selector))


def what_is_at(kernel, address):
    if kernel.contains(address):
        offset = address - kernel.base
        return next((name for a, b, name in PLACES if a <= offset < b), "the kernel's memory")
    for w in kernel.worlds.all:
        if w.kind != "vm":
            continue
        base, size = w.region                   # its memory, its page tables, its VMM region
        if base <= address < base + size:
            return f"{w.name}'s memory"
        if base + size <= address < w.vmm_region:
            return f"{w.name}'s page tables"
        if w.vmm_region <= address < w.vmm_region + layout.VMM_SIZE:
            return f"{w.name}'s VMM region"
    return "memory past the COS's limit"


# first bytes of the privileged instructions the COS traps with all the time (cli, sti, hlt,
# in, out): no memory operand, so no decoding on that hot path. lidt/lgdt (0F 01) are
# decoded: their #GP at CPL 1 comes before the CPU reads the operand, so the limit check
# the CPU would make on it at CPL 0 is the kernel's to make before it emulates them
_PRIVILEGED = {0xFA, 0xFB, 0xF4, 0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF}


def cos_code_limit(kernel):
    """The last offset the COS's code segment reaches, read from the kernel's GDT."""
    return _limit(kernel, layout.COS_CODE_SEL)


def plainly_privileged(kernel, frame):
    """A #GP from the COS that neither fetched_past_limit nor past_limit takes, known from
    what they would read first: an error code (neither takes one), or EIP well inside the
    COS's code segment at one of the privileged instructions the COS traps with all the
    time (no memory operand). Every such #GP is traps.privileged's; any other goes through
    both checks (`Kernel._cos_trap`)."""
    if frame.error != 0:
        return True
    eip = frame.eip
    if eip > cos_code_limit(kernel) - 15:
        return False
    two = kernel.memory.read_u16(eip)
    return two & 0xFF in _PRIVILEGED or (two & 0xFF == 0x66 and two >> 8 in _PRIVILEGED)


def fetched_past_limit(kernel, frame):
    """A #GP(0) from the COS at an instruction that lies (in part) past its code segment's
    limit: the CPU refused to fetch it (a jump into the kernel or a VM's pages), so the
    bytes at EIP are not the COS's instruction, and neither past_limit nor the privileged
    instructions' emulation may decode and skip them. True (reported): the #GP is the
    COS's own, for its handler, as a real CPU would deliver it."""
    if frame.error != 0:
        return False
    limit = cos_code_limit(kernel)
    if frame.eip <= limit - 15:                 # (an instruction is at most 15 bytes long:
        return False                            # the hot path, cli/sti/hlt/in/out, decodes nothing)
    if frame.eip <= limit:
        insn = traps.decode(kernel, frame.eip)   # one that starts inside and ends past it
        if insn is None or frame.eip + insn.size - 1 <= limit:
            return False
    kernel.trace.emit("kernel.cos_limit", address=frame.eip, size=1, eip=frame.eip, insn="fetch",
                      what=what_is_at(kernel, max(frame.eip, limit + 1)), limit=limit)
    return True


def past_limit(kernel, frame):
    """A #GP from the COS: True (reported and skipped) if the instruction reaches past
    the COS's segment limit, False if the #GP is something else (traps.privileged's)."""
    if frame.error != 0:
        return False
    eip = frame.eip
    two = kernel.memory.read_u16(eip)              # (the first byte, and the one after a 0x66)
    if two & 0xFF in _PRIVILEGED or (two & 0xFF == 0x66 and two >> 8 in _PRIVILEGED):
        return False
    insn = traps.decode(kernel, eip)
    if insn is None:
        return False
    limit = cos_limit(kernel)
    for op in insn.operands:
        if op.type != X86_OP_MEM:
            continue
        address = traps._effective_address(frame, op)
        if address + op.size - 1 > limit:
            kernel.trace.emit("kernel.cos_limit", address=address, size=op.size, eip=frame.eip,
                              insn=f"{insn.mnemonic} {insn.op_str}", what=what_is_at(kernel, address),
                              limit=limit)
            frame.eip += insn.size
            return True
    return False


def stack_refused(kernel, frame, error, what):
    """A push or pop the kernel would do on the COS's stack (for `what`: an injected
    interrupt, a patched pushfd/popfd/iretd) reaches past the COS's limit: nothing
    is written, and a `kernel.cos_limit` event says where it would have landed."""
    kernel.trace.emit("kernel.cos_limit", address=error.address, size=error.size, eip=frame.eip,
                      insn=what, what=what_is_at(kernel, error.address), limit=error.limit)


class OutsideCOS(ValueError):
    """A buffer the COS gave a shared device does not lie inside the COS's memory."""


def check_dma(kernel, address, length, what):
    """Refuse (OutsideCOS, and a `kernel.cos_dma` event) a DMA range the COS gave
    that does not lie wholly at or below its segment limit."""
    limit = cos_limit(kernel)
    if length >= 0 and address + max(length, 1) - 1 <= limit:
        return
    where = what_is_at(kernel, address + max(length, 1) - 1 if address <= limit else address)
    kernel.trace.emit("kernel.cos_dma", what=what, address=address, length=length, into=where, limit=limit)
    raise OutsideCOS(f"{what} {address:#x}+{length:#x} reaches {where}, past the COS's memory (limit {limit:#x})")
