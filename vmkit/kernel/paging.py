"""A VM world's address space: one page directory per VM (isolation; claim 21).

Each VM world gets its own two-level page table (4 KiB pages, no PSE),
identity-mapped, so a guest address is the physical address it always was:

  the VM's region             present, user, read/write   (the guest's memory)
  the kernel's block          present, supervisor only    (code, GDT, IDT, TSSs,
                              kernel stack, world blocks: claim 21, the kernel
                              mapped into the VMM's address space, out of CPL 3's reach)
  its CPU's mapping window    present, supervisor only    (kernel/mapcache.py: that CPU's
                              page table, shared into every address space on the CPU)
  its VMM region              present, supervisor only    (vmm/region.py: at VMM_BASE, just
                              below the kernel, and at its host address; `also`)
  everything else             not present                 (the COS, other VMs, the tables)

The tables live in kernel-controlled memory taken with the VM's memory from
the top of RAM, just above the VM's region (so they are never user pages).
The COS world keeps CR3 = 0 and paging off; a VM world's CR3 names its
directory, and the world switch sets CR0.PG from it (switch.py).

Identity mapping keeps the platform's interrupt delivery right: cpu.py
reads the IDT, GDT and TSS and pushes the trap frame at the addresses the
registers name as physical addresses, which they are here (the kernel's
block maps to itself).

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
SPAN = 1 << 22                      # what one page table maps: 4 MiB
LAST_PAGE = (0xFFFFF000, 0x100000000)   # where emu_start's `until` lies (cpu.NO_ADDRESS): see below


def _supervisor(kernel_block):
    return [kernel_block, LAST_PAGE]            # (the last page is in fact user read-only)


def _chunks(ranges):
    return sorted({a // SPAN for begin, end in ranges for a in range(begin - begin % SPAN, end, SPAN)})


def _linear(also):
    return [(linear, linear + length) for linear, _, length in also]


def table_pages(kernel_block, region, also=()):
    """How many pages the directory and its tables need (above the VM's region)."""
    return 1 + len(_chunks(_supervisor(kernel_block) + [region] + _linear(also)))


def build(memory, at, kernel_block, region, window=None, also=()):
    """Write a page directory at `at` (page aligned) and its page tables after it.
    kernel_block, region: (begin, end) physical; region (0, 0) for none (a system
    world's). window: (virtual address, page table) of the running CPU's
    mapping-cache window (kernel/mapcache.py), shared in supervisor-only: that
    table belongs to the CPU, not to this address space. also: more supervisor-only
    read/write mappings, (linear, host, length) page aligned: a VM's VMM region at
    its VMM_BASE and at its host address (vmm/region.py). Returns CR3 (= at)."""
    supervisor = _supervisor(kernel_block)
    chunks = _chunks(supervisor + [region] + _linear(also))
    directory = bytearray(PAGE)
    if window is not None:
        struct.pack_into("<I", directory, 4 * (window[0] >> 22), window[1] | PRESENT | WRITABLE)
    for n, chunk in enumerate(chunks):
        table_at = at + (1 + n) * PAGE
        struct.pack_into("<I", directory, 4 * chunk, table_at | PRESENT | WRITABLE | USER)
        table = bytearray(PAGE)
        for i in range(1024):
            page = chunk * SPAN + i * PAGE
            if page == LAST_PAGE[0]:
                struct.pack_into("<I", table, 4 * i, page | PRESENT | USER)       # read-only, no RAM
            elif region[0] <= page < region[1]:
                struct.pack_into("<I", table, 4 * i, page | PRESENT | WRITABLE | USER)
            elif any(b <= page < e for b, e in supervisor):
                struct.pack_into("<I", table, 4 * i, page | PRESENT | WRITABLE)
            elif (host := next((h + page - v for v, h, n in also if v <= page < v + n), None)) is not None:
                struct.pack_into("<I", table, 4 * i, host | PRESENT | WRITABLE)
        memory.write(table_at, bytes(table), code=False)
    memory.write(at, bytes(directory), code=False)
    return at


def mapping(memory, cr3, address):
    """The page-table entry for `address` under directory `cr3` (0: not present)."""
    pde = memory.read_u32(cr3 + 4 * (address >> 22))
    if not pde & PRESENT:
        return 0
    return memory.read_u32((pde & ~0xFFF) + 4 * ((address >> 12) & 0x3FF))
