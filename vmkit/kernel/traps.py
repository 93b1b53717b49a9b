"""The COS's privileged instructions, trapped at CPL 1 and emulated or refused.

cli, sti, hlt, lidt, lgdt, in and out raise #GP at CPL 1 (for in/out: when
the kernel TSS's I/O bitmap does not grant the port). The kernel decodes the
instruction at the faulting EIP and acts on the COS's virtual CPU; the real
IDTR, GDTR and IF are never touched. pushfd/popfd/iretd were patched to
int3 at takeover and arrive through `patched`.

Whatever the COS hands the kernel to load is contained, because the stub's
iretd loads it at CPL 0, where the CPU checks less than it would at CPL 1:
a CS the COS's patched iretd pops is its own code segment, at CPL 1 (the
RPL 0 it believes in is raised to 1); any other selector is refused as
the CPU refuses an iretd to a segment it may not use, with #GP(selector)
reflected to the COS (and a kernel.refused event). EFLAGS it pops never
bring VM (the stub's iretd would enter virtual-8086 mode), NT (its next
iretd would be a task return through the kernel's TSS), VIF/VIP or RF;
IOPL stays 0 (its cli/sti/in/out would stop trapping).
"""
from vmkit.hw.x86 import (EFLAGS_IF, EFLAGS_IOPL, EFLAGS_NT, EFLAGS_RF, EFLAGS_VIF, EFLAGS_VIP,
                          EFLAGS_VM, GP)
from . import decoder, layout, vpic

PIC_PORTS = vpic.PORTS              # the COS's PIC ports: its virtual PIC's (vpic.py)



def decode(kernel, eip):
    return decoder.decode(kernel.memory, eip)     # the bytes are read again each time


def _effective_address(frame, op):
    mem = op.mem
    value = lambda reg: getattr(frame, decoder.reg_name(reg)) if reg else 0
    return (value(mem.base) + value(mem.index) * mem.scale + mem.disp) & 0xFFFFFFFF


def privileged(kernel, frame):
    """Emulate or refuse the instruction behind a #GP; False if it is not ours to handle."""
    eip = frame.eip
    insn = decoder.decode(kernel.memory, eip)
    if insn is None:
        return False
    name, trace = insn.mnemonic, kernel.trace
    unmasked = False
    if name == "out" or name == "in":               # (first: the COS's EOIs and masks are most)
        unmasked = _port_io(kernel, frame, insn)
    elif name == "cli" or name == "sti":
        kernel.emulate_if(name, kernel.vcpu, frame)
        trace.emit("kernel.emulate", insn=name, cos_vif=kernel.vcpu.vif)
    elif name == "hlt":
        trace.emit("kernel.emulate", insn=name, cos_vif=kernel.vcpu.vif)
    elif name in ("lidt", "lgdt"):
        v = kernel.vcpu
        address = _effective_address(frame, insn.operands[0])
        limit = kernel.memory.read_u16(address)
        base = kernel.memory.read_u32(address + 2)
        which = "idt" if name == "lidt" else "gdt"
        setattr(v, f"{which}_base", base)
        setattr(v, f"{which}_limit", limit)
        trace.emit("kernel.emulate", insn=name, virtual_base=base, virtual_limit=limit)
    elif name == "mov" and not any(r in insn.op_str for r in ("cr", "dr")):
        return False                                # a segment load the CPU refused: the COS's own #GP
    elif name in ("ltr", "lldt", "mov", "invlpg", "wbinvd", "clts"):
        trace.emit("kernel.refused", insn=f"{name} {insn.op_str}", eip=eip)
    else:
        return False
    frame.eip = eip + insn.size
    if name == "hlt":
        if kernel.cos_wants_interrupt():
            kernel.deliver_pending(frame)
        else:
            kernel.go_away(frame, "idle")
            if kernel.worlds.vm_tick:                # an idle COS yields CPU 0 now, not at its next
                kernel.worlds.cos_would_idle(frame)  # tick: a VM's tick starts with its turn (worlds.py).
                                                     # At the PIT's tick (the lessons') a turn begun
                                                     # mid-period would lose a part tick: the idle
                                                     # stub's next tick switches (Kernel.resume)
    elif name == "sti" or unmasked:                 # (past the instruction: the frame it
        kernel.deliver_pending(frame)                # pushes returns to the next one)
    return True


def _port_io(kernel, frame, insn):
    """True if the COS unmasked a line at its virtual PIC (something may be waiting)."""
    out = insn.mnemonic == "out"
    port, size = insn.io                            # (decoded once: decoder.Decoded)
    if port is None:
        port = frame.edx & 0xFFFF
    if port in vpic.PORTS:
        # the PIC is the kernel's now; the COS's EOIs and masks go to its virtual PIC
        changed = False
        if out:
            value = frame.eax & 0xFF
            changed = vpic.write(kernel, port, value)
        else:
            value = vpic.read(kernel, port)
            frame.eax = (frame.eax & ~0xFF) | value
        kernel.trace.emit("kernel.emulate", insn=f"{insn.mnemonic} {port:#x}",
                          what="virtual PIC", value=value)
        return changed
    mask = (1 << (8 * size)) - 1
    front, offset = kernel.shared_at(port)
    if front is not None:                           # a shared device: the kernel serves the COS
        if out:
            front.cos_write(offset, frame.eax & mask)
        else:
            frame.eax = (frame.eax & ~mask) | (front.cos_read(offset) & mask)
        kernel.trace.emit("kernel.emulate", insn=f"{insn.mnemonic} {port:#x}", what="shared device")
        return False
    kernel.trace.emit("kernel.refused", insn=f"{insn.mnemonic} {port:#x}", eip=frame.eip)
    if not out:
        frame.eax = (frame.eax & ~mask) | mask          # nothing there, as far as the COS can tell
    return False


NEVER_FROM_COS = EFLAGS_VM | EFLAGS_NT | EFLAGS_VIF | EFLAGS_VIP | EFLAGS_RF
COS_CS = (layout.COS_CODE_SEL, layout.COS_CODE_SEL | layout.COS_RPL)   # as it believes, as it is


def patched(kernel, frame, mnemonic):
    """pushfd / popfd / iretd of the COS, replaced by int3 (EIP is already past it)."""
    v = kernel.vcpu
    if mnemonic == "iretd":
        if not _iretd(kernel, frame):
            return
    else:
        kernel.emulate_if(mnemonic, v, frame)        # exercise 02b: IF, and IOPL kept 0
        if mnemonic == "popfd":
            frame.eflags &= ~NEVER_FROM_COS          # what exercise 02b does not ask for
    kernel.trace.emit("kernel.emulate", insn=mnemonic, cos_vif=v.vif)
    if v.vif:
        kernel.deliver_pending(frame)


def _iretd(kernel, frame):
    """Pop EIP, CS, EFLAGS; CS must be the COS's code segment, run at CPL 1.
    False (and #GP(CS) reflected, nothing popped) for any other selector."""
    at, esp = frame.eip - 1, frame.esp
    eip, cs, eflags = frame.pop_words(3)                 # all three checked before any is popped
    cs &= 0xFFFF
    if cs not in COS_CS:
        frame.eip, frame.esp = at, esp                   # a fault: at the iretd, stack untouched
        kernel.trace.emit("kernel.refused", insn=f"iretd to cs {cs:#x}", eip=at)
        frame.error = cs & ~3
        kernel.reflect(frame, GP)
        return False
    frame.eip, frame.cs = eip, layout.COS_CODE_SEL | layout.COS_RPL   # never a ring below 1
    kernel.vcpu.vif = 1 if eflags & EFLAGS_IF else 0
    frame.eflags = (eflags & ~(NEVER_FROM_COS | EFLAGS_IOPL)) | EFLAGS_IF
    return True
