"""Exercise 06 — the world switch's load, in x86 (claims 14-15, 35-36, 45).

The kernel switches worlds with x86 in its image (vmkit/kernel/switch.py):
it stores the running world's state in its save area (sgdt, sidt, sldt,
str, mov from CR3 and the segment registers), disables exceptions (cli),
checks the next world's save area (CRC-32), and then runs YOUR code to
LOAD the next world into the CPU. The kernel's Python then reads every
register back, and the stub's popad/iretd start the world with its EFLAGS
(IF set again).

Write `load_sequence()`: it returns x86 source (Intel syntax, `;` comments),
which is assembled into the kernel image at the switch. When it runs:

- EDI = the next world's save area (do not change EDI or ESP); EAX, EBX,
  ECX, EDX, ESI are yours; IF is clear and must stay clear;
- paging is off (the kernel is identity-mapped; it turns paging on after
  your code if the CR3 you loaded names a page directory);
- the save area's operands are named (offsets from EDI), laid out the way the
  instructions take them:
      AREA_GDTR   6 bytes: u16 limit, u32 base    -> lgdt [edi + AREA_GDTR]
      AREA_IDTR   6 bytes: u16 limit, u32 base    -> lidt
      AREA_LDTR   u16 selector                    -> lldt word ptr [...]
      AREA_TR     u16 selector                    -> ltr word ptr [...]
      AREA_DS AREA_ES AREA_FS AREA_GS   u32 selectors -> via a register: mov ds, eax
      AREA_CR3    u32                             -> via a register: mov cr3, eax
  (the general registers, EIP, CS, EFLAGS, ESP and SS go into the trap frame:
  the kernel does that after your code).

Order matters where the CPU looks something up: lldt, ltr and the segment
loads find their descriptors in the GDT that GDTR names *then*. The CPU
checks each one (a selector that names no LDT, no available TSS, no data
segment is a fault); a world whose load faults, or whose registers do not
read back as its save area, is refused and stopped. Every [edi + ...] is read
through DS: load DS last (the COS's ends below the kernel; the kernel stores
the selectors you loaded into the frame and takes its own DS back). The kernel
loads its own IDT before your code: load the next world's IDT last (through SS,
`lidt ss:[edi + AREA_IDTR]`, once DS is the world's), so a fault in your load
still enters the kernel (a VM's IDT leads to its VMM's stubs, which need paging). The grader gives one VM
its own GDT (with an LDT in it) and its own IDT, so every item differs
between the worlds.
"""


def load_sequence():
    """x86 that loads the next world's claim-15 state from the save area at EDI."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
