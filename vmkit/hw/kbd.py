"""An 8042-style keyboard controller: data at 0x60, status/command at 0x64, IRQ 1.

The host side is a person typing: `press(scancodes)` puts bytes in the
keyboard, which hands them one at a time to the controller's one-byte
output buffer. Software reads status (0x64, bit 0 = output buffer full)
and then the byte (0x60). The bytes are the ones a PC's driver reads
(scancode set 1, what an 8042 delivers with translation on): `press`
does not translate.

IRQ 1 is edge-triggered, as on a PC: the controller drives the line
while its output buffer is full and the command byte's bit 0 (keyboard
interrupt) is set. Reading 0x60 empties the buffer (the line drops); if
the keyboard holds more bytes, the next one moves in at once and the line
rises again: a new edge, so a driver that reads one byte per interrupt
gets one interrupt per byte, and one that reads until the status says
empty (as the COS's does) gets them all in one go. Reading 0x60 with the
buffer empty returns the last byte again, as the 8042 does.

Commands (written to 0x64) accepted: 0x20 read the command byte, 0x60
write it (next byte to 0x60), 0xAA self-test (answers 0x55), 0xAB
interface test (answers 0x00), 0xAD / 0xAE disable / enable the keyboard
(bytes wait in the keyboard while it is disabled), 0xA7 / 0xA8 disable /
enable the mouse port (recorded in the command byte, nothing else), 0xD1
write the output port (its byte is ignored); any other command is
ignored. A byte written to 0x60 when no command waits for one goes to the
keyboard, which answers 0xFA (ACK); 0xFF (reset) answers 0xFA 0xAA, 0xEE
(echo) 0xEE. Controller answers take the output buffer before keystrokes.
"""
from collections import deque

DATA, STATUS = 0, 4                    # offsets from the base port (0x60, 0x64)
NPORTS = 5                             # 0x60-0x64; 0x61-0x63 read as all ones here
ST_OBF, ST_IBF, ST_SYS, ST_CMD, ST_UNLOCKED = 0x01, 0x02, 0x04, 0x08, 0x10
CB_KBD_INT, CB_SYS, CB_KBD_OFF, CB_AUX_OFF, CB_XLATE = 0x01, 0x04, 0x10, 0x20, 0x40
DEFAULT_COMMAND_BYTE = CB_KBD_INT | CB_SYS | CB_XLATE      # 0x45, as a PC BIOS leaves it
ACK = 0xFA


class KeyboardController:
    def __init__(self, board, base=0x60, irq=1, name="kbd"):
        self.board, self.base, self.irq, self.name = board, base, irq, name
        self.command_byte = DEFAULT_COMMAND_BYTE
        self.output = None             # the one-byte output buffer (None: empty)
        self.keyboard = deque()        # bytes the keyboard holds, not yet in the output buffer
        self.replies = deque()         # the controller's answers to commands
        self.pressed = 0               # bytes `press` queued, for widgets and tests
        self._last = 0                 # what 0x60 reads when the buffer is empty
        self._expect = None            # a command waiting for its byte at 0x60
        self._last_was_command = False
        self._asserted = False
        board.ports.attach(self, base, NPORTS)

    # ---- the host side ---------------------------------------------------
    def press(self, scancodes):
        """Bytes arriving from the keyboard (scancode set 1), one trace event each."""
        if not isinstance(scancodes, (bytes, bytearray, memoryview)):
            raise TypeError(f"the keyboard sends scancodes as bytes (b'\\x1e' is A pressed), "
                            f"not {type(scancodes).__name__} {scancodes!r:.40}")
        for code in bytes(scancodes):
            self.keyboard.append(code)
            self.pressed += 1
            self.board.trace.emit("kbd.key", code=code)
        self._fill()
        self._update_irq()

    @property
    def output_full(self):
        return self.output is not None

    # ---- registers -------------------------------------------------------
    def io_read(self, offset, size):
        value = 0
        for i in range(size):                              # 8-bit registers, byte lanes
            value |= self._read8(offset + i) << (8 * i)
        return value

    def io_write(self, offset, size, value):
        for i in range(size):
            self._write8(offset + i, (value >> (8 * i)) & 0xFF)

    def _read8(self, offset):
        if offset == DATA:
            if self.output is not None:
                self._last, self.output = self.output, None
                self._update_irq()                         # the buffer emptied: the line drops
                self._fill()
                self._update_irq()                         # the next byte moved in: a new edge
            return self._last
        if offset == STATUS:
            return ((ST_OBF if self.output is not None else 0)
                    | (ST_SYS if self.command_byte & CB_SYS else 0)
                    | (ST_CMD if self._last_was_command else 0) | ST_UNLOCKED)
        return 0xFF

    def _write8(self, offset, value):
        if offset == STATUS:
            self._last_was_command = True
            self._command(value)
        elif offset == DATA:
            self._last_was_command = False
            expect, self._expect = self._expect, None
            if expect == 0x60:
                self.command_byte = value
            elif expect is None:
                self._to_keyboard(value)
        self._fill()
        self._update_irq()

    def _command(self, command):
        self._expect = None
        if command == 0x20:
            self.replies.append(self.command_byte)
        elif command in (0x60, 0xD1):
            self._expect = command
        elif command == 0xAA:
            self.replies.append(0x55)
        elif command == 0xAB:
            self.replies.append(0x00)
        elif command in (0xAD, 0xAE):
            self._set_bit(CB_KBD_OFF, command == 0xAD)
        elif command in (0xA7, 0xA8):
            self._set_bit(CB_AUX_OFF, command == 0xA7)

    def _set_bit(self, bit, on):
        self.command_byte = self.command_byte | bit if on else self.command_byte & ~bit

    def _to_keyboard(self, byte):
        """A command for the keyboard itself: it answers before any more keystrokes."""
        if byte == 0xFF:
            self.keyboard.clear()
            answer = (ACK, 0xAA)
        elif byte == 0xEE:
            answer = (0xEE,)
        else:
            answer = (ACK,)
        self.keyboard.extendleft(reversed(answer))

    def _fill(self):
        if self.output is not None:
            return
        if self.replies:
            self.output = self.replies.popleft()
        elif self.keyboard and not self.command_byte & CB_KBD_OFF:
            self.output = self.keyboard.popleft()

    def _update_irq(self):
        level = self.output is not None and bool(self.command_byte & CB_KBD_INT)
        if level != self._asserted:
            self._asserted = level
            (self.board.pic.raise_line if level else self.board.pic.lower_line)(self.irq)

    def __repr__(self):
        return f"<8042 {self.name}>"
