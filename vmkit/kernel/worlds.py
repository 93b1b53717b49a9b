"""Worlds and their scheduler (claims 13, 27, 34).

A world is what the kernel schedules: a memory region, an address space
(the COS: flat segments over all memory, CR3 0, paging off; a VM: flat
segments and its own page directory, kernel/paging.py: its memory user
read/write from linear 0, the kernel supervisor-only, the rest not present,
so a guest write outside its memory is a #PF that crashes that VM only) and a control thread, its saved CPU state. The COS is world 0; each
VM installed through a VMM is another. Each world owns a 256-byte block of
kernel memory (layout.WORLDS): its save area (save_area.py: 128 bytes, with its
switch and tick counters). A VM's virtual CPU, GDT, IDT and entry code are in
its VMM region (vmm/region.py), and its saved GDTR/IDTR name that GDT and IDT.

Scheduling: each CPU separately (claim 16; a Processor per CPU, smp.py), among
the worlds placed on it: the COS on CPU 0, each VM where install_vm places it,
and on another CPU its system world when nothing else can run. Round-robin,
quanta counted in timer ticks (per world if set: shares) (virtual time, since
ticks come every N retired instructions). The pick is `Worlds.chooser`
(`round_robin` below; exercise 05 plugs the learner's in). The switch happens where the
kernel's timer IRQ enters (Kernel._irq) once the running world's quantum is
used, or where the COS would idle, or when a VM halts or crashes. The COS's
own interrupts stay queued while a VM runs and are delivered when it runs
again (claim 10). Accounting: ticks run and switches into each world, in
the world's block.

Installing a VM (its placement, memory, page tables and VMM): vm_install.py.
"""
import functools

from vmkit.hw import clock
from vmkit.hw.lapic import TIMER_INITIAL
from vmkit.hw.x86 import CR0_PG
from . import layout, save_area, smp, switch, switch_x86
from .errors import GuestFault
from .switch import SwitchError
from .vm_install import Installing, VMError  # noqa: F401 (VMError: worlds.VMError too)
from .world import World

QUANTUM_TICKS = 2
VM_TICK = clock.hz(100)         # a real kernel's tick, 100 Hz of the virtual clock: 1,000,000 instructions
INSTRUCTIONS = 0xC0             # u32: instructions of virtual time the world held the CPU


_switch = functools.partial(tuple.__new__, switch.Switch)   # a Switch from its four fields, unparsed


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


class Worlds(Installing):
    def __init__(self, kernel):
        self.kernel, self.memory, self.trace = kernel, kernel.memory, kernel.trace
        self.quantum = QUANTUM_TICKS
        self.chooser = round_robin             # the scheduler's pick (an exercise plugs in)
        cos = World("cos", "cos", self._block(0), (0, kernel.base))
        self.all = [cos]
        self.cpus = [smp.processor(kernel, cpu) for cpu in kernel.board.cpus]
        self.cpus[0].current = cos             # the COS runs on CPU 0, as on ESX
        self.vm_tick = VM_TICK                 # instructions per tick while a VM runs (None: the PIT's;
                                               # the loader sets it before any CPU starts)
        self._vm_support = False
        self.vm_top = kernel.board.memory.size   # VMs are placed from here down to the kernel's end

    @property
    def current(self):
        """The world CPU 0 runs now."""
        return self.cpus[0].current

    def _block(self, index):
        if index >= layout.MAX_WORLDS:
            raise VMError(f"no room for another world: the kernel keeps {layout.MAX_WORLDS}")
        address = self.kernel.base + layout.WORLDS + index * layout.WORLD_SIZE
        self.memory.write(address, bytes(layout.WORLD_SIZE), code=False)
        return address

    def ticks_of(self, world):
        return self.memory.read_u32(world.area + save_area.TICKS)

    def instructions_of(self, world):
        return self.memory.read_u32(world.area + INSTRUCTIONS)

    def switches_of(self, world):
        return self.memory.read_u32(world.area + save_area.SWITCHES)

    # ---- scheduling --------------------------------------------------------------
    def runnable(self, world):
        if world.kind == "cos":
            return True
        if world.kind == "system":
            return False                       # what a CPU runs when nothing else can
        v = world.vmm.vcpu                     # a halted guest wakes for an interrupt it accepts
        return world.state == "ready" or (world.state == "halted" and v.pending and v.vif)

    def wake(self, vmm):
        """A line was raised for `vmm`'s VM (VMM.raise_line), or it was installed:
        if it can run now (ready, or halted with its virtual IF open to a pending
        line) and its CPU idles — CPU 0 in the kernel's idle stub (the COS halted),
        another CPU in its system world — that CPU is sent a reschedule IPI through
        the local APIC of the CPU the kernel runs on, and switches to it when it
        takes the IPI (smp.local_interrupt), not at its next timer tick. CPU 0
        raising for itself needs no IPI: the interrupt it serves ends its idle
        stub's `hlt`, and the stub's way back to the dispatcher picks the VM
        (Kernel.resume). A CPU busy with another world keeps its turn."""
        world = next((w for w in self.all if w.vmm is vmm), None)
        if world is None or world.state == "crashed" or not self.runnable(world):
            return
        p, k = self.cpus[world.cpu], self.kernel
        idle = p.current.kind == "system" if p.index else (p.current.kind == "cos" and k.away == "idle")
        if not idle or p.switching is not None:
            return
        here = k.board.running_cpu
        if here is not None and here.index == p.index == 0:
            return
        here = here or k.board.cpus[0]             # (called between runs: as from CPU 0)
        here.lapic.send_ipi(p.index, smp.RESCHEDULE_VECTOR)

    def quantum_of(self, world):
        """A world's turn in ticks: giving one world 3 and another 1 gives them
        CPU time 3:1 when both are busy (proportional shares, by weighted turns).
        With VMs at the VM tick (`vm_tick`) the COS still ticks at the PIT's
        period, so its turn is counted in as many PIT ticks as make the same
        virtual time: a quantum is virtual time, whatever clock counts it. (An
        idle COS still yields at once: its `hlt` gives CPU 0 away, traps.py.)"""
        ticks = world.quantum or self.quantum
        period = self.kernel.board.pit.period
        if world.kind == "cos" and self.vm_tick and period and self.vm_tick > period:
            ticks = ticks * self.vm_tick // period
        return ticks

    def pick(self, p=None):
        """The next world for CPU `p` (default 0), or None: `chooser` picks
        (round-robin by default) among the worlds placed on that CPU. CPU 0's
        list starts with the COS; another CPU's with its system world, which is
        never picked: it is what runs when no VM of that CPU can."""
        p = p or self.cpus[0]
        placed = [w for w in self.all if w.cpu == p.index]
        if p.index:
            placed.insert(0, p.system)
        return self.chooser(placed, p.current, lambda w: w.state != "crashed" and self.runnable(w))

    def tick(self, frame, p=None):
        """A timer tick on CPU `p` (CPU 0: the PIT, Kernel._irq; others: their
        local APIC timer, smp.py): account, post the virtual ticks of the VMs
        placed there, and switch if the interrupted world's quantum is used (or
        a system world runs and a VM of this CPU can run)."""
        p = p or self.cpus[0]
        save_area.bump(self.memory, p.current.area + save_area.TICKS, 1)
        if len(self.all) == 1:
            return
        for w in self.all[1:]:
            if w.cpu == p.index and w.state != "crashed":
                w.vmm.tick()
        if p.current.kind == "system":
            self.switch_to(frame, self.pick(p), p)
            return
        if frame.cs & 3 or self.kernel.away != "work":
            p.used += 1                        # the kernel's own work is not the COS's turn
        if frame.cs & 3 and p.used >= self.quantum_of(p.current):
            self.switch_to(frame, self.pick(p), p)

    def cos_would_idle(self, frame):
        """The COS is away (idle with nothing pending, or its quantum used after the
        kernel's work): give CPU 0 to a VM. True if one now runs."""
        k, p = self.kernel, self.cpus[0]
        idle = k.away == "idle" and not k.cos_wants_interrupt()
        if len(self.all) == 1 or (not idle and p.used < self.quantum_of(p.current)):
            return False
        nxt = self.pick(p)
        if nxt is None:
            return False
        away = k.away
        k.away_frame = k.away = None           # the COS's frame is now just a saved world
        return self.switch_to(frame, nxt, p, away)

    def switch_to(self, frame, nxt, p=None, away=None):
        """Start switching CPU `p` to `nxt` (switch.py): its x86 runs when the
        dispatcher returns and comes back to `switch_step`. False if there is
        no other world. `away`: the COS's away state (CPU 0), put back if `nxt`
        is refused."""
        p = p or self.cpus[0]
        current = p.current
        if nxt is None or nxt is current:
            return False
        p.switching = _switch((current, nxt, "switch", away))
        switch.begin(self.kernel, frame, self.kernel.board.cpus[p.index], current, nxt)
        return True

    def switch_step(self, frame, cpu, vector):
        """The switch's x86 came back to the dispatcher: SAVED (check, then load),
        LOADED (verify), or a fault the CPU took inside the load."""
        p = self.cpus[cpu.index]
        s, k = p.switching, self.kernel
        switch.disarm(k, cpu)                          # (SAVED here: C declined it)
        target = s.frm if s.mode == "restore" else s.to
        if s.mode == "start" and vector == layout.GO_SWITCH:   # a CPU's start: its first frame
            switch.enter(frame, cpu, switch_x86.RELOAD, target.area)   # (smp.py). (Not by the vector
            return      # alone: GO_SWITCH is 3, the vector of an int3 executed inside a load)
        if vector == switch_x86.SAVED:
            try:
                gdtr = switch.saved(k, frame, cpu, s.frm, s.to)   # (base, limit) the load's lgdt loads
            except SwitchError as e:            # nothing loaded: the running world goes on
                p.switching = None
                self.crash(s.to, f"world switch refused: {e}")
                self._after_refusal(frame, p, s)
                return
            cpu.descriptors_changed(0, paging=False, loading=gdtr)
            return      # the load runs at CPL 0 with paging off: its accesses through a world's
                        # short DS are checked, after its lgdt by the next world's descriptors
        try:
            if vector != switch_x86.LOADED:
                raise SwitchError(f"{target.name}: {switch.refused_by_cpu(k, frame, vector)}")
            cr0, cs = switch.loaded(k, frame, cpu, target)
        except SwitchError as e:
            if s.mode != "switch":
                p.switching = None
                cpu.stop(f"vmkernel panic: {target.name} cannot be loaded ({e})")
                return
            self.crash(s.to, f"world switch refused: {e}")
            p.switching = switch.Switch(s.frm, s.frm, "restore", s.away)     # load the world it left again
            switch.enter(frame, cpu, switch_x86.RELOAD, s.frm.area)
            return
        p.switching = None
        cpu.descriptors_changed(frame.cs & 3, paging=bool(cr0 & CR0_PG))   # the platform's limit checks
                                                   # follow the world (its CR0, as the verify read it)
        if s.mode == "restore":
            self._after_refusal(frame, p, s)
        elif s.mode == "switch":
            self._switched(frame, cpu, p, s.to, cr0, cs)

    def tick_vms_at(self, instructions=VM_TICK):
        """VM worlds tick every `instructions` (default a real kernel's 100 Hz), the COS
        keeps its PIT tick (the lessons' single IRQs). On CPU 0 the tick follows the
        world loaded (`_cpu0_timer`); another CPU runs only VMs and its system world,
        so its local APIC timer takes the VM tick now."""
        if not isinstance(instructions, int) or isinstance(instructions, bool) or instructions < 1:
            raise ValueError(f"a VM tick is a positive number of instructions, not {instructions!r}")
        self.vm_tick = instructions
        for p in self.cpus[1:]:
            self.kernel.board.cpus[p.index].lapic.program_timer(instructions, smp.TIMER_VECTOR)
        if self.cpus[0].current.kind == "vm":
            self._cpu0_timer(self.cpus[0].current)

    def _cpu0_timer(self, world):
        """CPU 0's tick follows the world it runs: a VM's comes from CPU 0's own local
        APIC timer every `vm_tick` instructions, with the PIT's line masked at the
        8259A, so the COS's ticks wait as the one pending request an 8259A's IRR
        holds (claim 10: delivered when the COS next runs); the COS's comes from the
        PIT again, the local APIC timer stopped."""
        lapic, pic = self.kernel.board.cpus[0].lapic, self.kernel.irqs.pic
        if world.kind == "vm" and not lapic.initial:
            pic.mask(0)
            lapic.program_timer(self.vm_tick, smp.TIMER_VECTOR)
        elif world.kind != "vm" and lapic.initial:
            lapic.write(TIMER_INITIAL, 0)
            pic.unmask(0)

    def _switched(self, frame, cpu, p, nxt, cr0=None, cs=None):
        """`nxt` is loaded (cr0, cs: the CPU's, as the load's verify read them): account,
        and hand it what is pending for it."""
        k = self.kernel
        switch.started(k, frame, cpu, nxt, cr0)
        if p.index == 0 and self.vm_tick:
            self._cpu0_timer(nxt)
        now = k.board.now()
        save_area.bump(self.memory, p.current.area + INSTRUCTIONS, now - p.since)
        p.current, p.used, p.since = nxt, 0, now
        kind = nxt.kind
        if kind == "vm":
            if nxt.state == "halted":
                nxt.state = "ready"
            reached = cs is not None and not cs & 3 and cr0 & CR0_PG   # its VMM's window (mapcache.py),
            try:                                                        # nothing ran since
                nxt.vmm.deliver_pending(frame, reached)
            except GuestFault as e:                # (guard's: it stops this VM only)
                self.crash(nxt, str(e))
                self.leave(frame, p)
        elif kind == "cos" and k.away is None:
            k.deliver_pending(frame)
            if k.work_due:                         # the kernel's work came due meanwhile
                k.work_due = False
                k.go_away(frame, "work")

    def _after_refusal(self, frame, p, s):
        """The world CPU `p` left runs again (its frame may have moved): go on
        with it, or, if it cannot go on, switch to another."""
        k = self.kernel
        if s.away:
            k.away_frame, k.away = frame.address, s.away
            k.resume(frame)
        elif s.frm.kind == "vm" and s.frm.state != "ready":
            self.leave(frame, p)

    def crash(self, world, why):
        world.state, world.fault = "crashed", why
        self.trace.emit("vm.crashed", vm=world.name, why=why)

    # ---- a VM's faults -------------------------------------------------------------
    def vm_trap(self, frame, vector, p=None, reached=False):
        """A fault from CPL 3 on CPU `p`: the running VM's VMM handles it; a halt
        yields the CPU, a fault it cannot survive stops that VM only. reached: the
        VMM's entry saw the CPU at CPL 0 with paging on (VMM.trap's)."""
        p = p or self.cpus[0]
        world = p.current
        if world.kind != "vm":
            raise RuntimeError(f"a CPL 3 fault (vector {vector:#x}) while {world.name} runs")
        try:
            result = world.vmm.trap(frame, vector, reached)
        except GuestFault as e:                    # (guard's: it stops this VM only)
            self.crash(world, str(e))
            self.leave(frame, p)
            return
        if result == "halt":
            world.state = "halted"
            self.leave(frame, p)

    def leave(self, frame, p=None):
        """The current VM of CPU `p` cannot go on (halted, crashed): switch to the
        next world of that CPU (one refused is crashed and the next tried, by
        `_after_refusal`); at the latest CPU 0's COS, another CPU's system world."""
        p = p or self.cpus[0]
        self.switch_to(frame, self.pick(p) or (self.all[0] if p.index == 0 else p.system), p)

    def guard(self, frame, action, p=None):
        """Run a VMM action; a GuestFault stops the current VM of CPU `p` and switches away."""
        try:
            return action()
        except GuestFault as e:
            p = p or self.cpus[0]
            self.crash(p.current, str(e))
            self.leave(frame, p)
            return "crashed"
