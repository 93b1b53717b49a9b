"""The 8259A programmable interrupt controller pair (master 0x20, slave 0xA0).

Programmed as on a PC: ICW1..ICW4 set the vector base, OCW1 (the data port)
masks lines, OCW2 sends EOI, OCW3 selects IRR or ISR for reading. The ELCR
at 0x4D0/0x4D1 makes a line level-triggered: its request then follows the
line instead of latching an edge, so a device that keeps its line asserted
interrupts again after every EOI (the storm of claim 11). The slave
cascades into master line 2. The board delivers the request to CPU 0
when its IF allows (`has_request` / `acknowledge`).
"""


class PIC8259:
    def __init__(self, pair, name, base_vector, first_line):
        self.pair, self.name, self.first_line = pair, name, first_line
        self.vector_base = base_vector
        self.irr = self.isr = self.elcr = self.lines = 0
        self.imr = 0xFF                      # all masked until software unmasks
        self._init_step = 0                  # >0 while reading ICW2..ICW4
        self._icw4 = self._single = False
        self._read_isr = False

    def set_line(self, i, level):
        bit = 1 << i
        rising = level and not self.lines & bit
        self.lines = self.lines | bit if level else self.lines & ~bit
        if self.elcr & bit:
            self.irr = self.irr | bit if level else self.irr & ~bit
        elif rising:
            self.irr |= bit

    def highest_request(self, cascade_request=False):
        """The line to deliver: the lowest-numbered (highest priority) unmasked request, unless a
        line of higher or equal priority is in service. (Asked every slice: by bit arithmetic,
        the lowest request's bit and every bit below it, not a loop over the eight.)"""
        pending = (self.irr | (4 if cascade_request else 0)) & ~self.imr
        if not pending:
            return None                       # nothing unmasked requested
        lowest = pending & -pending
        if self.isr & ((lowest << 1) - 1):
            return None                       # a line of higher or equal priority is in service
        return lowest.bit_length() - 1

    def acknowledge(self, i):
        self.isr |= 1 << i
        if not self.elcr & (1 << i):
            self.irr &= ~(1 << i)

    def eoi(self, specific=None):
        if specific is None:
            if not self.isr:
                return None
            specific = (self.isr & -self.isr).bit_length() - 1
        self.isr &= ~(1 << specific)
        return specific

    def io_write(self, offset, size, value):
        value &= 0xFF
        if offset == 0 and value & 0x10:                       # ICW1: start initialisation
            self.imr = self.isr = 0
            self.irr &= self.elcr
            self._icw4, self._single = bool(value & 1), bool(value & 2)
            self._init_step = 2
            self.pair.mask_changed()
        elif offset == 0 and value & 0x18 == 0:                  # OCW2
            if value & 0x20:
                line = self.eoi(value & 7 if value & 0x40 else None)
                if line is not None:
                    self.pair.trace("pic.eoi", line=self.first_line + line)
                    self.pair.kick()
        elif offset == 0 and value & 0x18 == 0x08:               # OCW3
            if value & 2:
                self._read_isr = bool(value & 1)
        elif self._init_step == 2:                               # ICW2
            self.vector_base = value & 0xF8
            self._init_step = 0 if self._single and not self._icw4 else (4 if self._single else 3)
        elif self._init_step == 3:                               # ICW3 (cascade wiring)
            self._init_step = 4 if self._icw4 else 0
        elif self._init_step == 4:                               # ICW4
            self._init_step = 0
        else:                                                    # OCW1: the mask
            if value != self.imr:
                self.imr = value
                self.pair.trace("pic.mask", chip=self.name, imr=value)
                self.pair.kick()
                self.pair.mask_changed()

    def io_read(self, offset, size):
        if offset == 1:
            return self.imr
        return self.isr if self._read_isr else self.irr

    def __repr__(self):
        return f"<8259A {self.name}>"


class ELCR:
    """Edge/level control registers (0x4D0 master, 0x4D1 slave)."""
    def __init__(self, pair):
        self.pair = pair

    def io_read(self, offset, size):
        return self.pair.chips[offset].elcr

    def io_write(self, offset, size, value):
        self.pair.chips[offset].elcr = value & 0xFF & (~0x07 if offset == 0 else 0xFF)

    def __repr__(self):
        return "<ELCR>"


class PICPair:
    LINES = 16

    def __init__(self, board):
        self.board = board
        self.master = PIC8259(self, "master", 0x08, 0)   # the BIOS's vectors until remapped
        self.slave = PIC8259(self, "slave", 0x70, 8)
        self.chips = (self.master, self.slave)
        board.ports.attach(self.master, 0x20, 2)
        board.ports.attach(self.slave, 0xA0, 2)
        board.ports.attach(ELCR(self), 0x4D0, 2)
        self.mask_listeners = []             # a device that waits for a line to be unmasked (pit.py)

    def mask_changed(self):
        for listener in self.mask_listeners:
            listener()

    def trace(self, kind, **data):
        self.board.trace.emit(kind, **data)

    def kick(self):
        """A request became deliverable while CPU 0 may be mid-slice (a level line
        still high at EOI, an unmask, a device raising its line from a port
        access): end the slice, so the board delivers it at the next
        instruction boundary where IF allows, as the INTR pin would."""
        cpu = self.board.running_cpu
        if cpu is not None and cpu.index == 0 and self.has_request():
            cpu.request_stop()

    def _chip(self, line):
        if not 0 <= line < self.LINES:
            raise ValueError(f"IRQ line {line} does not exist (0..{self.LINES - 1})")
        return (self.master, line) if line < 8 else (self.slave, line - 8)

    def raise_line(self, line):
        chip, i = self._chip(line)
        if not chip.lines & (1 << i):
            self.trace("irq.raise", line=line)
        chip.set_line(i, True)
        self.kick()

    def lower_line(self, line):
        chip, i = self._chip(line)
        chip.set_line(i, False)

    def pulse(self, line):
        self.raise_line(line)
        self.lower_line(line)

    def set_level_triggered(self, line, level=True):
        chip, i = self._chip(line)
        chip.elcr = chip.elcr | (1 << i) if level else chip.elcr & ~(1 << i)

    def masked(self, line):
        chip, i = self._chip(line)
        return bool(chip.imr & (1 << i))

    def requested(self, line):
        """Is the line's request bit (IRR) set?"""
        chip, i = self._chip(line)
        return bool(chip.irr & (1 << i))

    def _request(self):
        s = self.slave.highest_request()
        m = self.master.highest_request(cascade_request=s is not None)
        return m, s

    def has_request(self):
        """(Asked before every round and by every raised line: nothing unmasked requested on
        either chip, the common answer, settled without _request's two calls.)"""
        master, slave = self.master, self.slave
        if not (master.irr & ~master.imr or slave.irr & ~slave.imr):
            return False
        return self._request()[0] is not None

    def acknowledge(self):
        """The CPU's interrupt-acknowledge cycle: returns the vector, or None."""
        m, s = self._request()
        if m is None:
            return None
        self.master.acknowledge(m)
        if m == 2 and s is not None:
            self.slave.acknowledge(s)
            line, vector = 8 + s, self.slave.vector_base + s
        else:
            line, vector = m, self.master.vector_base + m
        self.trace("pic.ack", line=line, vector=vector)
        return vector
