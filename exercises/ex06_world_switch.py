"""Exercise 06 — the world switch's loading step (claims 14-15, 35-36, 45).

The kernel switches worlds in its dispatcher (vmkit/kernel/switch.py): it
saves the current world's state into that world's save area in kernel
memory, disables exceptions, checks the next world's save area, and then
calls this function to LOAD the next world's state. Then the stub's
popad/iretd start the world and enable exceptions again.

`state` is the next world's save area as a dict {item: value} (switch.ITEMS):

    eax ecx edx ebx esp ebp esi edi  eip eflags cs ss     -> the trap FRAME
    ds es fs gs                                           -> the CPU directly
    gdtr.base gdtr.limit  idtr.base idtr.limit            -> the CPU directly
    ldtr.sel ldtr.base ldtr.limit ldtr.flags              -> the CPU directly
    tr.sel tr.base tr.limit tr.flags  cr3                 -> the CPU directly

- The frame items go into the trap frame on the kernel stack: `frame.eax = v`,
  ..., `frame.eip = v`, `frame.esp = v` (the world's stack pointer), and so on
  for every name in `FRAME_ITEMS`; the stub's popad and iretd put them in
  the registers.
- The segment registers: `cpu.write(ds=..., es=..., fs=..., gs=...)`.
- The descriptor tables are tuples (selector, base, limit, flags):
  `cpu["gdtr"] = (0, base, limit, 0)`, the same for "idtr";
  `cpu["ldtr"]` and `cpu["tr"]` take all four items from `state`.
- CR3: `cpu["cr3"] = state["cr3"]` (only when it differs: writing CR3
  flushes the CPU's translations).

The kernel reads every item back after your function returns; a world that
does not get exactly its save area is refused and stopped, with the names
of the items that differ.
"""
from vmkit.kernel.switch import FRAME_ITEMS, SEGMENTS


def load_state(frame, cpu, state):
    """Load the next world's `state` into the trap frame and the CPU."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
