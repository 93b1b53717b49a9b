"""Worlds and their scheduler (claims 13, 27, 34).

A world is what the kernel schedules: a memory region, an address space
(the COS: flat segments over all memory, CR3 0, paging off; a VM: flat
segments and its own page directory, vmm/paging.py: its region user
read/write, the kernel supervisor-only, the rest not present, so a guest
write outside its memory is a #PF that crashes that VM only) and a control thread, its saved CPU state. The COS is world 0; each
VM installed through a VMM is another. Each world owns a 256-byte block of
kernel memory (layout.WORLDS): its save area (switch.py: 128 bytes, with its
switch and tick counters) and, for a VM, its virtual CPU at +0x80.

Scheduling: round-robin, quanta counted in timer ticks (per world if set: shares) (virtual time, since
ticks come every N retired instructions). The pick is `Worlds.chooser`
(`round_robin` below; exercise 05 plugs the learner's in). The switch happens where the
kernel's timer IRQ enters (Kernel._irq) once the running world's quantum is
used, or where the COS would idle, or when a VM halts or crashes. The COS's
own interrupts stay queued while a VM runs and are delivered when it runs
again (claim 10). Accounting: ticks run and switches into each world, in
the world's block.

VM memory (and just above it the VM's page tables) comes from the top of RAM:
the kernel lowers the RAM top the COS's page allocator reads
(cos_layout.RAM_TOP), so the COS can never hand those pages out; the COS's bump pointer (NEXT_FREE_PAGE) is the floor.
"""
from vmkit.cos import layout as cos_layout
from vmkit.hw.asm import assemble
from vmkit.hw.x86 import encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_BUSY, EFLAGS_IF
from vmkit.vmm import paging
from . import layout, switch
from .switch import SwitchError

QUANTUM_TICKS = 2
VCPU = 0x80                     # a VM's virtual CPU, inside its world block
INSTRUCTIONS = 0xC0             # u32: instructions of virtual time the world held the CPU


class VMError(ValueError):
    """A VM cannot be installed (not enough memory, too many worlds)."""


class World:
    def __init__(self, name, kind, area, region, vmm=None):
        self.name, self.kind, self.area, self.region, self.vmm = name, kind, area, region, vmm
        self.state, self.fault = "ready", None
        self.quantum = None             # ticks per turn; None: the scheduler's default (shares)

    def __repr__(self):
        return f"<world {self.name} {self.kind} {self.state}>"


def round_robin(worlds, current, runnable):
    """The scheduler's pick: the next runnable world after `current` in `worlds`
    (install order, wrapping around), or None if no other world can run."""
    n = len(worlds)
    at = worlds.index(current)
    for i in range(1, n):
        w = worlds[(at + i) % n]
        if runnable(w):
            return w
    return None


class Worlds:
    def __init__(self, kernel):
        self.kernel, self.memory, self.trace = kernel, kernel.memory, kernel.trace
        self.quantum = QUANTUM_TICKS
        self.used = 0
        self.loader = switch.install           # the switch's loading step (an exercise plugs in)
        self.chooser = round_robin             # the scheduler's pick (an exercise plugs in)
        cos = World("cos", "cos", self._block(0), (0, kernel.base))
        self.all, self.current = [cos], cos
        self._vm_support = False
        self._since = kernel.board.now()

    def _kernel_block(self):
        """The kernel's memory, mapped supervisor-only into every VM's address space."""
        return (self.kernel.base, self.kernel.base + layout.STACK_TOP)

    def _block(self, index):
        if index >= layout.MAX_WORLDS:
            raise VMError(f"no room for another world: the kernel keeps {layout.MAX_WORLDS}")
        address = self.kernel.base + layout.WORLDS + index * layout.WORLD_SIZE
        self.memory.write(address, bytes(layout.WORLD_SIZE), code=False)
        return address

    def ticks_of(self, world):
        return self.memory.read_u32(world.area + switch.TICKS)

    def instructions_of(self, world):
        return self.memory.read_u32(world.area + INSTRUCTIONS)

    def switches_of(self, world):
        return self.memory.read_u32(world.area + switch.SWITCHES)

    # ---- installing a VM -------------------------------------------------------
    def vm_base(self, memory_bytes):
        """Where the next VM of this size would be placed (its guest is linked there)."""
        size = -(-memory_bytes // layout.PAGE) * layout.PAGE
        top, floor = self.memory.read_u32(cos_layout.RAM_TOP), self.memory.read_u32(cos_layout.NEXT_FREE_PAGE)
        tables = 0
        for _ in range(2):                     # the tables' count depends on where the region lands
            tables = max(tables, paging.table_pages(self._kernel_block(), (top - tables - size, top - tables))
                         * layout.PAGE if size > 0 else 0)
        if size <= 0 or top - tables - size < max(floor, self.kernel.base + layout.STACK_TOP):
            left = max(0, top - max(floor, self.kernel.base + layout.STACK_TOP))
            raise VMError(f"a VM of {memory_bytes} bytes does not fit: {left} bytes of memory are left "
                          f"(between the COS's pool at {floor:#x} and the RAM top {top:#x})")
        return top - tables - size             # its page tables go above it (paging.py)

    def install_vm(self, guest, memory_bytes, name=None):
        from vmkit.vmm.vmm import VMM             # layers: the VMM is built on the kernel's parts
        base = self.vm_base(memory_bytes)
        size = -(-memory_bytes // layout.PAGE) * layout.PAGE
        name = name or f"vm{len(self.all)}"
        area = self._block(len(self.all))
        code = guest(base) if callable(guest) else guest
        code = assemble(code, base) if isinstance(code, str) else bytes(code)
        if len(code) > size:
            raise VMError(f"{name}'s guest is {len(code)} bytes, its memory {size}")
        self.memory.write_u32(cos_layout.RAM_TOP, base)          # the COS can no longer allocate it
        self.memory.write(base, bytes(size), code=False)
        cr3 = paging.build(self.memory, base + size, self._kernel_block(), (base, base + size))
        self.memory.write(base, code)
        self._prepare_vm_support()
        vmm = VMM(self.kernel, name, base, size, area + VCPU)
        vmm.patch(len(code))
        world = World(name, "vm", area, (base, size), vmm)
        cpu = self.kernel.board.cpu
        user_data = layout.USER_DATA_SEL | layout.USER_RPL
        state = dict.fromkeys(switch.ITEMS, 0)
        state.update(eip=base, esp=base + size, eflags=EFLAGS_IF | 2,
                     cs=layout.USER_CODE_SEL | layout.USER_RPL, ss=user_data,
                     ds=user_data, es=user_data, fs=user_data, gs=user_data)
        _, state["gdtr.base"], state["gdtr.limit"], _ = cpu["gdtr"]
        _, state["idtr.base"], state["idtr.limit"], _ = cpu["idtr"]
        state.update({"tr.sel": layout.VM_TSS_SEL, "tr.base": self.kernel.base + layout.VM_TSS,
                      "tr.limit": 103, "tr.flags": cpu["tr"][3], "cr3": cr3})     # its own address space
        switch.write_area(self.memory, area, state)
        self.all.append(world)
        self.trace.emit("vm.installed", vm=name, base=base, size=size, code=len(code), area=area)
        world.cr3 = cr3
        return world

    def _prepare_vm_support(self):
        """Once: DPL 3 flat code/data and the VM TSS in the kernel's GDT."""
        if self._vm_support:
            return
        k, cpu = self.kernel, self.kernel.board.cpu
        esp0 = self.memory.read_u32(k.base + layout.TSS + 4)
        self.memory.write(k.base + layout.VM_TSS, encode_tss(esp0, layout.KERNEL_DATA_SEL), code=False)
        entries = [encode_segment(0, 0xFFFFFFFF, CODE_RX, 3), encode_segment(0, 0xFFFFFFFF, DATA_RW, 3),
                   encode_segment(k.base + layout.VM_TSS, 103, TSS_BUSY, 0, s=0, db=0, g=0)]
        self.memory.write(k.base + layout.GDT + layout.USER_CODE_SEL, b"".join(entries), code=False)
        sel, gdt, _, flags = cpu["gdtr"]
        cpu["gdtr"] = (sel, gdt, layout.VM_TSS_SEL + 7, flags)
        self._vm_support = True

    # ---- scheduling --------------------------------------------------------------
    def runnable(self, world):
        if world.kind == "cos":
            return True
        v = world.vmm.vcpu                     # a halted guest wakes for an interrupt it accepts
        return world.state == "ready" or (world.state == "halted" and v.pending and v.vif)

    def quantum_of(self, world):
        """A world's turn in ticks: giving one world 3 and another 1 gives them
        CPU time 3:1 when both are busy (proportional shares, by weighted turns)."""
        return world.quantum or self.quantum

    def pick(self):
        """The next world to run, or None: `chooser` picks (round-robin by default)."""
        return self.chooser(self.all, self.current,
                            lambda w: w.state != "crashed" and self.runnable(w))

    def tick(self, frame):
        """The kernel's timer IRQ (Kernel._irq, line 0): account, post the VMs' virtual
        ticks, and switch if the interrupted world's quantum is used."""
        switch.bump(self.memory, self.current.area + switch.TICKS, 1)
        if len(self.all) == 1:
            return
        for w in self.all[1:]:
            if w.state != "crashed":
                w.vmm.tick()
        if frame.cs & 3 or self.kernel.away != "work":
            self.used += 1                     # the kernel's own work is not the COS's turn
        if frame.cs & 3 and self.used >= self.quantum_of(self.current):
            self.switch_to(frame, self.pick())

    def cos_would_idle(self, frame):
        """The COS is away (idle with nothing pending, or its quantum used after the
        kernel's work): give the CPU to a VM. True if one now runs."""
        k = self.kernel
        idle = k.away == "idle" and not (k.vcpu.pending and k.vcpu.vif)
        if len(self.all) == 1 or (not idle and self.used < self.quantum_of(self.current)):
            return False
        nxt = self.pick()
        if nxt is None:
            return False
        was = k.away_frame, k.away
        k.away_frame = k.away = None           # the COS's frame is now just a saved world
        if not self.switch_to(frame, nxt):
            k.away_frame, k.away = was
            return False
        return True

    def switch_to(self, frame, nxt):
        """Switch (switch.py), account, and hand the new world what is pending for it.
        False if there is no other world or `nxt` cannot be loaded (it is then crashed)."""
        if nxt is None or nxt is self.current:
            return False
        cpu = self.kernel.board.cpu
        try:
            switch.world_switch(self.kernel, frame, cpu, self.current, nxt, self.loader)
        except SwitchError as e:
            self.crash(nxt, f"world switch refused: {e}")
            return False
        now = self.kernel.board.now()
        switch.bump(self.memory, self.current.area + INSTRUCTIONS, now - self._since)
        self.current, self.used, self._since = nxt, 0, now
        if nxt.kind == "vm":
            if nxt.state == "halted":
                nxt.state = "ready"
            self.guard(frame, lambda: nxt.vmm.deliver_pending(frame))
        elif self.kernel.away is None:
            self.kernel.deliver_pending(frame)
        return True

    def crash(self, world, why):
        world.state, world.fault = "crashed", why
        self.trace.emit("vm.crashed", vm=world.name, why=why)

    # ---- a VM's faults -------------------------------------------------------------
    def vm_trap(self, frame, vector):
        """A fault from CPL 3: the running VM's VMM handles it; a halt yields the CPU,
        a fault it cannot survive stops that VM only."""
        world = self.current
        if world.kind != "vm":
            raise RuntimeError(f"a CPL 3 fault (vector {vector:#x}) while {world.name} runs")
        result = self.guard(frame, lambda: world.vmm.trap(frame, vector))
        if result == "halt":
            world.state = "halted"
            self.leave(frame)

    def leave(self, frame):
        """The current VM cannot go on (halted, crashed): switch to the next world
        that loads, the COS at the latest."""
        for _ in range(len(self.all)):
            if self.switch_to(frame, self.pick() or self.all[0]):
                return
        raise RuntimeError("no world could be loaded, not even the COS")

    def guard(self, frame, action):
        """Run a VMM action; a GuestFault stops the current VM and switches away."""
        from vmkit.vmm.vmm import GuestFault
        try:
            return action()
        except GuestFault as e:
            world = self.current
            self.crash(world, str(e))
            self.leave(frame)
            return "crashed"
