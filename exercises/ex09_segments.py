"""Exercise 09 — the segments of a VM's address space (claims 21-22, 41-42).

A VM world's linear address space (notebook 09 draws it from its page
directory), from address 0 up:

    0 .. guest_end               the guest's memory (user pages)
    vmm_base .. vmm_end          the VMM region: its GDT, IDT, entry stubs and
                                 virtual CPU (supervisor pages)
    kernel_base .. kernel_end    the kernel: code, tables, data (supervisor
                                 pages; claim 21: mapped beside the VMM)

`space` has those numbers as attributes (linear addresses; each *_end is the
first byte past). Return a segment's descriptor fields as (base, limit, g):

    base    the linear address of the segment's offset 0
    limit   the descriptor's 20-bit limit field
    g       its granularity bit: 0, the limit counts bytes (the last offset
            is `limit`); 1, it counts 4 KiB pages (the last offset is
            limit * 4096 + 4095)

guest_segment(space): the guest's code and data segments (DPL 3). A guest's
addresses start at 0 in its memory, and its segments stop where its memory
stops, below the VMM ("truncated"): its first byte past must be a #GP by the
limit, not something the page tables decide.

vmm_segment(space): the VMM's code and data segments (DPL 0). Claim 22: set
longer than the minimum needed to hold the VMM alone, so that it reaches the
kernel's end: the VMM then jumps into the kernel's code and reads its data
with the same CS and DS, no segment register loaded.

The grader writes your fields into a VM's GDT as descriptors and runs it: a
guest reads its own last byte, then the byte past its memory; the VMM is
entered from the guest and calls the kernel.
"""


def guest_segment(space):
    """(base, limit, g) of the guest's code and data segments."""
    raise NotImplementedError("not attempted: write this (see the docstring)")


def vmm_segment(space):
    """(base, limit, g) of the VMM's code and data segments."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
