"""Exercise 02b — the displaced COS's interrupt flag, virtualised (claim 1).

After the takeover the COS runs at CPL 1. Its `cli` and `sti` trap (#GP) to
the kernel; its `pushfd` and `popfd` would not trap at all (x86 lets them
run at CPL 1, silently ignoring IF), so the kernel patched them to int3 at
takeover, and they trap too. The kernel calls this function for each of the
four. The COS must see its own interrupt flag, `vcpu.vif` (1 = it wants
interrupts), never the real one: the real IF stays set while the COS runs,
so that the kernel keeps receiving every interrupt.

    frame.eflags      the EFLAGS the COS will resume with (real IF in it: keep it set)
    frame.push(v)     push a 32-bit value on the COS's stack
    frame.pop()       pop one
    vcpu.vif          the COS's virtual IF (0 or 1)
    EFLAGS_IF         the IF bit (0x200)

- cli: the COS no longer wants interrupts.   - sti: it does again.
- pushfd: push the COS's flags as the COS should see them: IF from vcpu.vif.
- popfd: pop; the popped IF becomes vcpu.vif; frame.eflags takes the popped
  flags but with the real IF set and IOPL 0 (bits 12-13 clear).
(The kernel moves EIP past the instruction and delivers interrupts the COS
was waiting for once vif is 1.)
"""
from vmkit.hw.x86 import EFLAGS_IF


def emulate_if(mnemonic, vcpu, frame):
    """Emulate one of "cli", "sti", "pushfd", "popfd" on the COS's virtual IF."""
    ### BEGIN SOLUTION
    if mnemonic == "cli":
        vcpu.vif = 0
    elif mnemonic == "sti":
        vcpu.vif = 1
    elif mnemonic == "pushfd":
        frame.push((frame.eflags & ~EFLAGS_IF) | (EFLAGS_IF if vcpu.vif else 0))
    elif mnemonic == "popfd":
        flags = frame.pop()
        vcpu.vif = 1 if flags & EFLAGS_IF else 0
        frame.eflags = (flags & ~0x3000) | EFLAGS_IF
    ### END SOLUTION
