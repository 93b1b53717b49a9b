"""The board: memory, CPUs, interrupt controller, timer, serial, keyboard
controller, the sensor, NICs, SCSI.

It keeps the virtual clock (retired instructions) and the one trace, and
runs the CPUs round-robin on one thread in slices: `lock`-prefixed
instructions are not atomic between two Unicorn instances on two threads
(measured), and one thread keeps every run deterministic.

Between slices the board fires due device events (`schedule`) and, as the
INTR pin of a PC would, delivers the interrupt controller's request to
CPU 0 when its IF allows. A slice never runs past the next device event,
so a timer programmed for every N instructions interrupts every N. A CPU
that halts with IF set while the controller has a request wakes at once,
as `hlt` does on a real CPU with INTR asserted: its slice ends there and
the next round delivers the interrupt.

The firmware does what a multiboot loader does before jumping to a
kernel: a flat GDT (0x08 ring-0 code, 0x10 ring-0 data, 0x1B/0x23 ring-3
code/data) at FIRMWARE_GDT, CS/DS/ES/FS/GS/SS loaded, IDTR empty (any
interrupt before the software loads an IDT is a triple fault), EIP at the
entry point. It also leaves a device table at DEVICE_TABLE so software can
enumerate the board (see docs/machine.md).
"""
import heapq
import itertools
import numbers
import os
import struct

from .asm import assemble
from . import unicorn_quirks
from .cpu import CPU
from .memory import PhysicalMemory
from .pic import PICPair
from .pit import PIT
from .kbd import KeyboardController
from .lapic import LocalAPIC
from .ports import PortBus
from .sensor import Sensor
from .trace import Trace
from .uart import UART
from .x86 import encode_segment, CODE_RX, DATA_RW

FIRMWARE_GDT = 0x500
DEVICE_TABLE = 0x600
FREE_MEMORY = 0x1000
KERNEL_CS, KERNEL_DS, USER_CS, USER_DS = 0x08, 0x10, 0x1B, 0x23
NIC_PORTS, NIC_IRQS = (0xC000, 0xC040), (10, 9)
SCSI_PORT, SCSI_IRQ = 0xC100, 11
# Unicorn cannot tell us when the CPU sets IF, so while a request waits on a
# CPU with IF clear (a kernel trap handler, a cli section) the C counter reads
# EFLAGS before each instruction and stops the run at the first boundary with
# IF set (CPU.run's `wake`): the interrupt is taken there, as on the INTR pin,
# and a long cli section costs one run, not one per instruction. In sti's
# one-instruction shadow the board steps the CPU INTR_POLL instructions at a time. (Measured: a 16-instruction poll resonated
# with a 16-instruction trap loop, landing in the kernel every time, and an
# IRQ waited forever; stepping by 1 made a kernel looping with IF clear cost
# one emu_start per instruction, ~30 times slower.)
INTR_POLL = 1
MAX_MEMORY = 1 << 30          # the host allocates (and zeroes) all of it at once
KBD_PORT, KBD_PORTS, KBD_IRQ = 0x60, 5, 1
SENSOR_PORT, SENSOR_PORTS, SENSOR_IRQ = 0x300, 4, 5


def _count(n):
    """A whole number (not True/False, which Python also counts as ints)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool)


def _check_instructions(n, what):
    if not _count(n) or n < 0:
        raise ValueError(f"{what}: a number of instructions >= 0 (virtual time), not {n!r}")


class MachineStopped(RuntimeError):
    """No CPU can run any more (a triple fault, a kernel panic): whatever was
    awaited will never happen, and the reason is the CPU's own."""


class Board:
    def __init__(self, memory=16 << 20, cpus=1, slice=20_000, disk=None, nics=0,
                 keyboard=True, sensor=True):
        """disk: a DiskImage or the path of one, behind the SCSI controller;
        nics: how many NICs (0..2) to fit; wire them with `Wire(a, b)`;
        keyboard: fit the 8042 keyboard controller (`board.keyboard`);
        sensor: fit the sensor (`board.sensor`; it samples only when told:
        `board.sensor.sample()` or `board.sensor.start(period)`)."""
        if not _count(cpus) or cpus not in (1, 2):
            raise ValueError(f"the board has one or two CPUs, not {cpus!r}")
        if not _count(nics) or not 0 <= nics <= len(NIC_PORTS):
            raise ValueError(f"the board has room for 0..{len(NIC_PORTS)} NICs, not {nics!r}")
        if not _count(slice) or slice < 1:
            raise ValueError(f"a slice is a positive number of instructions, not {slice!r}")
        if not _count(memory) or not 0 < memory <= MAX_MEMORY:
            raise ValueError(f"memory is a number of bytes up to {MAX_MEMORY >> 20} MiB "
                             f"(the host allocates all of it), not {memory!r}")
        self.clock = 0                         # virtual time at the start of the current round
        self.slice = slice
        self.running_cpu = None                # the CPU inside emu_start, if any
        self._polling = self._shadow = False   # stepping CPU 0 while INTR waits on IF
        self._round_end = 0
        self.trace = Trace(self.now)
        self.memory = PhysicalMemory(memory)
        self.ports = PortBus()
        self._events = []                      # (time, seq, fn): device events in virtual time
        self._seq = itertools.count()
        self.pic = PICPair(self)
        self.pit = PIT(self)
        self.uart = UART(self)
        self.devices = [("pic", 0x20, 2, None), ("pit", 0x40, 4, 0), ("serial", 0x3F8, 8, 4)]
        self.keyboard = self.sensor = None
        if keyboard:
            self.keyboard = KeyboardController(self, KBD_PORT, KBD_IRQ)
            self.devices.append(("kbd", KBD_PORT, KBD_PORTS, KBD_IRQ))
        if sensor:
            self.sensor = Sensor(self, SENSOR_PORT, SENSOR_IRQ)
            self.devices.append(("sensor", SENSOR_PORT, SENSOR_PORTS, SENSOR_IRQ))
        self.nics = []
        for i in range(nics):
            from .nic import NIC
            mac = bytes([0x02, 0x00, 0x00, 0x00, 0x00, i + 1])
            self.nics.append(NIC(self, NIC_PORTS[i], NIC_IRQS[i], mac, f"nic{i}"))
            self.devices.append(("nic", NIC_PORTS[i], 64, NIC_IRQS[i]))
        self.scsi = None
        self.closing = []                      # callables: what else stops with the board (a bridge)
        if disk is not None:
            from .disk import DiskImage, DiskImageError
            from .scsi import SCSIController
            if not isinstance(disk, (DiskImage, str, bytes, os.PathLike)):
                raise TypeError(f"disk: a DiskImage or the path of a disk image file, not {disk!r:.40}")
            if isinstance(disk, DiskImage) and disk.closed:
                raise DiskImageError(f"{disk.path}: the disk image is closed")
            if not isinstance(disk, DiskImage):
                disk = DiskImage.open(disk)          # a clear DiskImageError if it is not usable
            self.scsi = SCSIController(self, SCSI_PORT, SCSI_IRQ, disk)
            self.devices.append(("scsi", SCSI_PORT, 16, SCSI_IRQ))
        self.cpus = [CPU(i, self) for i in range(cpus)]
        for cpu in self.cpus:
            cpu.lapic = LocalAPIC(self, cpu.index)   # each CPU's own timer and IPIs (lapic.py)
        for cpu in self.cpus[1:]:
            cpu.halted = True                  # application processors wait to be started
        self._write_firmware_tables()

    @property
    def cpu(self):
        return self.cpus[0]

    # ---- firmware ----------------------------------------------------------
    def _write_firmware_tables(self):
        flat = 0xFFFFFFFF
        gdt = (bytes(8) + encode_segment(0, flat, CODE_RX, 0) + encode_segment(0, flat, DATA_RW, 0)
               + encode_segment(0, flat, CODE_RX, 3) + encode_segment(0, flat, DATA_RW, 3))
        self.memory.write(FIRMWARE_GDT, gdt)
        table = struct.pack("<4sI", b"VMKB", len(self.devices))
        for kind, base, count, irq in self.devices:
            table += struct.pack("<8sHHbxxx", kind.encode(), base, count, -1 if irq is None else irq)
        self.memory.write(DEVICE_TABLE, table)

    def load(self, address, code):
        """Put bytes (or assembly text, assembled for `address`) into memory.
        Nothing to load, or something that is neither, is refused unwritten."""
        if not _count(address):
            raise TypeError(f"load at an address (a whole number), not {address!r}")
        if isinstance(code, str):
            code = assemble(code, address)
        elif isinstance(code, (bytes, bytearray, memoryview)):
            code = bytes(code)
        else:
            raise TypeError(f"load takes bytes or x86 source (str), not {type(code).__name__} {code!r:.40}")
        if not code:
            raise ValueError(f"nothing to load at {address:#x}: the code is empty")
        self.memory.write(address, code)
        self.trace.emit("load", address=address, size=len(code))
        return len(code)

    def boot(self, entry, stack=0x9F000, cpu=0):
        """Start a CPU at `entry`, CPL 0, flat segments, no IDT (see module doc)."""
        if not _count(cpu) or not 0 <= cpu < len(self.cpus):
            raise ValueError(f"no CPU {cpu!r}: the board has CPUs 0..{len(self.cpus) - 1}")
        for what, at, end in (("entry", entry, self.memory.size - 1), ("stack", stack, self.memory.size)):
            if not _count(at) or not 0 <= at <= end:
                raise ValueError(f"{what} {at!r} is not an address in the machine's "
                                 f"{self.memory.size:#x} bytes of memory")
        c = self.cpus[cpu]
        c["gdtr"] = (0, FIRMWARE_GDT, 5 * 8 - 1, 0)
        c["idtr"] = (0, 0, 0, 0)
        c["cr0"] = (c["cr0"] | 1) & ~0x80000000
        c["cs"] = KERNEL_CS
        for seg in ("ds", "es", "fs", "gs", "ss"):
            c[seg] = KERNEL_DS
        c["esp"], c["eip"], c["eflags"] = stack, entry, 0x2
        c.halted, c.shutdown = False, None
        if self.running_cpu is not c:
            c.lead = self.now() - self.clock    # started mid-round (by another CPU): from now on
        self.trace.emit("boot", cpu, entry=entry, stack=stack)

    # ---- virtual time --------------------------------------------------------
    def now(self):
        """Virtual time: exact even in the middle of a CPU's slice."""
        cpu = self.running_cpu
        if cpu is None:
            return self.clock
        state = cpu._count_state             # (CPU.progress, inlined: every trace event asks)
        return self.clock + cpu.lead + cpu.done + state.count

    def schedule(self, delay, fn):
        """Call fn() `delay` retired instructions from now.

        If that falls inside the slice running now, the running CPU is
        stopped at once, so the event fires on time."""
        due = self.now() + max(1, int(delay))
        heapq.heappush(self._events, (due, next(self._seq), fn))
        if self.running_cpu is not None and due < self._round_end:
            self.running_cpu.request_stop()

    def _fire_due_events(self):
        while self._events and self._events[0][0] <= self.clock:
            heapq.heappop(self._events)[2]()

    def interrupt_pending(self, cpu):
        """Is an interrupt controller asking `cpu` for an interrupt (IF aside)?
        Its local APIC, and for CPU 0 the 8259A pair on its INTR pin."""
        return cpu.lapic.has_request() or (cpu is self.cpus[0] and self.pic.has_request())

    def _deliver_interrupts(self):
        """(interrupt_pending, inlined: each controller asked once, the local APIC first)"""
        pic, first = self.pic, self.cpus[0]
        for cpu in self.cpus:
            if cpu.shutdown is not None:
                continue
            lapic = cpu.lapic
            local = lapic.has_request()
            if not (local or cpu is first and pic.has_request()) or not cpu.interrupts_enabled:
                continue
            if not cpu.halted and self._after_sti(cpu):
                # sti's shadow: no interrupt before the instruction after sti, or an
                # idle loop's `sti; hlt` would take it and then halt with it handled
                # but its work undone (a lost wake-up, seen when a slice ended on sti)
                self._shadow = True
                continue
            cpu.deliver(lapic.acknowledge() if local else pic.acknowledge(), "irq")

    def _after_sti(self, cpu):
        return unicorn_quirks.irq_inhibited(cpu.uc)

    def run(self, instructions):
        """Advance virtual time by `instructions`, the CPUs taking turns.

        Each round runs every CPU up to the round's end. A CPU stopped
        early (a device scheduled an event inside the round) ends the round
        there for the CPUs after it; one that had already run further keeps
        the difference as its `lead` and runs that much less next round."""
        _check_instructions(instructions, "run")
        end = self.clock + instructions
        events, cpus = self._events, self.cpus
        while self.clock < end:
            if events and events[0][0] <= self.clock:
                self._fire_due_events()
            self._deliver_interrupts()
            # one CPU needs no turns: it runs to the next device event (each slice costs an
            # emu_start round trip, ~15% of a 20,000-instruction slice of a register loop)
            step = min(self.slice if len(self.cpus) > 1 else end - self.clock, end - self.clock)
            if self._events:
                step = min(step, self._events[0][0] - self.clock)
            # (the controllers first: asking them is Python, EFLAGS a call into Unicorn)
            waiting = [c for c in cpus if not c.halted and c.shutdown is None
                       and self.interrupt_pending(c) and (self._shadow or not c.interrupts_enabled)]
            # INTR is up but IF is clear: the counter stops the CPU where IF becomes set, and
            # the slice runs on to its end; in sti's shadow look again after one instruction
            self._polling = self._shadow
            self._shadow = False
            if self._polling and waiting:
                step = min(step, INTR_POLL)
            self._round_end = self.clock + step
            for cpu in cpus:
                budget = self._round_end - self.clock - cpu.lead
                if budget > 0:
                    self.running_cpu = cpu
                    try:
                        cpu.lead += cpu.run(budget, cpu in waiting)
                    finally:
                        self.running_cpu = None
                self._round_end = min(self._round_end, self.clock + cpu.lead)
            length = self._round_end - self.clock
            for cpu in cpus:
                cpu.lead -= length
            self.clock += length
        self._fire_due_events()

    def step(self):
        """One instruction on CPU 0 (interrupts due now are delivered first)."""
        self.run(1)

    def run_until(self, condition, limit, what="the condition"):
        """Run until condition() holds, checking between slices; error after `limit`."""
        _check_instructions(limit, "run_until's limit")
        if not callable(condition):
            raise TypeError(f"run_until waits for a condition: a function, not {condition!r:.40}")
        end = self.clock + limit
        while not condition():
            if self.clock >= end:
                raise TimeoutError(f"{what} did not happen within {limit} instructions")
            if self.stopped():
                raise MachineStopped(f"{what} did not happen: {self.stopped()}")
            self.run(min(self.slice, end - self.clock))
        return self.clock

    def stopped(self):
        """Why the machine can run no more, or None. A CPU halted with IF clear
        wakes only when another CPU starts it, so once some CPU has shut down and
        every other is shut down or so halted, nothing will ever run again."""
        dead = [c for c in self.cpus if c.shutdown]
        if dead and all(c.shutdown or (c.halted and not c.interrupts_enabled) for c in self.cpus):
            return f"CPU {dead[0].index} stopped: {dead[0].shutdown}"
        return None

    def close(self):
        """Flush and release what the board holds on the host (the disk image, a bridge's socket)."""
        if self.scsi is not None:
            self.scsi.close()
        while self.closing:
            self.closing.pop()()
