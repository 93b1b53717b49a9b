"""One VM world's linear address space as the machine holds it now (claims 21-22).

Read, not modelled: the spans come from walking the page directory the world's
CR3 names (paging.mapping's entries, page by page, consecutive pages with the
same flags and consecutive frames merged) and the segments from decoding the
descriptors of the GDT its saved GDTR names. What a span is called follows from
where it lies and its flags (a VM's, paging.py and vmm/region.py):

  guest memory         user read/write
  VMM region           supervisor, at VMM_BASE (just below the kernel)
  kernel               supervisor, the kernel's block, identity
  VMM region (host)    supervisor, the same VMM pages at their host address
  page tables          supervisor, identity: other kernel-controlled pages it maps
  mapping window       its CPU's window page table (kernel/mapcache.py)
  last page            user read-only, no RAM (paging.py)
"""
from typing import NamedTuple

from vmkit.hw.x86 import decode_segment
from . import layout, paging, save_area
from .mapcache import WINDOW


class Span(NamedTuple):
    name: str
    first: int          # linear [first, end)
    end: int
    host: int           # the physical address `first` maps to
    user: bool          # the user/supervisor bit: may CPL 3 touch it
    writable: bool


class Segment(NamedTuple):
    name: str
    selector: int
    base: int
    limit: int          # the last offset (granularity applied)
    dpl: int


SEGMENTS = (("guest code", layout.USER_CODE_SEL), ("guest data", layout.USER_DATA_SEL),
            ("VMM code", layout.VMM_CODE_SEL), ("VMM data", layout.VMM_DATA_SEL),
            ("kernel code", layout.KERNEL_CODE_SEL), ("kernel data", layout.KERNEL_DATA_SEL))


def _name(kernel, world, first, user, writable):
    vmm_base = layout.vmm_base(kernel.base)
    if user:
        return "guest memory" if writable else "last page"
    if WINDOW <= first < WINDOW + paging.SPAN:
        return "mapping window"
    if vmm_base <= first < vmm_base + layout.VMM_SIZE:
        return "VMM region"
    if kernel.contains(first):
        return "kernel"
    region = getattr(world, "vmm_region", None)
    if region is not None and region <= first < region + layout.VMM_SIZE:
        return "VMM region (host)"
    return "page tables"


def spans(kernel, world):
    """[Span], lowest first, of `world`'s page directory."""
    memory, cr3 = kernel.memory, world.cr3
    out = []
    for slot in range(1024):
        if not memory.read_u32(cr3 + 4 * slot) & paging.PRESENT:
            continue
        for i in range(1024):
            linear = slot << 22 | i << 12
            pte = paging.mapping(memory, cr3, linear)
            if not pte & paging.PRESENT:
                continue
            host, user, writable = pte & ~0xFFF, bool(pte & paging.USER), bool(pte & paging.WRITABLE)
            last = out[-1] if out else None
            if (last and last.end == linear and (last.user, last.writable) == (user, writable)
                    and last.host + (linear - last.first) == host
                    and last.name == _name(kernel, world, linear, user, writable)):
                out[-1] = last._replace(end=linear + layout.PAGE)
            else:
                out.append(Span(_name(kernel, world, linear, user, writable), linear,
                                linear + layout.PAGE, host, user, writable))
    return out


def segments(kernel, world):
    """[Segment] of the GDT `world` loads (its saved GDTR), those of SEGMENTS it has."""
    area = save_area.read_area(kernel.memory, world.area)
    gdt, limit = area["gdtr.base"], area["gdtr.limit"]
    out = []
    for name, sel in SEGMENTS:
        if sel + 7 <= limit:
            d = decode_segment(kernel.memory.read(gdt + sel, 8))
            out.append(Segment(name, sel, d.base, d.limit, d.dpl))
    return out
