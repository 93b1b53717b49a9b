"""The machine of notebook 09: one VM's linear address space (claims 21-22,
41-42), read from its live page directory and GDT, and the VMM's call into
the kernel with the same CS and DS.

Nothing here is a model of the address space: `address_space` is the machine's
own reading (kernel/address_space.py: the page directory the VM world's CR3
names, walked entry by entry as the MMU does, and the descriptors of the GDT
its GDTR names) with the descriptors' bytes added; claim 22's segments are
read from the CPU (CPU.segment) where its x86 runs. The probes that make the
CPU touch an address are in probes.py, the COS's escape attempts in
cos_escapes.py.
"""
from typing import NamedTuple

from vmkit.hw.x86 import decode_segment
from vmkit.kernel import address_space as machine_space, layout, mapcache, paging, save_area

RUN_LIMIT = 3_000_000           # instructions the VMM's call into the kernel may take


class SegmentRow(NamedTuple):
    """A descriptor of the world's GDT, as the CPU will read it at a segment load."""
    name: str
    selector: int
    base: int
    limit: int          # the last offset, granularity applied
    dpl: int
    g: int
    raw: bytes


class Space(NamedTuple):
    """One world's linear address space, read from memory now: spans of its page
    directory and the segments of its GDT (kernel/address_space.py), with the
    descriptors' bytes and the CPU's mapping window."""
    world: str
    cr3: int
    gdtr: tuple         # (base, limit) the world loads
    runs: list          # [address_space.Span], lowest first
    segments: list      # [SegmentRow]
    window: tuple       # (its page table, pages mapped in it now), or None: the CPU's mapping window

    def run_at(self, address):
        return next((r for r in self.runs if r.first <= address < r.end), None)

    def segment(self, name):
        return next((s for s in self.segments if s.name == name), None)

    def of(self, name):
        """The spans called `name` (e.g. "guest memory")."""
        return [r for r in self.runs if r.name == name]


def access(span):
    return ("user " if span.user else "supervisor ") + ("rw" if span.writable else "ro")


def address_space(kernel, world):
    """`world`'s address space as its CR3 and GDTR name them (its saved GDTR: the
    save area is written at each switch, and the VM's GDT does not move)."""
    area = save_area.read_area(kernel.memory, world.area)
    gdt, limit = area["gdtr.base"], area["gdtr.limit"]
    runs = machine_space.spans(kernel, world) if world.cr3 else []
    segments = []
    for s in machine_space.segments(kernel, world):
        raw = kernel.memory.read(gdt + s.selector, 8)
        segments.append(SegmentRow(s.name, s.selector, s.base, s.limit, s.dpl, decode_segment(raw).g, raw))
    window = None
    if world.cr3:
        pde = kernel.memory.read_u32(world.cr3 + 4 * (mapcache.WINDOW >> 22))
        if pde & paging.PRESENT:
            window = (pde & ~0xFFF, sum(r.end - r.first for r in runs if r.name == "mapping window") >> 12)
    return Space(world.name, world.cr3, (gdt, limit), runs, segments, window)


def space_text(space):
    lines = [f"{space.world}: CR3 {space.cr3:#x}, GDT at {space.gdtr[0]:#x} (limit {space.gdtr[1]:#x})",
             "linear                      physical      pages  access          whose"]
    for r in space.runs:
        lines.append(f"{r.first:#010x}..{r.end - 1:#010x}   {r.host:#010x}  {(r.end - r.first) >> 12:5}  "
                     f"{access(r):15} {r.name}")
    if space.window and not space.of("mapping window"):
        lines.append(f"{mapcache.WINDOW:#010x}..{mapcache.WINDOW + paging.SPAN - 1:#010x}   (the CPU's mapping window: "
                     f"its page table at {space.window[0]:#x}, {space.window[1]} page(s) mapped now)")
    lines.append("segment       selector  base        last offset  G  DPL  descriptor")
    for s in space.segments:
        lines.append(f"{s.name:13} {s.selector:#06x}    {s.base:#010x}  {s.limit:#010x}   {s.g}  {s.dpl}    "
                     f"{s.raw.hex(' ')}")
    return "\n".join(lines)


# ---- exercise 09's view: the numbers a segment is computed from --------------------
class SegmentLayout(NamedTuple):
    """One VM's address space as exercise 09 hands it to the learner: linear
    addresses, each *_end the first byte past."""
    guest_end: int
    vmm_base: int
    vmm_end: int
    kernel_base: int
    kernel_end: int


def segment_layout(space):
    """From the live address space: where the guest's memory, the VMM region and the kernel lie."""
    guest, vmm, kernel = space.of("guest memory"), space.of("VMM region"), space.of("kernel")
    return SegmentLayout(guest[-1].end, vmm[0].first, vmm[-1].end, kernel[0].first, kernel[-1].end)


# ---- claim 22: from the VMM into the kernel, no segment register loaded ------------
class Seen(NamedTuple):
    """CS and DS as the CPU held them at one instruction: (selector, base, limit, flags) each."""
    where: str
    eip: int
    cs: tuple
    ds: tuple


def vmm_to_kernel(board, kernel, world, limit=RUN_LIMIT):
    """Run until `world`'s guest traps into its VMM and the VMM's near jmp lands in the
    kernel; read CS and DS (selector and hidden part, CPU.segment) at vmm_entry and at
    the kernel's code it jumps to (`dispatched`). Returns [Seen, Seen]."""
    from vmkit.vmm import region
    entry = layout.vmm_base(kernel.base) + region.ENTRY
    into = kernel.base + kernel.image.dispatched
    seen = []

    def at(where):
        def read(cpu):
            if kernel.worlds.cpus[cpu.index].current is world and cpu["cs"] == layout.VMM_CODE_SEL \
                    and len(seen) < 2 and (where == "vmm_entry") == (not seen):
                seen.append(Seen(where, cpu["eip"], cpu.segment("cs"), cpu.segment("ds")))
        return read
    handles = [(cpu, cpu.on_execute(entry, at("vmm_entry"))) for cpu in board.cpus]
    handles += [(cpu, cpu.on_execute(into, at("the kernel (dispatched)"))) for cpu in board.cpus]
    try:
        board.run_until(lambda: len(seen) == 2, limit, f"{world.name}'s VMM calling the kernel")
    finally:
        for cpu, h in handles:
            cpu.remove(h)
    return seen


def segments_text(seen, kernel):
    """Claim 22, as the CPU held the segments: one line per register per place."""
    end = kernel.end - 1
    lines = []
    for s in seen:
        for name in ("cs", "ds"):
            sel, base, lim, _ = getattr(s, name)
            lines.append(f"{s.where:24} EIP {s.eip:#010x}  {name.upper()} {sel:#06x}  base {base:#010x}  "
                         f"limit {lim:#010x}")
    same = len(seen) == 2 and seen[0].cs == seen[1].cs and seen[0].ds == seen[1].ds
    reach = all(s.cs[2] >= end and s.ds[2] >= end for s in seen)
    lines.append(f"unchanged across the VMM's jmp into the kernel: {'yes' if same else 'NO'}; "
                 f"both reach the kernel's last byte {end:#x}: {'yes' if reach else 'NO'}")
    return "\n".join(lines)
