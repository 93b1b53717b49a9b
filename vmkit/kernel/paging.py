"""A VM world's address space: one page directory per VM (isolation; claim 21).

Each VM world gets its own two-level page table (4 KiB pages, no PSE). The
guest sees its memory from linear 0, wherever its pages lie in host memory;
everything the kernel controls stays where it is (identity-mapped):

  0 .. size                   present, user, read/write   (the guest's memory: host
                              [base, base + size), so a guest linked at 0 runs unmodified)
  the kernel's block          present, supervisor only    (code, GDT, IDT, TSSs,
                              kernel stack, world blocks: claim 21, the kernel
                              mapped into the VMM's address space, out of CPL 3's reach;
                              identity: linear = physical)
  its CPU's mapping window    present, supervisor only    (kernel/mapcache.py: that CPU's
                              page table, shared into every address space on the CPU)
  its VMM region              present, supervisor only    (vmm/region.py: at VMM_BASE, just
                              below the kernel, and at its host address; `also`)
  everything else             not present                 (the COS, other VMs, the tables)

`build` takes the address space as a list of mappings (linear, host, size[, flags]):
the guest's memory is one, (0, base, size) user read/write; a caller adds more
(e.g. kernel-controlled pages, supervisor-only: flags WRITABLE) with one more
tuple. The tables live in kernel-controlled memory taken with the VM's memory
from the top of RAM, just above the VM's region (so they are never user pages).
The COS world keeps CR3 = 0 and paging off; a VM world's CR3 names its
directory, and the world switch sets CR0.PG from it (switch.py).

The kernel's memory staying identity-mapped is what keeps the platform's
interrupt delivery right: hw/delivery.py reads the IDT, GDT and TSS and
pushes the trap frame at the addresses the registers name as physical
addresses, which they are here (the kernel's block maps to itself). A
guest address is not physical any more: whatever takes one (the VMM's
reads of the guest's IDT and stack, its decode at EIP, a disk or network
buffer the guest names) translates it through VMM.host, which checks it
lies in the guest's memory.

Unicorn 2.1.4 facts we measured (this kit, vmkit/hw/cpu.py driving it):
  - CR0.PG and CR3 set from Python (reg_write) take effect at the next
    instruction; turning PG off again for the COS works the same way.
  - a CPL 3 write to a supervisor or not-present page reaches our
    UC_HOOK_INTR hook as vector 14 (#PF), not a UcError, with CR2 = the
    faulting linear address and the error code in the saved context
    (unicorn_quirks.read_exception): 7 = user|write|present (supervisor
    page), 6 = user|write|not present; the write does not happen.
  - writing CR3 flushes the TLB: a guest switched in after another sees
    only its own directory's permissions (tests/test_isolation.py).
  - Unicorn translates emu_start's `until` address (cpu.NO_ADDRESS, 0xFFFFFFFF)
    through the page tables at the start of every slice, with a user access:
    not present or supervisor-only, that raises a #PF that never reaches the
    hook (CR2 = 0xFFFFFFFE) but stays in Unicorn's exception record, so the
    next two faults become #DF and a silent stop (docs/machine.md). So
    the last page is mapped user read-only in every VM's directory (no RAM
    behind it: a guest that reads it gets the platform's #GP, and crashes).
  - a CPL 0 write (the stub, Python's memory.write) is not stopped: CR0.WP = 0,
    and Python's memory accesses are physical.
"""
import struct

from . import layout

PAGE = layout.PAGE
PRESENT, WRITABLE, USER = 1, 2, 4
USER_RW = WRITABLE | USER           # a mapping's default flags: the guest's memory
SPAN = 1 << 22                      # what one page table maps: 4 MiB
LAST_PAGE = (0xFFFFF000, 0x100000000)   # where emu_start's `until` lies (cpu.NO_ADDRESS): see above


def _mappings(kernel_block, mappings):
    """Every mapping as (linear, host, size, flags): the given ones, the kernel's
    block (identity, supervisor) and the last page (user read-only, no RAM)."""
    out = [(m[0], m[1], m[2], m[3] if len(m) > 3 else USER_RW) for m in mappings if m[2] > 0]
    begin, end = kernel_block
    out.append((begin, begin, end - begin, WRITABLE))
    out.append((LAST_PAGE[0], LAST_PAGE[0], PAGE, USER))   # read-only: see above
    return out


def _chunks(mappings):
    return sorted({a // SPAN for linear, _, size, _ in mappings
                   for a in range(linear - linear % SPAN, linear + size, SPAN)})


def table_pages(kernel_block, mappings):
    """How many pages the directory and its tables need (above the VM's region)."""
    return 1 + len(_chunks(_mappings(kernel_block, mappings)))


def build(memory, at, kernel_block, mappings, window=None):
    """Write a page directory at `at` (page aligned) and its page tables after it.

    kernel_block: (begin, end) physical, mapped identity, supervisor only.
    mappings: a list of (linear, host, size) or (linear, host, size, flags), each
    page aligned: linear [linear, linear + size) maps host [host, host + size) with
    PRESENT | flags (default USER_RW: a guest's memory; WRITABLE alone: supervisor
    only). A VM's is [(0, base, size)]: its guest sees its memory from 0. Empty
    for none (a system world's). Where two overlap the later wins; the kernel's
    block and the last page come last.
    window: (virtual address, page table) of the running CPU's mapping-cache window
    (kernel/mapcache.py), shared in supervisor-only: that table belongs to the CPU,
    not to this address space. Returns CR3 (= at)."""
    everything = _mappings(kernel_block, mappings)
    chunks = _chunks(everything)
    directory = bytearray(PAGE)
    if window is not None:
        struct.pack_into("<I", directory, 4 * (window[0] >> 22), window[1] | PRESENT | WRITABLE)
    tables = {chunk: bytearray(PAGE) for chunk in chunks}
    for linear, host, size, flags in everything:
        for offset in range(0, size, PAGE):
            page = linear + offset
            struct.pack_into("<I", tables[page // SPAN], 4 * ((page >> 12) & 0x3FF),
                             (host + offset) | PRESENT | flags)
    for n, chunk in enumerate(chunks):
        table_at = at + (1 + n) * PAGE
        struct.pack_into("<I", directory, 4 * chunk, table_at | PRESENT | WRITABLE | USER)
        memory.write(table_at, bytes(tables[chunk]), code=False)
    memory.write(at, bytes(directory), code=False)
    return at


def mapping(memory, cr3, address):
    """The page-table entry for `address` under directory `cr3` (0: not present)."""
    pde = memory.read_u32(cr3 + 4 * (address >> 22))
    if not pde & PRESENT:
        return 0
    return memory.read_u32((pde & ~0xFFF) + 4 * ((address >> 12) & 0x3FF))
