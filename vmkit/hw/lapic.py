"""A local APIC per CPU: each CPU's own timer and inter-processor interrupts.

The 8259A pair reaches CPU 0 only (its INTR pin), so a second CPU needs an
interrupt source of its own to be scheduled at all (claim 16): on a PC that
is the CPU's local APIC. This models the part of it a kernel needs, with the
standard register offsets (Intel SDM vol. 3, ch. 11):

  0x020 ID              the APIC ID (= the CPU's index), read-only
  0x0B0 EOI             write: the in-service vector is done
  0x300 ICR low         write: send an IPI (bits 0-7 vector; delivery mode
                        bits 8-10 must be 0, fixed)
  0x310 ICR high        bits 24-31: the destination APIC ID
  0x320 LVT timer       bits 0-7 vector, bit 16 masked, bit 17 periodic
  0x380 initial count   write: start counting down (0 stops the timer)
  0x390 current count   read-only
The timer's input clock is virtual time, one count per retired instruction
of the board's clock (the divide register is not modelled: divide by 1).

Pending vectors sit in IRR; acknowledging moves the highest to ISR; EOI
clears the highest in ISR. A vector is delivered only when it is above every
vector in service, so a CPU busy in its timer handler does not take its own
next tick until it sends EOI (no priority classes beyond that).

The registers are memory-mapped at BASE (0xFEE00000, the APIC's default),
in each CPU's own address map (its Unicorn's `mmio_map`), so the same address
reaches a different APIC from each CPU, as on a PC: a CPU's kernel x86 that
stores to BASE + 0x380 programs that CPU's timer and no other. Measured
(Unicorn 2.1.4): aligned dword loads and stores there reach the callbacks with
the register's offset and size 4, paging off or on (a page table mapping the
page to itself). `last_store` keeps, per register, the CPU and EIP of the x86
store that last wrote it. A store of something the APIC refuses (a reserved
timer vector, an IPI mode not modelled, a register not modelled) is dropped
and traced (`lapic.error`), as a real APIC notes it in its error register;
a load of a register not modelled reads 0. The kernel's Python still reaches
the registers by `read`/`write` where it runs on the CPU it programs.
"""
from unicorn.x86_const import UC_X86_REG_EIP as X86_REG_EIP

ID, EOI, ICR_LOW, ICR_HIGH = 0x020, 0x0B0, 0x300, 0x310
LVT_TIMER, TIMER_INITIAL, TIMER_CURRENT = 0x320, 0x380, 0x390
MASKED, PERIODIC = 1 << 16, 1 << 17
BASE, SIZE = 0xFEE00000, 0x1000


class LocalAPIC:
    def __init__(self, board, index):
        self.board, self.index = board, index
        self.irr = self.isr = 0                 # 256-bit sets of vectors, as ints
        self.lvt_timer = MASKED
        self.initial = 0
        self.icr_high = 0
        self.ticks = self.ipis_received = 0
        self._armed = 0                         # generation: reprogramming cancels the pending tick
        self._started_at = 0
        self.last_store = {}                    # register -> (CPU index, EIP) of the x86 store
        cpu = board.cpus[index]
        cpu.uc.mmio_map(BASE, SIZE, self._load, None, self._store, None)   # this CPU's map only

    # ---- the CPU's loads and stores at BASE (Unicorn's mmio callbacks) ---------
    def _load(self, uc, offset, size, _):
        try:
            return self.read(offset)
        except ValueError:
            return 0

    def _store(self, uc, offset, size, value, _):
        cpu = self.board.cpus[self.index]       # (the store is this CPU's: its own map)
        if cpu._intr is not None and cpu._intr.n:   # what intr.c delivered earlier in the run is
            cpu.drain_interrupts()                  # told first (intr.py), as CPU._callback does
        eip = uc.reg_read(X86_REG_EIP)
        try:
            self.write(offset, value)
        except ValueError as e:
            self.board.trace.emit("lapic.error", self.index, register=offset, value=value, eip=eip, why=str(e))
            return
        self.last_store[offset] = (next(c.index for c in self.board.cpus if c.uc is uc), eip)

    # ---- registers -----------------------------------------------------------
    def read(self, reg):
        if reg == ID:
            return self.index << 24
        if reg == LVT_TIMER:
            return self.lvt_timer
        if reg == TIMER_INITIAL:
            return self.initial
        if reg == TIMER_CURRENT:
            if not self.initial:
                return 0
            gone = self.board.now() - self._started_at
            if not self.lvt_timer & PERIODIC and gone >= self.initial:
                return 0
            return self.initial - gone % self.initial
        if reg == ICR_HIGH:
            return self.icr_high
        raise ValueError(f"local APIC register {reg:#x} is not modelled")

    def write(self, reg, value):
        value &= 0xFFFFFFFF
        if reg == EOI:
            self.eoi()
        elif reg == LVT_TIMER:
            if value & 0xFF < 16:
                raise ValueError(f"timer vector {value & 0xFF:#x}: vectors 0..15 are reserved")
            self.lvt_timer = value & (0xFF | MASKED | PERIODIC)
        elif reg == TIMER_INITIAL:
            self.initial = value
            self._armed += 1
            self._started_at = self.board.now()
            if value:
                self.board.schedule(value, lambda g=self._armed: self._fire(g))
            self.board.trace.emit("lapic.timer", self.index, count=value,
                                  vector=self.lvt_timer & 0xFF,
                                  periodic=bool(self.lvt_timer & PERIODIC))
        elif reg == ICR_HIGH:
            self.icr_high = value
        elif reg == ICR_LOW:
            self._send(value)
        else:
            raise ValueError(f"local APIC register {reg:#x} is not writable here")

    def program_timer(self, period, vector, periodic=True):
        """What a kernel does with two register writes: a tick every `period` instructions."""
        self.write(LVT_TIMER, vector | (PERIODIC if periodic else 0))
        self.write(TIMER_INITIAL, period)

    def send_ipi(self, destination, vector):
        self.write(ICR_HIGH, destination << 24)
        self.write(ICR_LOW, vector)

    # ---- interrupts ------------------------------------------------------------
    def _fire(self, generation):
        if generation != self._armed:
            return
        self.ticks += 1
        if not self.lvt_timer & MASKED:
            self.accept(self.lvt_timer & 0xFF)
        if self.lvt_timer & PERIODIC:
            self.board.schedule(self.initial, lambda: self._fire(generation))

    def _send(self, icr):
        vector, mode = icr & 0xFF, (icr >> 8) & 7
        if mode != 0:
            raise ValueError(f"IPI delivery mode {mode}: only fixed (0) is modelled")
        dest = self.icr_high >> 24
        if not 0 <= dest < len(self.board.cpus):
            raise ValueError(f"IPI to APIC ID {dest}: the board has {len(self.board.cpus)} CPUs")
        self.board.trace.emit("lapic.ipi", self.index, to=dest, vector=vector)
        target = self.board.cpus[dest].lapic
        target.ipis_received += 1
        target.accept(vector)

    def accept(self, vector):
        """A vector arrives at this APIC (its timer, or an IPI): pending in IRR."""
        self.irr |= 1 << vector
        running = self.board.running_cpu
        if running is not None and self.has_request():
            running.request_stop()             # the board delivers at the next boundary

    def has_request(self):
        return self.irr.bit_length() > self.isr.bit_length()

    def acknowledge(self):
        vector = self.irr.bit_length() - 1
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    def eoi(self):
        if self.isr:
            self.isr &= ~(1 << (self.isr.bit_length() - 1))
            if self.has_request():
                running = self.board.running_cpu
                if running is not None:
                    running.request_stop()

    def __repr__(self):
        return f"<local APIC {self.index}>"
