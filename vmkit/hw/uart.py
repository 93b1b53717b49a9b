"""A 16550-style UART: COM1 at 0x3F8, IRQ 4.

What software writes to the transmit register is captured (`output`) and
each finished line is one `serial` event in the trace, so the console a
widget shows is the trace's. Received bytes (`feed`) wait in RBR and raise
IRQ 4 when IER bit 0 asks for it and MCR's OUT2 gates the line to the
interrupt controller, as on a PC.
"""
from collections import deque

THR_RBR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
LSR_DATA_READY, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40


class UART:
    def __init__(self, board, base=0x3F8, irq=4, name="COM1"):
        self.board, self.base, self.irq, self.name = board, base, irq, name
        self.regs = [0] * 8
        self.divisor = 12
        self.output = bytearray()
        self._line = bytearray()
        self.rx = deque()
        self._thre_pending = False
        self._asserted = False
        board.ports.attach(self, base, 8)

    @property
    def text(self):
        return self.output.decode("latin-1")

    def feed(self, data):
        """Bytes arriving on the line (bytes(5) would be five NULs: refused)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"the serial line carries bytes, not {type(data).__name__} {data!r:.40}")
        self.rx.extend(bytes(data))
        self._update_irq()

    def _dlab(self):
        return self.regs[LCR] & 0x80

    def io_write(self, offset, size, value):
        value &= 0xFF
        if offset in (THR_RBR, IER) and self._dlab():
            shift = 0 if offset == THR_RBR else 8
            self.divisor = (self.divisor & ~(0xFF << shift)) | (value << shift)
        elif offset == THR_RBR:
            self.output.append(value)
            if value == 0x0A:
                self.board.trace.emit("serial", port=self.name, line=self._line.decode("latin-1"))
                self._line.clear()
            elif value != 0x0D:
                self._line.append(value)
            self._thre_pending = True
        else:
            self.regs[offset] = value
            if offset == IER:
                self._thre_pending = bool(value & 2)
        self._update_irq()

    def io_read(self, offset, size):
        if offset in (THR_RBR, IER) and self._dlab():
            return (self.divisor >> (0 if offset == THR_RBR else 8)) & 0xFF
        if offset == THR_RBR:
            value = self.rx.popleft() if self.rx else 0
        elif offset == IIR_FCR:
            cause = self._cause()
            value = {None: 0x01, "rx": 0x04, "thre": 0x02}[cause]
            if cause == "thre":
                self._thre_pending = False           # reading IIR acknowledges THRE
        elif offset == LSR:
            value = LSR_THRE | LSR_TEMT | (LSR_DATA_READY if self.rx else 0)
        elif offset == MSR:
            value = 0xB0
        else:
            value = self.regs[offset]
        self._update_irq()
        return value

    def _cause(self):
        ier = self.regs[IER]
        if ier & 1 and self.rx:
            return "rx"
        if ier & 2 and self._thre_pending:
            return "thre"
        return None

    def _update_irq(self):
        level = self._cause() is not None and bool(self.regs[MCR] & 0x08)
        if level != self._asserted:
            self._asserted = level
            (self.board.pic.raise_line if level else self.board.pic.lower_line)(self.irq)

    def __repr__(self):
        return f"<16550 {self.name}>"
