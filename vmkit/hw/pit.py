"""The 8254 programmable interval timer, channel 0, wired to IRQ 0.

Its input clock is virtual time: one PIT input tick per retired
instruction (the board's clock), never the wall clock. Program it as on a
PC: a control byte to 0x43 (channel 0, lo/hi byte access, mode 2 or 3 for
a periodic interrupt, mode 0 for one shot), then the 16-bit reload value to
0x40, low byte first (0 means 65536).

While its line is masked at the 8259A and already requested (IRR set), a
pulse changes nothing: the edge-triggered request is one bit, however many
edges came. So the PIT then schedules no event per period ("parked": no
Python call and no stop of the running CPU every period, which would cost a
VM world on CPU 0 a slice per COS tick); when the mask or the request
changes, it takes up its period where it would be, counting the periods it
let pass in `ticks`. Its count read back (port 0x40) is computed from the
clock, exact either way. The parked pulses leave no `irq.raise` event: they
raised nothing.
"""


class PIT:
    IRQ = 0

    def __init__(self, board):
        self.board = board
        self.mode = None
        self.reload = None
        self._low = None               # low byte written, waiting for the high byte
        self._armed = 0                # generation: reprogramming cancels the pending tick
        self._started_at = 0
        self._parked = None            # (generation, the due time of the pulse that parked it)
        self.ticks = 0
        board.ports.attach(self, 0x40, 4)
        board.pic.mask_listeners.append(self._mask_changed)

    @property
    def period(self):
        return None if self.reload is None else (self.reload or 0x10000)

    def io_write(self, offset, size, value):
        value &= 0xFF
        if offset == 3:
            channel, access, mode = value >> 6, (value >> 4) & 3, (value >> 1) & 7
            if channel == 0 and access == 3:
                self.mode = mode if mode < 6 else mode - 4
                self._low = None
                self._armed += 1           # counting stops until a new count is written
        elif offset == 0:
            if self._low is None:
                self._low = value
            else:
                self.reload, self._low = self._low | (value << 8), None
                self._start()

    def io_read(self, offset, size):
        if offset != 0 or self.period is None:
            return 0xFF
        return (self.period - (self.board.clock - self._started_at) % self.period) & 0xFF

    def program(self, period, mode=2):
        """What a driver does with three `out`s: periodic IRQ 0 every `period` instructions."""
        if not 1 <= period <= 0x10000:
            raise ValueError(f"PIT period {period} outside 1..65536 instructions")
        self.io_write(3, 1, 0x30 | (mode << 1))
        self.io_write(0, 1, period & 0xFF)
        self.io_write(0, 1, (period >> 8) & 0xFF)

    def _start(self):
        self._armed += 1
        self._started_at = self.board.clock
        self.board.trace.emit("pit.start", mode=self.mode, period=self.period)
        self._arm(self._armed)

    def _arm(self, generation):
        self.board.schedule(self.period, lambda: self._fire(generation))

    def _fire(self, generation):
        if generation != self._armed:
            return
        self.ticks += 1
        pic = self.board.pic
        pic.pulse(self.IRQ)
        if self.mode in (2, 3):
            if pic.masked(self.IRQ) and pic.requested(self.IRQ):
                self._parked = (generation, self.board.now())    # the next pulses change nothing
            else:
                self._arm(generation)

    def _mask_changed(self):
        """The 8259A's mask or request changed: a parked PIT takes up its period."""
        if self._parked is None:
            return
        generation, due = self._parked
        pic = self.board.pic
        if generation != self._armed:
            self._parked = None
        elif not (pic.masked(self.IRQ) and pic.requested(self.IRQ)):
            self._parked = None
            now = self.board.now()
            passed = (now - due) // self.period                   # pulses it let pass, whole periods
            self.ticks += passed
            self.board.schedule(due + (passed + 1) * self.period - now, lambda: self._fire(generation))

    def __repr__(self):
        return "<8254 PIT>"
