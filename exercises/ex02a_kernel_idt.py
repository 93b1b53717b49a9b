"""Exercise 02a — build the vmkernel's IDT (claim 4).

The loading module must make "forwarding of interrupts and faults generated
by the processor and by predetermined ones of the system resources ... point
into a memory address space allocated to and controlled by the kernel". On
x86 that is an IDT whose 256 gates all lead into the kernel's code: here, to
the kernel's entry stubs, one per vector.

Each gate is 8 bytes (see exercise 00): offset = stubs[v], the kernel's code
selector, type 0xE (a 32-bit interrupt gate: IF is cleared on entry, so the
kernel is not interrupted while it decides), present. Its DPL says who may
raise it with `int n`: 0 (only the kernel) for every vector except those in
`cos_vectors`, which the displaced COS raises on purpose from CPL 1 (int3,
the one-byte trap its patched pushfd/popfd/iretd became, and int 0x90, its
requests for resources): DPL 1 for those.

`vmkit.hw.x86.encode_gate(offset, selector, type, dpl, present)` packs one gate.
"""
from vmkit.hw.x86 import encode_gate


def build_kernel_idt(stubs, selector, cos_vectors):
    """Return the 2048 bytes of the kernel's IDT (256 gates)."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
