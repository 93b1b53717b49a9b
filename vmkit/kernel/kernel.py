"""The vmkernel: a second operating system that displaces the COS (claim 1).

It is entered only as hardware enters software: through its IDT, whose
256 gates lead to 16-byte stubs in its memory, which push the vector and
the registers and reach `dispatch`, where this Python runs (CPU.on_execute)
with the trap frame on the kernel stack. It leaves by the stub's
popad/iretd, to whatever the frame then says.

At initialisation (the loader's jump to its entry) it patches the COS's
pushfd/popfd/iretd to int3, sets up the COS's virtual CPU, and returns to
the COS where the COS called the loader, at CPL 1: the COS goes on, but
no longer at the system level. From then on every interrupt arrives here
first; those of the COS's devices are masked, queued and forwarded to it
when it next runs (irq.py); its privileged instructions trap here
(traps.py); the devices it hands over are classified and the classes
enforced (devices.py, scsi_share.py); and its requests for resources come
in through int 0x90 (syscalls.py).
"""
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from vmkit.hw.x86 import EFLAGS_IF, ERROR_CODE_VECTORS, EXCEPTION_NAMES
from vmkit.cos import layout as cos_layout
from . import contain, cos_idt, devices, layout, smp, switch_x86, syscalls, traps, unload, vpic
from .cos_vcpu import CosVcpu, emulate_if
from .frame import Frame, StackPastLimit
from .irq import IrqRouter
from .patches import PatchTable
from .scsi_share import SharedSCSI
from .nic_share import SharedNIC
from .worlds import Worlds

INIT_VECTOR = 0x100             # the entry code's "vector": initialise
WORK_EVERY = 4                  # every 4th timer tick the kernel does a piece of its own work
WORK_LENGTH = 3000              # instructions (loop iterations) in one piece
IRQ_BASE = 0x20                 # the COS programmed the PIC so before takeover; the kernel keeps it
PATCHED = ("pushfd", "popfd", "iretd")
INT3 = b"\xcc"
HEADER = cos_layout.MODULE_HEADER
_disassembler = Cs(CS_ARCH_X86, CS_MODE_32)
GO_BACK = layout.GO_BACK
SWITCH_STEPS = frozenset((layout.GO_SWITCH, switch_x86.SAVED, switch_x86.LOADED))
SPECIAL = frozenset((INIT_VECTOR, unload.PARK_VECTOR)) | smp.LOCAL_VECTORS   # the kernel's own vectors
assert not any(IRQ_BASE <= v < IRQ_BASE + 16 for v in SPECIAL)   # (dispatch tests the IRQs first)
FRAMES_KEPT = 64                # trap frames kept, by address (Kernel._frame); then made afresh


class Kernel:
    def __init__(self, board, base, image, cos_state, monitor=None):
        """monitor: the class whose instances monitor VMs (vmkit.vmm.vmm.VMM), given
        by whoever builds the system (the loader), so the kernel never imports it."""
        self.board, self.base, self.image = board, base, image
        self.monitor = monitor
        self._routines = {}                     # routine(): a routine's bytes -> its address
        self.memory, self.trace = board.memory, board.trace
        self.cos_state = cos_state
        self.vcpu = CosVcpu(self.memory, base + layout.COS_STATE)
        self.cos_limit = contain.cos_limit(self)   # the loader's GDT: where the COS's segments end
        self.patches = PatchTable(self.memory, base + layout.PATCHES)   # in kernel memory (patches.py)
        self.memory.write_u32(base + layout.PATCHES, 0, code=False)
        self.away_frame = None        # the COS's frame while the kernel idles or works
        self.away = None              # "idle" or "work"
        self.unloading = None         # None, "waiting", "parking", "done" (unload.py)
        self.unload_order = unload.ORDER   # exercise 11 plugs in here: the reinstatement steps
        self.unload_next = 0          # the first of them not done yet
        self.ram = None               # (RAM_TOP, block, block end) before the load: what "free" gives back
        self.irqs = IrqRouter(self)
        self.devices, self.classes = [], {}
        self.shared = {}              # device name -> its sharing front (scsi_share.py)
        self.classify = devices.classify   # exercise 03 plugs in here
        self.ticks = 0
        self.work_due = False
        self._module_seen = None      # the module area (header, code) as last patched
        self.emulate_if = emulate_if  # exercise 02b plugs in here
        self.heap = base + layout.HEAP # pages the kernel hands out on request (syscalls.py)
        self.worlds = Worlds(self)    # the COS is world 0; VMs join with install_vm (worlds.py)
        self.entered = False          # the takeover's x86 reached the entry (INIT_VECTOR)
        self.on_entered = None        # the loader's: what the takeover loaded, read from the CPU
        self._frames = {}             # esp -> the trap frame there (_frame)
        self.hooks = [cpu.on_execute(base + image.dispatch, self.dispatch) for cpu in board.cpus]
        self.vmm_hooks = []           # the VMMs' entry, once there is a VM (enter_vmms)

    def install_vm(self, guest, memory_bytes, name=None, cpu=None, entry=0):
        """A VM through a VMM (claim 12): its guest sees its memory from address 0.
        `guest` is x86 source, bytes (a flat binary linked at 0), or a function of
        its link address (0) giving either; `entry` the guest address it starts at.
        cpu: where to place it (default: the CPU with the fewest worlds)."""
        return self.worlds.install_vm(guest, memory_bytes, name, cpu, entry)

    def enter_vmms(self):
        """The VMMs' entry (vmm/region.py: vmm_entry): one linear address in every VM,
        just below the kernel, so one breakpoint per CPU, set when the first VM is
        installed (a CPU has few breakpoints, and no VM, no VMM to enter)."""
        if not self.vmm_hooks:
            at = layout.vmm_base(self.base) + self.monitor.ENTRY
            self.vmm_hooks = [cpu.on_execute(at, self._vmm_entered) for cpu in self.board.cpus]
            passes = getattr(self.monitor, "pass_interrupts", None)   # (without a stop, where it
            if passes is not None:                                    # would only return)
                passes(self, self.vmm_hooks)

    def _vmm_entered(self, cpu):
        self.monitor.entered(self, cpu)

    @property
    def end(self):
        """The first byte past the kernel's block (layout.kernel_end)."""
        return layout.kernel_end(self.base)

    @property
    def block(self):
        """(base, end): the kernel's memory, mapped supervisor-only into every address space."""
        return self.base, self.end

    def routine(self, code):
        """Where a routine of the image (its x86 assembled at 0: position-independent
        bytes) lies in the loaded kernel, found by its bytes once and remembered."""
        at = self._routines.get(code)
        if at is None:
            image = self.memory.read(self.base, len(self.image.data))
            at = self._routines[code] = self.base + image.index(code)
        return at

    def contains(self, address):
        return self.base <= address < self.end

    # ---- the one way in ----------------------------------------------------
    def dispatch(self, cpu):
        esp = cpu["esp"]
        frame = self._frames.get(esp)
        if frame is None or frame.stack_limit != self.cos_limit:
            frame = self._frame(esp)
        vector, cs = frame.vector, frame.cs
        frame.vector = GO_BACK                       # the stub's iretd, unless go_away says otherwise
        if self.worlds.cpus[cpu.index].switching and (vector in SWITCH_STEPS or not cs & 3):
            if IRQ_BASE <= vector < IRQ_BASE + 16:     # IF set inside the load: still serve the device
                self.irqs.irq(vector - IRQ_BASE)
            self.worlds.switch_step(frame, cpu, vector)   # the switch's x86 is back, or faulted
            return
        if self.away_frame == esp and cpu.index == 0:   # back from idling or working: the COS's turn?
            self.resume(frame)
            return
        if not self.entered and cs == layout.COS_CODE_SEL:   # in the COS's CS at CPL 0:
            self._takeover_failed(frame, cpu, vector)         # the takeover's own x86
        elif IRQ_BASE <= vector < IRQ_BASE + 16:     # (none of the vectors below: SPECIAL)
            self._irq(frame, vector - IRQ_BASE)
        elif vector in SPECIAL and self._special(frame, cpu, vector):
            pass
        elif (ring := cs & 3) == 3:                  # a VM's guest's fault: its VMM handled it
            cpu.stop(f"vmkernel panic: vector {vector:#x} from a guest at {frame.eip:#x} "
                     f"reached the dispatcher: its VMM did not take it")
        elif ring != 1:                              # (the COS runs at CPL 1: Frame.from_cos)
            cpu.stop(f"vmkernel panic: vector {vector:#x} at {frame.eip:#x} in the kernel")
        else:
            self._cos_trap(frame, cpu, vector)

    def _frame(self, esp):
        """The trap frame at `esp`, pushes on the COS's stack checked against its limit. A
        frame is a view of the kernel stack at its address, nothing more (its words are read
        where they lie), so the one made for an address serves every entry that leaves its
        frame there again (a few: each CPU's stack top, for each ring it is entered from),
        as long as the COS's limit it checks against is the same."""
        if len(self._frames) >= FRAMES_KEPT:
            self._frames.clear()
        frame = self._frames[esp] = Frame(self.memory, esp, self.cos_limit)
        return frame

    def _special(self, frame, cpu, vector):
        """The kernel's own vectors: initialise, park (the unload), a CPU's local interrupts.
        False: not one of them after all (the COS's or a guest's vector: `dispatch` goes on)."""
        if vector == INIT_VECTOR:
            self._initialise(frame, cpu)
        elif vector == unload.PARK_VECTOR:          # the unload parks this CPU
            unload.park(self, frame, cpu)
        else:
            return smp.local_interrupt(self, frame, cpu, vector)   # a CPU's own timer, a shootdown
        return True

    def _cos_trap(self, frame, cpu, vector):
        """A fault or `int n` of the COS's (at CPL 1): contained, emulated, served or reflected."""
        self.vcpu.traps += 1
        self._patch_module()
        if vector == 13:
            if contain.plainly_privileged(self, frame):   # (cli, sti, hlt, in, out: most)
                if not traps.privileged(self, frame):
                    self.reflect(frame, vector)
            elif contain.fetched_past_limit(self, frame):
                self.reflect(frame, vector)          # no instruction of its own to skip
            elif not (contain.past_limit(self, frame) or traps.privileged(self, frame)):
                self.reflect(frame, vector)
        elif vector == 3 and (mnemonic := self.patches.get(frame.eip - 1)):
            try:
                traps.patched(self, frame, mnemonic)
            except StackPastLimit as e:   # skipped (EIP is past its int3), as contain.py skips
                contain.stack_refused(self, frame, e, mnemonic)
        elif vector == syscalls.VECTOR and frame.eax == unload.CALL:
            unload.request(self, frame, cpu)
        elif vector == syscalls.VECTOR:
            syscalls.serve(self, frame)
        else:
            self.reflect(frame, vector)

    # ---- initialisation ------------------------------------------------------
    def _takeover_failed(self, frame, cpu, vector):
        """The CPU refused the takeover's lgdt, lidt, ltr or far jump (a descriptor in the
        kernel's GDT is not what it must be): the fault came through the kernel's IDT,
        already loaded, before the kernel ran. Neither the COS's tables nor its CS can
        be trusted to come back to, so the load fails as a panic, naming the CPU's fault."""
        code = self.memory.read(frame.eip, 16)
        insn = next((f"{i.mnemonic} {i.op_str}".strip() for i in _disassembler.disasm(code, frame.eip)), "?")
        error = f"({frame.error:#x})" if vector in ERROR_CODE_VECTORS else ""
        name = EXCEPTION_NAMES.get(vector, f"vector {vector:#x}").split()[0]
        self.trace.emit("load.failed", cpu.index, vector=vector, error=frame.error, eip=frame.eip, insn=insn)
        cpu.stop(f"vmkernel panic: the takeover faulted: {name}{error} at {frame.eip:#x} ({insn}): "
                 f"the CPU refused the kernel's tables")

    def _initialise(self, frame, cpu):
        self.entered = True
        if self.on_entered is not None:
            self.on_entered(cpu)
        cos = self.cos_state
        self._patch_cos()
        v = self.vcpu
        v.vif = 1 if cos["eflags"] & EFLAGS_IF else 0
        _, v.idt_base, v.idt_limit, _ = cos["idtr"]
        _, v.gdt_base, v.gdt_limit, _ = cos["gdtr"]
        v.pending = v.traps = v.injected = v.icw = 0
        ports = self.board.ports                       # its PIC masks, as the COS programmed them
        v.imr = ports.read(vpic.MASTER + 1, 1) | ports.read(vpic.SLAVE + 1, 1) << 8
        self.memory.write_u32(self.base + layout.WORK_LENGTH, WORK_LENGTH)
        for reg in ("edi", "esi", "ebp", "ebx", "edx", "ecx"):
            setattr(frame, reg, cos[reg])
        frame.eax = 0                                  # the loader's answer: loaded
        frame.eip = cos["return_eip"]                  # as `ret` from the loading module would
        frame.cs = layout.COS_CODE_SEL | layout.COS_RPL
        frame.eflags = (cos["eflags"] | EFLAGS_IF) & ~0x3000
        frame.esp = cos["esp"] + 4
        frame.ss = layout.COS_DATA_SEL | layout.COS_RPL
        self.trace.emit("kernel.init", cpu.index, base=self.base, patched=len(self.patches))
        self.trace.emit("kernel.displaced", cpu.index, cos_eip=frame.eip, cos_cpl=layout.COS_RPL)
        smp.start_processors(self)                     # any other CPU: its system world, its timer

    def _patch_cos(self):
        """pushfd/popfd/iretd do not trap at CPL 1: make them int3 (a one-byte trap)."""
        start, end = cos_layout.COS_CODE, self.memory.read_u32(cos_layout.CODE_END)
        self.trace.emit("kernel.patch", what="COS code", count=self._patch(start, end))
        self._patch_module()

    def _patch_module(self):
        """A driver the COS loads after the takeover is patched the first time the
        kernel sees the COS after it (every COS trap checks): as a binary translator
        meets new code. The module area's header and contents tell what is new: the
        area as last patched (header and code) is compared where it lies, in one
        comparison on the way through, no copy per trap."""
        seen, memory = self._module_seen, self.memory
        if seen is not None and memory.same(cos_layout.MODULE_AREA, seen):
            return
        size = memory.read_u32(cos_layout.MODULE_AREA + 4)
        if not memory.same(cos_layout.MODULE_AREA, cos_layout.MODULE_MAGIC) or size > 0x10000:
            return
        if seen is not None and len(seen) == HEADER + size and memory.same(cos_layout.MODULE_CODE, seen[HEADER:]):
            self._module_seen = memory.read(cos_layout.MODULE_AREA, HEADER + size)   # the header alone moved
            return
        self.patches.forget(cos_layout.MODULE_AREA, cos_layout.MODULE_AREA + 0x10000)
        count = self._patch(cos_layout.MODULE_CODE, cos_layout.MODULE_CODE + size)
        self._module_seen = memory.read(cos_layout.MODULE_AREA, HEADER + size)
        if count:
            self.trace.emit("kernel.patch", what="COS module", count=count)

    def _patch(self, start, end):
        code = self.memory.read(start, end - start)
        count = 0
        for insn in _disassembler.disasm(code, start):
            if insn.mnemonic in PATCHED:
                self.patches.add(insn.address, insn.bytes[0], insn.mnemonic)
                self.memory.write(insn.address, INT3)
                count += 1
        return count

    # ---- interrupts ------------------------------------------------------------
    def _irq(self, frame, line):
        """A device interrupt enters the kernel (irq.py decides what the COS gets)."""
        self.irqs.irq(line)
        if line == 0:
            self.ticks += 1
            self.work_due = self.work_due or self.ticks % WORK_EVERY == 0
            self.worlds.tick(frame)                # the scheduler: may start a switch
            if frame.vector == layout.GO_SWITCH:
                return                             # the rest is the switch's (worlds.switch_step)
        ring = frame.cs & 3
        if ring == 3:
            self.worlds.guard(frame, lambda: self.worlds.current.vmm.deliver_pending(frame))
        elif ring == 1:                            # (Frame.from_cos)
            if self.work_due:
                self.work_due = False
                self.go_away(frame, "work")        # the COS waits: its interrupts queue
            else:
                self.deliver_pending(frame)

    def cos_wants_interrupt(self):
        """A line is pending that the COS's virtual IMR and IF let in now."""
        return bool(self.vcpu.vif and vpic.ready(self.vcpu))

    def deliver_pending(self, frame):
        """Inject the lowest pending line the COS's virtual PIC does not mask, if
        its virtual IF allows. A masked line stays pending (vpic.py)."""
        v = self.vcpu
        ready = vpic.ready(v)
        if ready and v.vif:
            line = (ready & -ready).bit_length() - 1
            try:
                frame.check_stack(below=12)            # EFLAGS, CS, EIP: the line stays pending
            except StackPastLimit as e:
                contain.stack_refused(self, frame, e, f"IRQ {line}")
                return
            v.pending &= ~(1 << line)
            self.irqs.delivered(line)
            self.inject(frame, IRQ_BASE + line, external=True)

    def go_away(self, frame, why):
        """Leave the COS's frame on the kernel stack and idle ("idle": sti; hlt)
        or do kernel work ("work"); the stub comes back to `dispatch` after."""
        self.away_frame, self.away = frame.address, why
        frame.vector = layout.GO_IDLE if why == "idle" else layout.GO_WORK
        self.trace.emit(f"kernel.{why}")

    def resume(self, frame):
        if self.work_due:                          # a tick came while idle: work first
            self.work_due = False
            self.go_away(frame, "work")
            return
        if self.worlds.cos_would_idle(frame):      # a VM runs instead (worlds.py)
            return
        if self.away == "idle" and not self.cos_wants_interrupt():
            frame.vector = layout.GO_IDLE
            return
        self.away_frame = self.away = None
        self.trace.emit("kernel.cos_runs", pending=self.vcpu.pending)
        self.deliver_pending(frame)

    def shared_at(self, port):
        """(sharing front, register offset) if `port` belongs to a shared device the kernel fronts."""
        for d in self.devices:
            if d.name in self.shared and self.classes.get(d.name) == "shared" and port in d.ports:
                return self.shared[d.name], port - d.base
        return None, None

    def work_done(self):
        return self.memory.read_u32(self.base + layout.WORK_DONE)

    def cos_ticks(self):
        return self.memory.read_u32(cos_layout.TICKS)

    # ---- devices ---------------------------------------------------------------
    def handover(self, address):
        """The COS hands over its device list (claim 5); the default policy applies."""
        self.devices = devices.read_cos_list(self.memory, address)
        self.memory.write(self.base + layout.DEVICES, self.memory.read(address, 8 + 16 * len(self.devices)), code=False)
        self.trace.emit("kernel.handover", devices=" ".join(d.name for d in self.devices))
        policy = {cls: [n for n in names if n in {d.name for d in self.devices}]
                  for cls, names in devices.DEFAULT_POLICY.items()}
        known = {n for names in policy.values() for n in names}
        policy["host-managed"] += [d.name for d in self.devices if d.name not in known]
        self.apply_policy(policy)

    def apply_policy(self, policy):
        """Validate, then enforce; on error nothing changes and the old policy stays."""
        try:
            devices.check_policy_shape(policy)
            classes = self.classify(self.devices, policy)
            devices.check_classes(self.devices, classes)       # the kernel's own limits
        except devices.ClassificationError as e:
            self.trace.emit("kernel.policy_refused", why=str(e))
            raise
        devices.write_bitmap(self, devices.bitmap_for(self.devices, classes))
        self.irqs.routes = {d.irq: classes[d.name] for d in self.devices if d.irq is not None}
        self.classes = dict(classes)
        for d in self.devices:
            if classes[d.name] == "shared" and d.kind == "scsi" and d.name not in self.shared:
                self.shared[d.name] = SharedSCSI(self, d)
                self.irqs.shared[d.irq] = self.shared[d.name].completion
            if classes[d.name] == "shared" and d.kind == "nic" and d.name not in self.shared:
                self.shared[d.name] = SharedNIC(self, d)       # claim 8: frames sorted by MAC
                self.irqs.shared[d.irq] = self.shared[d.name].completion
        for d in self.devices:
            self.trace.emit("kernel.classify", device=d.name, cls=classes[d.name])
        return classes

    def inject(self, frame, vector, error=None, external=False):
        """Deliver `vector` to the COS through the COS's own (virtual) IDT, its gate
        checked as the CPU checks one, and against the COS's limit (cos_idt.py)."""
        return cos_idt.deliver(self, frame, vector, error, external)

    def reflect(self, frame, vector):
        """A fault of the COS's own making: its own handler gets it, after ours."""
        self.trace.emit("kernel.reflect", vector=vector, eip=frame.eip)
        error = frame.error if vector in ERROR_CODE_VECTORS else None
        try:
            self.inject(frame, vector, error)
        except StackPastLimit as e:                   # it would fault again at once: as a CPU
            contain.stack_refused(self, frame, e, f"vector {vector:#x}")   # shuts down on a
            cos_idt.shutdown(self, frame, f"its stack cannot take vector {vector:#x}: {e}")   # triple fault
