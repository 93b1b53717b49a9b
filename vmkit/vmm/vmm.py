"""A virtual machine monitor: one per VM (claims 12, 33).

The guest runs at CPL 3 with flat segments and its own page directory
(paging.py), which maps its memory at linear 0: its code is linked at 0,
wherever its pages lie in host memory (host [base, base + size)). Every
guest address the VMM is given (EIP, ESP, the guest's IDT, a disk or
network buffer it names) goes through `host`, the one checked guest -> host
translation: outside the guest's memory it is that VM's fault (GuestFault),
never a read or write elsewhere. Everything privileged it does faults into
the kernel, whose dispatcher hands the VM world's faults here:

  cli, sti, hlt, lidt   #GP (CPL 3 > IOPL 0): emulated on the virtual CPU
  in, out               #GP (the VM TSS has no I/O bitmap): a virtual 16550
                        at 0x3F8 (its output is the VM's console) and a
                        virtual PIC at 0x20/0x21 (EOIs recorded, nothing more)
  iretd                 would not trap at CPL 3 and would drop IF silently, so
                        it is patched to int3, as the kernel patches the COS
                        (traps.py), where the guest can execute it: code
                        reached from its entry at install and from its IDT's
                        handlers at each lidt (reach.py). #GP through the
                        kernel's DPL<3 gate 3, or #BP, lands here
  #PF                   an access outside the VM's memory (not present or
                        supervisor-only in its page directory, kernel/paging.py):
                        stops its VM only, CR2 and the error code in the why
  anything else         a fault of the guest's own making stops its VM only.

The VMM's state lives in kernel-controlled memory, in the VM's VMM region
(region.py, which also holds the GDT, IDT and x86 its guest's faults enter
through), read and written where it lives: the virtual CPU (virtual IF,
virtual IDTR, its virtual PIC's pending and in-service bitmaps, as the COS's:
cos_vcpu.py) and the patch list (the COS's table layout, patches.py), which
the VMM consults on every trap. Timer ticks are injected through the guest's
own IDT exactly as Kernel.inject does for the COS.
"""
import functools

from vmkit.hw.x86 import EFLAGS_IF, GATE_INT32, GATE_TRAP32, decode_gate
from vmkit.kernel.cos_vcpu import CosVcpu
from vmkit.kernel import decoder, layout, patches
from vmkit.kernel.errors import GuestFault
from . import reach, region

SERIAL, SERIAL_LSR = 0x3F8, 0x3FD
PAGE_FAULT = 14                 # a guest access outside its memory (its page directory, paging.py)
VM_TIMER_VECTOR = 0x20          # the guest's IDT entry for its virtual timer (IRQ 0)
INT3, IRETD = 0xCC, "iretd"
PATCH_CAPACITY = patches.capacity(layout.VMM_ENTRIES - layout.VMM_PATCHES)   # its region's table: 223
GUEST_FLAGS = 0x0CD5            # CF PF AF ZF SF DF OF: what a guest's iretd may set for real
_gate = functools.lru_cache(maxsize=256)(decode_gate)    # a guest's few timer/disk gates, each decoded once


class VMM:
    ENTRY = region.ENTRY        # where its x86 enters this Python (vmm_entry), from its region's start
    build_region = staticmethod(region.build)     # its GDT, IDT and x86 (region.py)
    tables = staticmethod(region.tables)          # a VM world's GDTR and IDTR
    entered = staticmethod(region.entered)        # the Python VMM at vmm_entry
    pass_interrupts = staticmethod(region.pass_interrupts)   # ... passed by in C when it would only return
    disk = None                 # its virtual disk adapter (vdisk_device.py), once one is attached
    net = None                  # its network port (net_device.py), once one is attached

    def __init__(self, kernel, name, base, size, region, cpu=0):
        """region: the host address of its VMM region (region.build wrote it, zeroed)."""
        self.kernel, self.name, self.base, self.size = kernel, name, base, size
        self.cpu = kernel.board.cpus[cpu]                   # the CPU its world is placed on
        self._processor = kernel.worlds.cpus[cpu]           # (the scheduler's: its mapping cache)
        self.memory, self.trace = kernel.memory, kernel.trace
        self.region = region
        self.vcpu = CosVcpu(self.memory, region + layout.VMM_VCPU)    # same layout as the COS's
        self.patches = patches.PatchTable(self.memory, region + layout.VMM_PATCHES, PATCH_CAPACITY)
        self.console = bytearray()
        self._line = bytearray()
        self._code = set()          # a decoder's cache: guest addresses decoded so far (reach.py)

    @staticmethod
    def check_guest(code, entry):
        """Refuse, before the VM exists, a guest whose code reachable from `entry` holds
        more iretd than its patch table holds (else its install would stop it at once)."""
        found = reach.reachable(code, 0, [entry], set())
        count = sum(1 for mnemonic in found.values() if mnemonic == IRETD)
        if count > PATCH_CAPACITY:
            raise GuestFault(f"its code holds {count} iretd its VMM must patch; its patch table "
                             f"(VMM_PATCHES in its VMM region) holds {PATCH_CAPACITY}")

    @property
    def cache(self):
        """Its CPU's mapping cache (kernel/mapcache.py): every guest-memory access
        of the VMM (the guest's IDT, its lidt pointer, its stack) is a load or store
        its CPU makes at the window address, translated by that CPU's MMU."""
        return self._processor.cache             # (an exercise may give a CPU another cache)

    def owns(self, address, length=1):
        """Guest addresses address .. address + length - 1 all lie in its memory (0 .. size)."""
        return 0 <= address and 0 <= length and address + length <= self.size

    def host(self, address, length=1, what="an access"):
        """The host (physical) address of guest address `address`, checked: the
        whole range address .. address + length - 1 must lie in the guest's memory,
        else GuestFault naming `what` (the VM's fault: only it stops). The guest's
        memory is one run of host pages, so one check covers the range."""
        if not self.owns(address, length):
            raise GuestFault(f"{what} at guest address {address:#x} (+{length}) is outside "
                             f"the VM's memory (0..{self.size - 1:#x})")
        return self.base + address

    def patch(self, *starts):
        """iretd -> int3 in the guest code control can reach from `starts` (its
        entry point at install; the handlers its IDT names at each lidt):
        recursive descent (reach.py), so a 0xCF in its data is left alone.
        `starts` and the patch list (`patches`, in its VMM region) are guest
        addresses; the bytes are read and patched in host memory (`host`)."""
        self.trace.emit("vmm.patch", vm=self.name, count=self._patch(starts))

    def _patch(self, starts):
        """Returns how many iretd were patched now. More than its table holds: the
        VM's fault, before any byte changes (an iretd left unpatched would run as
        the CPU's own, dropping the guest's IF silently)."""
        code = self.memory.read(self.base, self.size)
        found = reach.reachable(code, 0, starts, self._code)        # linked at guest address 0
        new = [address for address, mnemonic in found.items() if mnemonic == IRETD]
        table = self.patches
        if len(table) + len(new) > table.capacity:
            raise GuestFault(f"{len(table) + len(new)} iretd to patch: its patch table (VMM_PATCHES "
                             f"in its VMM region) holds {table.capacity}")
        for address in new:
            at = self.host(address)
            table.add(address, self.memory.read(at, 1)[0], IRETD)
            self.memory.write(at, bytes([INT3]))
        return len(new)

    def patch_handlers(self):
        """The guest executed lidt: each handler its IDT names is code it can run."""
        v = self.vcpu
        gates = [v.idt_base + 8 * i for i in range(min(256, (v.idt_limit + 1) // 8))]
        gates = [decode_gate(self.memory.read(self.host(g, 8), 8)) for g in gates if self.owns(g, 8)]
        handlers = [g.offset for g in gates if g.present and g.type in (GATE_INT32, GATE_TRAP32)]
        new = self._patch(handlers)
        if new:
            self.trace.emit("vmm.patch", vm=self.name, count=new, at="lidt")

    # ---- traps ---------------------------------------------------------------
    def trap(self, frame, vector, reached=False):
        """A fault of the guest. Returns "run" (go on), "halt" (nothing to do until
        its next interrupt); raises GuestFault if the VM must stop. reached: as `inject`'s
        (the VMM's entry saw its CPU at CPL 0 with paging on: its window reachable)."""
        v = self.vcpu
        v.traps += 1
        eip = frame.eip
        if vector == 3 and self.patches.get(eip - 1) == IRETD:      # its table, read where it lives
            frame.eip = eip - 1
            return self._iretd(frame, reached)
        if vector == PAGE_FAULT:                 # outside its memory: its page directory (paging.py)
            cr2 = self.cpu["cr2"]
            raise GuestFault(f"vector {vector:#x} at {eip:#x}: page fault, "
                             f"{'write' if frame.error & 2 else 'read'} of {cr2:#x} "
                             f"({'supervisor' if frame.error & 1 else 'not present'} page)")
        if vector != 13 or not 0 <= eip < self.size:        # (owns(eip))
            raise GuestFault(f"vector {vector:#x} at {eip:#x}")
        at = self.base + eip                     # its bytes in host memory (the decoder reads physical)
        # its patched iretd, known without decoding (the byte read first: the table is a search)
        if self.memory._view[at] == INT3 and self.patches.get(eip) == IRETD:   # (at: in its memory)
            return self._iretd(frame, reached)
        insn = decoder.decode(self.memory, at)
        if insn is not None and not self.owns(eip, insn.size):   # decoded from host bytes past it
            raise GuestFault(f"#GP at {eip:#x}: an instruction that runs past the end of its "
                             f"memory ({self.size:#x}), refused by its code segment's limit")
        name = insn.mnemonic if insn else "?"
        if name in ("cli", "sti"):
            v.vif = 1 if name == "sti" else 0
        elif name == "hlt":
            frame.eip = eip + insn.size
            self.trace.emit("vmm.emulate", vm=self.name, insn=name, vif=v.vif)
            if v.pending and v.vif:
                self.deliver_pending(frame)
                return "run"
            return "halt"
        elif name == "lidt":
            address = self._address(frame, insn.operands[0])
            pointer = self.cache.read(self.host(address, 6, "lidt of a table pointer"), 6)
            v.idt_limit, v.idt_base = int.from_bytes(pointer[:2], "little"), int.from_bytes(pointer[2:], "little")
        elif name in ("in", "out"):
            self._port_io(frame, insn)
        else:
            raise GuestFault(f"#GP at {eip:#x} ({name} {insn.op_str if insn else ''})")
        frame.eip = eip + insn.size
        if name not in ("in", "out"):
            self.trace.emit("vmm.emulate", vm=self.name, insn=name, vif=v.vif)
        if name == "sti":
            self.deliver_pending(frame)
        elif name == "lidt":
            self.patch_handlers()
        return "run"

    @staticmethod
    def _address(frame, op):
        mem = op.mem
        value = lambda reg: getattr(frame, decoder.reg_name(reg)) if reg else 0
        return (value(mem.base) + value(mem.index) * mem.scale + mem.disp) & 0xFFFFFFFF

    def _port_io(self, frame, insn):
        port = insn.io[0]                                  # (decoded once: decoder.Decoded)
        if port is None:
            port = frame.edx & 0xFFFF
        if self.disk is not None and self.disk.claims(port):
            return self._disk_port(frame, insn.mnemonic, port)
        if self.net is not None and self.net.claims(port):
            return self.net.port_io(frame, insn.mnemonic, port)
        if insn.mnemonic == "out":
            value = frame.eax & 0xFF
            if port == SERIAL:
                self._serial(value)
            elif port == 0x20 and value & 0x38 == 0x20:
                self.vcpu.eoi()                            # virtual PIC: EOI (recorded only)
            return
        value = 0x60 if port == SERIAL_LSR else 0xFF       # LSR: transmitter empty
        frame.eax = (frame.eax & ~0xFF) | value

    def _disk_port(self, frame, mnemonic, port):
        """in/out on its virtual disk adapter: whole 32-bit registers (vdisk_device.py)."""
        if mnemonic == "out":
            self.disk.write(port, frame.eax)
        else:
            frame.eax = self.disk.read(port)

    def _serial(self, byte):
        self.console.append(byte)
        if byte == 0x0A:
            self.trace.emit("vm.console", vm=self.name, line=self._line.decode("latin-1"))
            self._line.clear()
        else:
            self._line.append(byte)

    def _iretd(self, frame, reached=False):
        """The guest's patched iretd: pop EIP, CS, EFLAGS; its IF goes to the virtual IF.
        reached: as `inject`'s."""
        esp = frame.esp
        if not 0 <= esp <= self.size - 12:                       # (owns(esp, 12))
            raise GuestFault(f"iretd with the stack outside the VM's memory ({esp:#x})")
        cache, at = self.cache, self.base + esp      # (host's: owned) one check for the three pops,
        eip, _, eflags = cache.pop(at, 3, reach_checked=reached)  # each word through the window
        frame.esp = esp + 12
        frame.eip, frame.cs = eip, layout.USER_CODE_SEL | layout.USER_RPL   # never a ring below 3
        self.vcpu.vif = 1 if eflags & EFLAGS_IF else 0
        frame.eflags = (eflags & GUEST_FLAGS) | EFLAGS_IF | 2      # never IOPL, VM, NT from a guest
        self.deliver_pending(frame, reached=True)   # (the pops went through the window: reachable)
        return "run"

    # ---- interrupts ------------------------------------------------------------
    def tick(self):
        """A timer tick for this VM: pending until its virtual IF lets it in."""
        self.vcpu.pending |= 1

    def deliver_pending(self, frame, reached=False):
        """The lowest pending line of its virtual PIC (0: the timer; a virtual disk's line).
        reached: as `inject`'s."""
        v = self.vcpu
        pending = v.pending
        if pending and v.vif:
            line = (pending & -pending).bit_length() - 1
            v.pending = pending & ~(1 << line)
            self.inject(frame, VM_TIMER_VECTOR + line, reached)
            v.delivered(line)                            # its virtual ISR, as the COS's (irq.py)

    def raise_line(self, line):
        """The kernel's instruction to raise an interrupt (claim 18's input path): line
        `line` of the VM's virtual PIC is pending; it is injected through the guest's own
        IDT (gate 0x20 + line) as soon as the guest's virtual IF lets it in: a guest
        halted on an idle CPU is switched to at once (Worlds.wake)."""
        self.vcpu.pending |= 1 << line
        self.trace.emit("vmm.raise", vm=self.name, line=line)
        self.kernel.worlds.wake(self)           # halted on an idle CPU: it runs now, not at a tick

    def inject(self, frame, vector, reached=False):
        """Through the guest's own IDT, onto the guest's own stack (flat: SS base 0).
        reached: the caller saw its CPU at CPL 0 with paging on, nothing run since (its
        mapping window reachable: the cache need not read CS and CR0 again)."""
        v, esp, size = self.vcpu, frame.esp, self.size
        gate_at = v.idt_base + vector * 8
        if vector * 8 + 7 > v.idt_limit or not 0 <= gate_at <= size - 8:      # (owns(gate_at, 8))
            raise GuestFault(f"no gate for vector {vector:#x} in the guest's IDT")
        if not 12 <= esp <= size:                                             # (owns(esp - 12, 12))
            raise GuestFault(f"interrupt with the stack outside the VM's memory ({esp:#x})")
        cache, base = self.cache, self.base     # (both ranges owned: checked above, as `host` checks)
        gate = _gate(cache.read(base + gate_at, 8, reach_checked=reached))
        if not gate.present or gate.type not in (GATE_INT32, GATE_TRAP32):
            raise GuestFault(f"gate {vector:#x} in the guest's IDT is not a present interrupt or "
                             f"trap gate (a CPU would raise #NP or #GP delivering through it)")
        vif = v.vif
        cache.push(base + esp - 12, (frame.eflags & ~EFLAGS_IF) | (EFLAGS_IF if vif else 0),
                   frame.cs, frame.eip,         # three pushes, in the CPU's order
                   reach_checked=True)          # (by the gate's read: nothing has run since)
        frame.esp, frame.eip = esp - 12, gate.offset
        if gate.type == GATE_INT32 and vif:      # an interrupt gate clears IF; a trap gate does not
            v.vif = 0
        v.injected += 1
        self.trace.emit("vmm.inject", vm=self.name, vector=vector, handler=gate.offset)
