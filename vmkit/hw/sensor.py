"""The sensor: a small level-triggered teaching device at 0x300-0x303, IRQ 5.

Each sample (`sample()` from the host, or every `period` instructions of
virtual time once started) makes a new reading pending: the reading is a
u8 counter, 1, 2, 3, ... The device asserts its IRQ line while a reading
is pending and CONTROL's interrupt-enable bit is set, and keeps it
asserted until software reads DATA: reading DATA takes the reading and
acknowledges it, and the line drops. That is a level-triggered device:
the line says "I still need attention" for as long as it is true.

The device does not make the interrupt controller level-triggered; the
driver does, through the ELCR (0x4D0 bit 5 for line 5), as a PC's OS
does for PCI devices.

`jam()` makes it a stuck device: the line stays asserted whatever the
driver does (CONTROL is ignored, reading DATA no longer lowers it), until
`unjam()`. With the PIC line level-triggered, every EOI then brings the
interrupt straight back: the interrupt storm of claim 11.

Registers (8-bit; wider accesses read or write consecutive registers):

    +0 DATA     r    the latest reading; reading it acknowledges (the line drops)
    +1 STATUS   r    bit 0: a reading is pending
    +2 CONTROL  r/w  bit 0: interrupt enable
    +3 -        r    reads 0
"""
DATA, STATUS, CONTROL = 0, 1, 2
NPORTS = 4
ST_PENDING = 1
CTL_IE = 1


class Sensor:
    def __init__(self, board, base=0x300, irq=5, period=None, name="sensor"):
        self.board, self.base, self.irq, self.name = board, base, irq, name
        self.reading = 0               # the latest reading (u8 counter)
        self.pending = False
        self.control = 0
        self.jammed = False
        self.samples = 0               # readings made
        self.raised = 0                # times the device raised its line (low -> high)
        self.acknowledged = 0          # pending readings taken by a DATA read
        self.period = None
        self._generation = 0           # restarting or stopping cancels the scheduled sample
        self._asserted = False
        board.ports.attach(self, base, NPORTS)
        if period is not None:
            self.start(period)

    # ---- the host side ---------------------------------------------------
    def sample(self):
        """A new reading: pending, and the line rises (if interrupts are enabled)."""
        self.reading = (self.reading + 1) & 0xFF
        self.samples += 1
        self.pending = True
        self.board.trace.emit("sensor.sample", value=self.reading)
        self._update_irq()

    def start(self, period):
        """Sample every `period` retired instructions (virtual time) from now on."""
        if not int(period) >= 1:
            raise ValueError(f"sensor period {period} must be at least 1 instruction")
        self.period = int(period)
        self._generation += 1
        self._arm(self._generation)

    def stop(self):
        self.period = None
        self._generation += 1

    def jam(self):
        """A stuck device: its line stays asserted whatever the driver does."""
        self._set_jammed(True)

    def unjam(self):
        self._set_jammed(False)

    @property
    def line(self):
        """Is the device asserting its IRQ line now?"""
        return self._asserted

    # ---- registers -------------------------------------------------------
    def io_read(self, offset, size):
        value = 0
        for i in range(size):
            value |= self._read8(offset + i) << (8 * i)
        return value

    def io_write(self, offset, size, value):
        for i in range(size):
            if offset + i == CONTROL:
                self.control = (value >> (8 * i)) & CTL_IE
        self._update_irq()

    def _read8(self, offset):
        if offset == DATA:
            if self.pending:
                self.pending = False
                self.acknowledged += 1
                self._update_irq()
            return self.reading
        if offset == STATUS:
            return ST_PENDING if self.pending else 0
        if offset == CONTROL:
            return self.control
        return 0

    # ---- inside --------------------------------------------------------------
    def _set_jammed(self, jammed):
        if jammed != self.jammed:
            self.jammed = jammed
            self.board.trace.emit("sensor.jammed", jammed=jammed)
        self._update_irq()

    def _arm(self, generation):
        self.board.schedule(self.period, lambda: self._tick(generation))

    def _tick(self, generation):
        if generation != self._generation:
            return
        self.sample()
        self._arm(generation)

    def _update_irq(self):
        level = self.jammed or (self.pending and bool(self.control & CTL_IE))
        if level != self._asserted:
            self._asserted = level
            if level:
                self.raised += 1
                self.board.pic.raise_line(self.irq)
            else:
                self.board.pic.lower_line(self.irq)

    def __repr__(self):
        return f"<sensor {self.name} at {self.base:#x}>"
