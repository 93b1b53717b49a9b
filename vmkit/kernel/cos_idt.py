"""Delivery through the displaced COS's own IDT, checked as the CPU checks a real one.

The COS's IDTR is virtual (its `lidt` traps and is emulated, traps.py): to give
the COS an interrupt or one of its faults, the kernel reads the gate from the
COS's IDT and pushes the frame on the COS's stack itself, in Python, where no
segment-limit check of the platform sees it. So the kernel checks what the CPU
checks on delivery (hw/delivery.py does the same for a real IDT) and one thing
more: **the gate must lie in the COS's memory**, at or below its segment limit.
A COS that points its IDT past the limit (into the kernel's IDT, code or stacks,
or a VM's memory) would otherwise have the kernel take the kernel's bytes for a
COS gate and send the COS to whatever offset they hold.

Why a fault, and which: on a real CPU the IDT is linear memory, read with no
segment, and the COS once ran flat at CPL 0. Displaced, its machine ends at its
limit, as a PC's memory ends where its RAM does; everything past it belongs to
someone else. An IDT entry there is as unusable as one past the IDT's limit, so
it is treated as one: #GP(vector·8 + 2 + EXT), the error code the CPU gives for
an entry past the IDTR limit. In the CPU's order (Intel SDM vol. 3, 6.12.1 and
`INT n`'s pseudo-code):

  entry past the IDTR limit              #GP(vector·8 + 2 + EXT)
  entry past the COS's memory            #GP(vector·8 + 2 + EXT), and a kernel.cos_limit event
  not a 32-bit interrupt or trap gate    #GP(vector·8 + 2 + EXT)
  not present                            #NP(vector·8 + 2 + EXT)
  selector not the COS's code segment    #GP(selector + EXT)   (as its iretd's CS, traps.py)
  handler offset past its CS limit       #GP(EXT)

EXT is 1 for an external interrupt (an IRQ the kernel forwards). The fault is
then delivered the same way; a failure delivering it becomes a double fault
(#DF(0)); a failing double fault is a triple fault, which shuts a CPU down: the
kernel stops the COS only (`shutdown`: its virtual IF cleared, the kernel idles
on its frame for good, as a CPU in shutdown waits for a reset). The kernel and
the VMs go on. Pushes that would pass the COS's stack limit raise StackPastLimit
before anything changes (frame.py); while a fault of the delivery is being
delivered, that too is the end of the COS.
"""
import functools
import struct

from vmkit.hw.x86 import DF, EFLAGS_IF, GATE_INT32, GATE_TRAP32, GP, NP, decode_gate, segment_limit
from . import layout
from .contain import what_is_at
from .frame import StackPastLimit

ENTRY = 8
_gate = functools.lru_cache(maxsize=256)(decode_gate)   # the COS's few gates, each decoded once
# the COS's code and data descriptors (COS_CODE_SEL, COS_DATA_SEL: adjacent in the kernel's
# GDT), read together: the gate's checks need both limits (contain.cos_code_limit, cos_limit)
_COS_SEGMENTS = struct.Struct("<4I")
assert layout.COS_DATA_SEL == layout.COS_CODE_SEL + 8


class GateFault(Exception):
    """The COS's gate for a vector cannot be used: the CPU would raise this fault instead."""
    def __init__(self, vector, error, why):
        super().__init__(why)
        self.vector, self.error, self.why = vector, error, why


def gate(kernel, vector, ext, eip=0):
    """The COS's gate for `vector`, checked (GateFault if the CPU would refuse it)."""
    v, bad, memory = kernel.vcpu, vector * 8 + 2 + ext, kernel.memory
    if vector * 8 + ENTRY - 1 > (idt_limit := v.idt_limit):
        raise GateFault(GP, bad, f"vector {vector:#x} beyond its IDT limit {idt_limit:#x}")
    code_lo, code_hi, data_lo, data_hi = _COS_SEGMENTS.unpack_from(   # (the kernel's GDT: in memory)
        memory._view, kernel.base + layout.GDT + layout.COS_CODE_SEL)
    entry, limit = v.idt_base + vector * 8, segment_limit(data_lo, data_hi)
    if entry + ENTRY - 1 > limit:
        what = what_is_at(kernel, entry) if entry < memory.size else "no memory"
        kernel.trace.emit("kernel.cos_limit", address=entry, size=ENTRY, eip=eip,
                          insn=f"gate {vector:#x}", what=what, limit=limit)
        raise GateFault(GP, bad, f"its gate {vector:#x} at {entry:#x} lies past its memory "
                                 f"(limit {limit:#x}): {what}")
    view = memory._view                          # (the entry lies below the COS's limit: in memory)
    g = _gate(bytes(view[entry:entry + ENTRY]) if entry + ENTRY <= len(view) else memory.read(entry, ENTRY))
    if g.type not in (GATE_INT32, GATE_TRAP32):
        raise GateFault(GP, bad, f"its IDT entry {vector:#x} has type {g.type:#x}, "
                                 f"not a 32-bit interrupt or trap gate")
    if not g.present:
        raise GateFault(NP, bad, f"its IDT entry {vector:#x} is not present")
    if g.selector & ~3 != layout.COS_CODE_SEL:
        raise GateFault(GP, (g.selector & 0xFFFC) | ext,
                        f"its gate {vector:#x} names selector {g.selector:#x}, not its code segment")
    if g.offset > (end := segment_limit(code_lo, code_hi)):
        raise GateFault(GP, ext, f"its gate {vector:#x} leads to {g.offset:#x}, past its code "
                                 f"segment's limit {end:#x}")
    return g


def deliver(kernel, frame, vector, error=None, external=False):
    """Give the COS `vector` through its own IDT: the frame pushed on its stack, EIP
    its handler's, its virtual IF cleared by an interrupt gate. A gate the CPU would
    refuse becomes that fault, then a double fault, then the COS's shutdown (module
    doc). Returns the vector delivered, or None if the COS was shut down."""
    kind, g, failed = ("irq" if external else "fault"), None, False
    for _ in range(3):
        try:
            g = gate(kernel, vector, 1 if kind == "irq" else 0, frame.eip)
            break
        except GateFault as f:
            failed = True
            kernel.trace.emit("kernel.cos_gate", vector=vector, fault=f.vector, error=f.error, why=f.why)
            if vector == DF and kind != "irq":   # the double fault itself: no way left
                break
            vector, kind, error = (DF, "fault", 0) if kind == "nested" else (f.vector, "nested", f.error)
    if g is None:
        shutdown(kernel, frame, f"a triple fault: its IDT cannot take vector {vector:#x}")
        return None
    try:
        frame.check_stack(below=16 if error is not None else 12)   # all or nothing
    except StackPastLimit:
        if failed:                               # a fault of the delivery could not be delivered
            shutdown(kernel, frame, f"a triple fault: its stack cannot take vector {vector:#x}")
            return None
        raise
    v = kernel.vcpu
    flags = (frame.eflags & ~EFLAGS_IF) | (EFLAGS_IF if v.vif else 0)
    if error is None:                            # EFLAGS, CS, EIP (and the error code): the
        frame.push_words(flags, frame.cs, frame.eip)          # CPU's pushes, in its order
    else:
        frame.push_words(flags, frame.cs, frame.eip, error)
    frame.eip = g.offset
    if g.type == GATE_INT32:                     # an interrupt gate clears IF; a trap gate does not
        v.vif = 0
    v.injected += 1
    kernel.trace.emit("kernel.inject", vector=vector, handler=g.offset)
    return vector


def shutdown(kernel, frame, why):
    """The COS's virtual CPU shuts down: it never runs again (nothing the kernel injects
    reaches it, its IF cleared), the kernel idles on its frame. CPU 0 goes on."""
    kernel.vcpu.vif = 0
    kernel.trace.emit("kernel.cos_shutdown", eip=frame.eip, why=why)
    kernel.go_away(frame, "idle")
