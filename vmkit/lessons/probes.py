"""Notebook 09's probes: the CPU reads one byte at an address, from a VM's guest
(CPL 3, its segments, its page directory), from its VMM (CPL 0, the VMM's CS and
DS, the same page directory) or from the displaced COS (CPL 1, its segments,
paging off). Each probe is x86 run on a machine, and what it says is what the
machine recorded: the fault the CPU took (the trace), or the mark the code left
after its read went through.
"""
from typing import NamedTuple

from vmkit.hw.asm import assemble
from vmkit.hw.board import MachineStopped
from vmkit.hw.x86 import EXCEPTION_NAMES
from vmkit.kernel import layout, mapcache
from vmkit.lessons import takeover
from vmkit.lessons.address_spaces import address_space
from vmkit.vmm import guests

PROBE_MEMORY = 0x10000          # the probing guest's memory: 64 KiB
RUN_LIMIT = 3_000_000           # instructions a probe may take to end


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
