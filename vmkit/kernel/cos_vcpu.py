"""The displaced COS's virtual CPU, kept in kernel memory.

At CPL 1 the COS's cli/sti change nothing real (they trap), and its
pushfd/popfd/iretd would silently keep or drop IF without trapping (x86 is
not classically virtualizable), so the kernel patches those three to int3
at takeover. Either way the kernel emulates them on this virtual state:
the COS's own IF, IDTR and GDTR, and the interrupts waiting for it
(with its virtual PIC's registers, vpic.py).
"""

from vmkit.hw.x86 import EFLAGS_IF
from .words import Words

FIELDS = ("vif", "idt_base", "idt_limit", "gdt_base", "gdt_limit", "pending", "traps", "injected",
          "in_service",        # lines injected, not yet acknowledged (its virtual ISR)
          "imr",               # lines its virtual PIC masks (OCW1; master 0-7, slave 8-15): vpic.py
          "icw")               # initialisation words its virtual PIC still expects (vpic.py)


class CosVcpu(Words):
    """(A VM's virtual CPU has the same layout and bitmaps: vmm.py.)"""
    FIELDS = FIELDS
    __slots__ = ()

    def delivered(self, line):
        """Line `line` was injected: in service (its virtual ISR) until an EOI."""
        self.in_service |= 1 << line

    def eoi(self):
        """An EOI to its virtual master PIC: the lowest line in service is done.
        Returns that line, or None when none was in service."""
        isr = self.in_service
        if not isr:
            return None
        line = (isr & -isr).bit_length() - 1
        self.in_service = isr & ~(1 << line)
        return line


def emulate_if(mnemonic, vcpu, frame):
    """Emulate cli, sti, pushfd or popfd of the COS on its virtual IF (exercise 02b).

    The real IF stays set while the COS runs, so the kernel keeps getting
    interrupts; only `vcpu.vif` says whether the COS wants them."""
    if mnemonic == "cli":
        vcpu.vif = 0
    elif mnemonic == "sti":
        vcpu.vif = 1
    elif mnemonic == "pushfd":
        flags = frame.eflags & ~EFLAGS_IF
        frame.push(flags | (EFLAGS_IF if vcpu.vif else 0))
    elif mnemonic == "popfd":
        flags = frame.pop()
        vcpu.vif = 1 if flags & EFLAGS_IF else 0
        frame.eflags = (flags & ~0x3000) | EFLAGS_IF      # IOPL stays 0, real IF stays on
    else:
        raise ValueError(f"emulate_if does not emulate {mnemonic!r}")
