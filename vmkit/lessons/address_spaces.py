"""The machine of notebook 09: one VM's linear address space (claims 21-22,
41-42), read from its live page directory and GDT, and probes that make the
CPU touch an address from the guest and from the displaced COS.

Nothing here is a model of the address space: `address_space` is the machine's
own reading (kernel/address_space.py: the page directory the VM world's CR3
names, walked entry by entry as the MMU does, and the descriptors of the GDT
its GDTR names) with the descriptors' bytes added; a probe is x86
run on the machine (a guest installed in a VM, a module insmod'ed into the
COS), and what it says is what the trace recorded: the fault the CPU took,
or the line the guest printed after its access went through.
"""
from typing import NamedTuple

from vmkit.hw.asm import assemble
from vmkit.hw.board import MachineStopped
from vmkit.hw.x86 import decode_segment, EXCEPTION_NAMES
from vmkit.kernel import address_space as machine_space, layout, mapcache, paging, switch
from vmkit.lessons import takeover
from vmkit.vmm import guests

PROBE_MEMORY = 0x10000          # the probing guest's memory: 64 KiB
RUN_LIMIT = 3_000_000           # instructions a probe may take to end


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
    area = switch.read_area(kernel.memory, world.area)
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


# ---- probes: the CPU touches an address --------------------------------------------
class Probe(NamedTuple):
    who: str            # "guest", "VMM" or "COS"
    address: int
    outcome: str        # "ok", "#GP (limit)", "#PF", ...
    detail: str         # what the machine recorded

    def __str__(self):
        return f"{self.who:5} reads {self.address:#010x}: {self.outcome:13} {self.detail}"


POINTER = 0x1000                # where the probing guest finds the address to read (a guest offset)


def probe_guest_source(base):
    """The probing guest, linked at `base`: it reads a byte at the guest address
    stored at POINTER (the prober writes it once the VM is placed), through DS;
    if that went through it prints "ok" and halts."""
    return f"""
        mov eax, dword ptr [{base + POINTER:#x}]
        mov al, byte ptr [eax]
        mov dx, 0x3f8
        mov al, 0x6f
        out dx, al
        mov al, 0x6b
        out dx, al
        mov al, 10
        out dx, al
h:      hlt
        jmp h
"""


def crash_fault(trace, mark, name):
    """The fault the CPU took that stopped VM `name` since `mark`: the last cpu.fault
    before its vm.crashed (the COS's own traps come and go meanwhile), or None."""
    events = trace.since(mark)
    end = next((i for i, e in enumerate(events) if e.kind == "vm.crashed" and e["vm"] == name), None)
    if end is None:
        return None
    return next((e for e in reversed(events[:end]) if e.kind == "cpu.fault"), None)


def _fault_outcome(fault):
    name = EXCEPTION_NAMES.get(fault["vector"], f"vector {fault['vector']:#x}").split()[0]
    if "limit" in str(fault["why"]):
        return f"{name} (limit)"
    return name


class Prober:
    """A displaced COS on a machine of its own, with one VM, `vm` (the one the
    notebook draws); `guest(address)` installs another VM of the same size whose
    guest reads `address`, `cos(address)` insmods a module that does. Probes are
    deterministic (virtual time); each guest probe is a new VM, so after a dozen
    the machine is built again (the kernel keeps MAX_WORLDS worlds)."""

    def __init__(self):
        self._build()

    def _build(self):
        self.board, self.cos_os, loader = takeover.takeover()
        self.kernel = loader.kernel
        self.vm = self.kernel.install_vm(guests.console(0, "vm1"), PROBE_MEMORY, "vm1")
        self.board.run(300_000)
        self.count = 0

    def guest(self, where):
        """What the CPU did when a VM's guest (CPL 3, the guest's segments, its
        page directory) read a byte at guest address `where` (or where(space):
        an address read from the new VM's own address space)."""
        if len(self.kernel.worlds.all) >= layout.MAX_WORLDS:
            self._build()
        board, kernel = self.board, self.kernel
        self.count += 1
        name = f"probe{self.count}"
        mark = board.trace.mark()
        world = kernel.install_vm(probe_guest_source, PROBE_MEMORY, name)
        address = where(address_space(kernel, world)) if callable(where) else where
        kernel.memory.write(world.region[0] + POINTER, (address & 0xFFFFFFFF).to_bytes(4, "little"))
        board.run_until(lambda: world.state != "ready" or world.vmm.console, RUN_LIMIT, f"{name}'s probe")
        if world.vmm.console.startswith(b"ok"):
            return Probe("guest", address, "ok", "the read went through: the guest printed 'ok'")
        f = crash_fault(board.trace, mark, name)
        if f is None:
            return Probe("guest", address, "?", f"{name}: {world.state} {world.fault}")
        detail = f["why"] if "limit" in str(f["why"]) else (world.fault or f["why"])
        return Probe("guest", address, _fault_outcome(f), f"error {f['error']}: {detail}")

    def vmm(self, address):
        """What the CPU did when x86 read a byte at `address` as the VMM: at CPL 0, with
        the VMM's CS and DS (its own segments), in the VM's address space. A VM's guest
        traps into its VMM; at `vmm_entry`, once the VMM has handled the trap, the CPU is
        sent to a probe routine put in the VMM region's free space (VMM_PROBE). The probe
        runs on a machine of its own, thrown away after: a fault the VMM takes at CPL 0
        is the kernel's panic."""
        return vmm_probe(address)

    def cos(self, address):
        """What the CPU and the kernel did when the displaced COS (CPL 1, its own
        segments, paging off) read a byte at `address`."""
        board = self.board
        mark = takeover.run_module(board, self.cos_os, f"init:\n        mov al, byte ptr [{address:#x}]\n"
                                                    "        xor eax, eax\n        ret")
        events = board.trace.since(mark, "cpu.fault", "kernel.cos_limit")
        at = next((i for i, e in enumerate(events) if e.kind == "kernel.cos_limit"), None)
        if at is not None and at > 0:
            f, refused = events[at - 1], events[at]        # the fault that took the COS into the kernel
            why = "" if "limit" in str(f["why"]) else f" ({f['why']})"
            return Probe("COS", address, _fault_outcome(f),
                         f"error {f['error']}{why}: into the kernel, which skipped it: {refused['what']} "
                         f"(the COS's limit is {refused['limit']:#x})")
        return Probe("COS", address, "ok", "the read went through (the module's init returned)")


VMM_PROBE = 0x3F00              # in a VMM region, past its x86 (vmm/region.py): the VMM probe's routine
PROBE_DONE = VMM_PROBE + 0xF0   # the probe routine writes 1 here when its read went through


def vmm_probe(address):
    """Prober.vmm, on a machine of its own (see there)."""
    from vmkit.vmm import region
    board, cos, loader = takeover.takeover()
    try:
        kernel = loader.kernel
        world = kernel.install_vm(probe_guest_source, PROBE_MEMORY, "vm1")
        kernel.memory.write(world.region[0] + POINTER, (address & 0xFFFFFFFF).to_bytes(4, "little"))
        vmm_base = layout.vmm_base(kernel.base)
        at, done = vmm_base + VMM_PROBE, vmm_base + PROBE_DONE
        kernel.memory.write(world.vmm_region + VMM_PROBE, assemble(f"""
        mov al, byte ptr [{address:#x}]
        mov byte ptr [{done:#x}], 1
spin:   jmp spin""", at))
        sent = []

        def send(cpu):
            if not sent and cpu["cs"] == layout.VMM_CODE_SEL:
                sent.append((cpu.segment("cs"), cpu.segment("ds"), cpu.cpl, board.trace.mark()))
                cpu["eip"] = at
        board.cpu.on_execute(vmm_base + region.ENTRY, send)
        try:
            board.run_until(lambda: sent, RUN_LIMIT, "the guest's trap into its VMM")
            board.run(2_000)
        except MachineStopped:
            pass                                # the kernel's panic at the VMM's CPL 0 fault: said below
        if not sent:
            return Probe("VMM", address, "?", "the guest never trapped into its VMM")
        cs, ds, cpl, mark = sent[0]
        how = f"(CPL {cpl}, CS {cs[0]:#x} limit {cs[2]:#x}, DS {ds[0]:#x} limit {ds[2]:#x})"
        if kernel.memory.read(world.vmm_region + PROBE_DONE, 1) == b"\x01":
            return Probe("VMM", address, "ok", f"the read went through {how}")
        f = next((e for e in board.trace.since(mark, "cpu.fault")), None)
        if f is None:
            return Probe("VMM", address, "?", f"the probe neither finished nor faulted {how}")
        stop = board.stopped()
        return Probe("VMM", address, _fault_outcome(f), f"error {f['error']}: {f['why']} {how}"
                     + (f"; {stop}" if stop else ""))
    finally:
        board.close()


def presets(space, kernel):
    """[(what, address)]: the addresses worth probing in `space`, read from it."""
    guest = space.of("guest memory")
    end = guest[-1].end if guest else 0
    at = [("the guest's first byte", 0), ("the guest's last byte", end - 1),
          ("the first byte past the guest's memory", end)]
    if space.of("VMM region"):
        at.append(("the VMM region", space.of("VMM region")[0].first))
    at += [("the kernel's IDT", kernel.base + layout.IDT), ("the mapping window", mapcache.WINDOW)]
    return at


def probe_table(prober, at):
    """Each address read from the guest, the VMM and the COS: text, one address a paragraph."""
    lines = []
    for what, address in at:
        lines.append(f"{address:#010x}  {what}")
        lines.append(f"    {prober.guest(address)}")
        lines.append(f"    {prober.vmm(address)}")
        lines.append(f"    {prober.cos(address)}")
    return "\n".join(lines)


# ---- the displaced COS tries to get out ----------------------------------------------
class Escape(NamedTuple):
    attempt: str
    refused: bool
    evidence: str       # what the machine shows

    def __str__(self):
        return f"{self.attempt}\n    {'refused' if self.refused else 'NOT REFUSED'}: {self.evidence}"


NOTE = 0x5000                   # COS memory the escaping module writes what it saw into


def _iretd_to(selector):
    """COS x86: iretd to `selector`:escaped with its own flags; at `escaped`, note CS
    as the CPU has it, then try to read CR0 (a CPL 0 instruction) and note it."""
    return f"""init:
        mov dword ptr [{NOTE:#x}], 0
        mov dword ptr [{NOTE + 4:#x}], 0
        pushfd
        push {selector:#x}
        mov eax, escaped
        push eax
        iretd
escaped:
        mov ax, cs
        mov [{NOTE:#x}], ax
        xor eax, eax
        mov eax, cr0
        mov [{NOTE + 4:#x}], eax
        xor eax, eax
        ret"""


def escapes():
    """The COS's ways out, each tried by x86 in a COS module on a machine of its own,
    each with what the machine did about it."""
    from vmkit.cos import layout as cos_layout
    from vmkit.lessons.devices import scratch_disk, scsi_driver
    out = []
    board, cos, loader = takeover.takeover()
    kernel, m = loader.kernel, board.memory
    mark = takeover.run_module(board, cos, _iretd_to(layout.COS_CODE_SEL))      # RPL 0: CPL 0?
    cs, cr0 = m.read_u32(NOTE) & 0xFFFF, m.read_u32(NOTE + 4)
    refused = [e["insn"] for e in board.trace.since(mark, "kernel.refused")]
    out.append(Escape(f"iretd to its own code with selector {layout.COS_CODE_SEL:#x} (RPL 0: CPL 0?)",
                      cs & 3 != 0 and cr0 == 0,
                      f"the code after it ran with CS {cs:#x} (CPL {cs & 3}); its `mov eax, cr0` trapped "
                      f"to the kernel ({'refused' if 'mov eax, cr0' in refused else 'not refused'}), EAX {cr0:#x}"))
    idt = kernel.base + layout.IDT
    before = m.read(idt, 256 * 8)
    mark = takeover.run_module(board, cos, f"init:\n        mov dword ptr [{idt + 13 * 8:#x}], 0xdeadbeef\n"
                                           "        xor eax, eax\n        ret")
    seen = board.trace.since(mark, "kernel.cos_limit")
    fault = next((e for e in board.trace.since(mark, "cpu.fault") if "limit" in str(e["why"])), None)
    out.append(Escape(f"a store into the kernel's IDT at {idt + 13 * 8:#x}",
                      m.read(idt, 256 * 8) == before and bool(seen),
                      (f"#GP({fault['error']}) by the COS's segment limit {seen[0]['limit']:#x}; the kernel skipped "
                       f"the store; the IDT's bytes are unchanged: {m.read(idt, 256 * 8) == before}")
                      if seen and fault else "no limit fault was recorded"))
    board.close()
    board, cos, loader = takeover.takeover(disk=scratch_disk())
    kernel, m = loader.kernel, board.memory
    idt = kernel.base + layout.IDT
    before = m.read(idt, 256 * 8)
    mark = takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 1, 1, idt))
    board.run(100_000)
    refused = board.trace.since(mark, "kernel.cos_dma")
    out.append(Escape("a SCSI read (DMA) of a disk block into the kernel's IDT, through the shared controller",
                      m.read(idt, 256 * 8) == before and bool(refused) and not board.trace.since(mark, "scsi.request"),
                      (f"the kernel checked the buffer against the COS's limit ({refused[0]['limit']:#x}) and refused it "
                       f"(into {refused[0]['into']}); the controller never saw it; the IDT's bytes are unchanged")
                      if refused else "no refusal was recorded"))
    board.close()
    board, cos, loader = takeover.takeover()
    mark = takeover.run_module(board, cos, _iretd_to(layout.KERNEL_CODE_SEL))
    refused = board.trace.since(mark, "kernel.refused")
    m = board.memory
    out.append(Escape(f"iretd to the kernel's code selector {layout.KERNEL_CODE_SEL:#x}",
                      bool(refused) and m.read_u32(NOTE) == 0,
                      (f"the kernel refused `{refused[0]['insn']}` and reflected #GP({m.read_u32(cos_layout.FAULT_ERROR):#x}) "
                       f"to the COS's own handler; `escaped` never ran") if refused else "no refusal was recorded"))
    board.close()
    return out


# ---- exercise 09's view: the numbers a segment is computed from --------------------
class SegmentLayout(NamedTuple):
    """One VM's address space as exercise 09 hands it to the learner: linear
    addresses, each *_end the first byte past. vmm_base/vmm_end are None on a
    machine whose VMs have no VMM region."""
    guest_end: int
    vmm_base: object
    vmm_end: object
    kernel_base: int
    kernel_end: int


def segment_layout(space):
    """From the live address space: where the guest's memory, the VMM region and the kernel lie."""
    guest, vmm, kernel = space.of("guest memory"), space.of("VMM region"), space.of("kernel")
    return SegmentLayout(guest[-1].end, vmm[0].first if vmm else None, vmm[-1].end if vmm else None,
                         kernel[0].first, kernel[-1].end)


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
    end = kernel.base + layout.STACK_TOP - 1
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
