"""A descriptor-ring Ethernet NIC and the wire between two of them.

The programming model is the one every modern NIC shares (e1000, virtio,
vmxnet): software keeps two rings of 16-byte descriptors in its own memory,
each naming a buffer; it hands work to the device by moving a tail index
(the doorbell) and the device, a bus master, moves frames by DMA through
`board.memory` and reports back by setting DONE in the descriptor, moving
its head index and raising a cause bit in ISR. Register map and descriptor
layout: docs/devices.md.

Choices worth knowing when writing a driver:
  - TX happens at the TX_TAIL write (or when TX is enabled with work
    pending): every descriptor from TX_HEAD to TX_TAIL-1 is read, its frame
    copied onto the wire, DONE set; then TXDONE. A descriptor whose frame
    cannot be sent (length outside 14..1514, buffer outside RAM) gets DONE
    and ERROR, so the driver can still reclaim it.
  - A frame arrives `Wire.latency` instructions after it was sent (virtual
    time, on the receiver's board). RX fills the descriptor at RX_HEAD if
    RX_HEAD != RX_TAIL; a frame that does not fit the buffer is dropped,
    not truncated (a truncated frame looks valid and lies to the driver).
  - Writing a ring's BASE or COUNT empties that ring (HEAD = TAIL = 0), so a
    driver taking the device over from another one starts from a known state.
  - A frame not addressed to us (and not broadcast, and not promiscuous)
    is ignored silently by real NICs; we trace it (`nic.drop`,
    reason "filtered") so the filter can be watched, but do not count it.
    RX_DROPPED counts frames we wanted but could not take.
The IRQ line stays asserted while ISR & IMR is non-zero (the driver clears
causes by writing 1s to ISR).
"""
import struct

CTRL, ISR, IMR = 0x00, 0x04, 0x08
TX_BASE, TX_COUNT, TX_TAIL, TX_HEAD = 0x0C, 0x10, 0x14, 0x18
RX_BASE, RX_COUNT, RX_TAIL, RX_HEAD = 0x1C, 0x20, 0x24, 0x28
MAC_LO, MAC_HI, RX_DROPPED = 0x2C, 0x30, 0x34
NPORTS = 64
CTRL_RX_EN, CTRL_TX_EN, CTRL_PROMISC, CTRL_RESET = 1, 2, 4, 1 << 31
INT_RX, INT_TXDONE = 1, 2
DESC_SIZE = 16
DESC_DONE, DESC_ERROR = 1, 2
MIN_FRAME, MAX_FRAME = 14, 1514
BROADCAST = b"\xff" * 6

_RW = {CTRL: "ctrl", IMR: "imr", TX_BASE: "tx_base", TX_COUNT: "tx_count",
       RX_BASE: "rx_base", RX_COUNT: "rx_count"}          # plain read/write registers


def mac_str(mac):
    return ":".join(f"{b:02x}" for b in mac)


class NIC:
    def __init__(self, board, base, irq, mac, name="nic0"):
        mac = bytes(mac)
        if len(mac) != 6:
            raise ValueError(f"{name}: a MAC address is 6 bytes, got {len(mac)}")
        self.board, self.base, self.irq, self.mac, self.name = board, base, irq, mac, name
        self.wire = None
        self._line = False
        self._reset()
        board.ports.attach(self, base, NPORTS)

    def _reset(self):
        self.ctrl = self.isr = self.imr = 0
        self.tx_base = self.tx_count = self.tx_tail = self.tx_head = 0
        self.rx_base = self.rx_count = self.rx_tail = self.rx_head = 0
        self.rx_dropped = 0

    def connect(self, peer, latency=100):
        """Sugar for `Wire(self, peer, latency)`."""
        return Wire(self, peer, latency)

    # ---- port I/O --------------------------------------------------------
    def _reg(self, reg):
        if reg in _RW:
            return getattr(self, _RW[reg])
        return {ISR: self.isr, TX_TAIL: self.tx_tail, TX_HEAD: self.tx_head,
                RX_TAIL: self.rx_tail, RX_HEAD: self.rx_head,
                MAC_LO: struct.unpack_from("<I", self.mac)[0],
                MAC_HI: struct.unpack_from("<H", self.mac, 4)[0],
                RX_DROPPED: self.rx_dropped}.get(reg, 0)

    def io_read(self, offset, size):
        return self._reg(offset & ~3) >> 8 * (offset & 3)

    def io_write(self, offset, size, value):
        reg, shift = offset & ~3, 8 * (offset & 3)
        lane = ((1 << 8 * size) - 1) << shift
        value = (value << shift) & lane & 0xFFFFFFFF
        if reg in (TX_TAIL, RX_TAIL, *_RW):      # a narrow write keeps the other bytes
            value |= self._reg(reg) & ~lane
        if reg == CTRL:
            if value & CTRL_RESET:               # self-clearing: reads back as 0
                self._reset()
                self.board.trace.emit("nic.reset", nic=self.name)
            else:
                self.ctrl = value & (CTRL_RX_EN | CTRL_TX_EN | CTRL_PROMISC)
                self._transmit()
        elif reg == ISR:                          # write 1s to clear
            self.isr &= ~value
        elif reg in _RW:
            setattr(self, _RW[reg], value)
            if reg in (TX_BASE, TX_COUNT):        # a new ring starts empty at index 0
                self.tx_head = self.tx_tail = 0
            elif reg in (RX_BASE, RX_COUNT):
                self.rx_head = self.rx_tail = 0
        elif reg == TX_TAIL:
            if value < self.tx_count:
                self.tx_tail = value
                self._transmit()
            else:
                self._bad_index("TX_TAIL", value, self.tx_count)
        elif reg == RX_TAIL:
            if value < self.rx_count:
                self.rx_tail = value
            else:
                self._bad_index("RX_TAIL", value, self.rx_count)
        self._update_irq()

    def _bad_index(self, reg, value, count):
        """An index outside the ring is ignored (the register keeps its value) and traced."""
        self.board.trace.emit("nic.error", nic=self.name,
                              why=f"{reg}={value} outside a ring of {count}")

    def _update_irq(self):
        level = bool(self.isr & self.imr)
        if level != self._line:
            self._line = level
            (self.board.pic.raise_line if level else self.board.pic.lower_line)(self.irq)

    # ---- descriptors (all DMA; a bad address is the driver's bug, not ours) --
    # Descriptor write-backs pass code=False (never instructions: no translated-code flush);
    # frame data keeps the flush, since a network boot may execute what it received.
    def _desc(self, base, index):
        addr = base + index * DESC_SIZE
        buf, length, flags = struct.unpack("<IHH", self.board.memory.read(addr, 8))
        return addr, buf, length, flags

    def _drop(self, reason, length, count=False):
        if count:
            self.rx_dropped += 1
        self.board.trace.emit("nic.drop", nic=self.name, length=length, reason=reason)

    # ---- transmit --------------------------------------------------------
    def _transmit(self):
        if not self.ctrl & CTRL_TX_EN or self.tx_count == 0:
            return
        sent = False
        while self.tx_head != self.tx_tail:
            index = self.tx_head
            self.tx_head = (self.tx_head + 1) % self.tx_count
            sent = True
            try:
                addr, buf, length, flags = self._desc(self.tx_base, index)
            except ValueError:
                self._drop(f"TX descriptor {index} outside RAM", 0)
                continue
            flags = (flags & ~DESC_ERROR) | DESC_DONE
            frame = None
            if not MIN_FRAME <= length <= MAX_FRAME:
                self._drop(f"TX length {length} outside {MIN_FRAME}..{MAX_FRAME}", length)
            else:
                try:
                    frame = self.board.memory.read(buf, length)
                except ValueError:
                    self._drop(f"TX buffer {buf:#x} outside RAM", length)
            if frame is None:
                flags |= DESC_ERROR
            else:
                self.board.trace.emit("nic.tx", nic=self.name, length=length,
                                      dst=mac_str(frame[:6]))
                if self.wire is not None:
                    self.wire.transmit(self, frame)
            self.board.memory.write(addr + 6, struct.pack("<H", flags), code=False)
        if sent:
            self.isr |= INT_TXDONE

    # ---- receive (called by the Wire when a frame arrives) -----------------
    def receive(self, frame):
        frame = bytes(frame)
        n = len(frame)
        if not self.ctrl & CTRL_RX_EN:
            return self._drop("RX disabled", n)
        if n < MIN_FRAME:
            return self._drop(f"runt frame ({n} bytes)", n, count=True)
        dst = frame[:6]
        if not (dst == self.mac or dst == BROADCAST or self.ctrl & CTRL_PROMISC):
            return self._drop(f"filtered: for {mac_str(dst)}", n)
        if self.rx_count == 0 or self.rx_head == self.rx_tail:
            return self._drop("no RX buffer", n, count=True)
        try:
            addr, buf, capacity, flags = self._desc(self.rx_base, self.rx_head)
        except ValueError:
            return self._drop(f"RX descriptor {self.rx_head} outside RAM", n, count=True)
        if n > capacity:
            return self._drop(f"frame of {n} bytes > buffer of {capacity}", n, count=True)
        try:
            self.board.memory.write(buf, frame)
        except ValueError:
            return self._drop(f"RX buffer {buf:#x} outside RAM", n, count=True)
        flags = (flags & ~DESC_ERROR) | DESC_DONE
        self.board.memory.write(addr + 4, struct.pack("<HH", n, flags), code=False)
        self.rx_head = (self.rx_head + 1) % self.rx_count
        self.isr |= INT_RX
        self.board.trace.emit("nic.rx", nic=self.name, length=n, src=mac_str(frame[6:12]))
        self._update_irq()

    def __repr__(self):
        return f"<NIC {self.name} {mac_str(self.mac)} at {self.base:#x} irq {self.irq}>"


class Wire:
    """A point-to-point Ethernet cable: what one end sends, the other receives.

    Delivery is scheduled on the *receiver's* board, `latency` instructions
    later, so a wire may join NICs of two boards (each side runs on its own
    clock). `tap` records every frame put on the wire as (time, src, frame),
    time being the sender's virtual clock, for tests and widgets."""

    def __init__(self, nic_a, nic_b, latency=100):
        for nic in (nic_a, nic_b):
            if not isinstance(nic, NIC):
                raise TypeError(f"a wire joins two NICs (board.nics[i]), not {nic!r:.40}")
        if not isinstance(latency, int) or isinstance(latency, bool) or latency < 1:
            raise ValueError(f"a wire's latency is a positive number of instructions, not {latency!r}")
        if nic_a is nic_b:
            raise ValueError(f"a wire joins two NICs, not {nic_a.name} to itself")
        for nic in (nic_a, nic_b):
            if nic.wire is not None:
                raise ValueError(f"{nic.name} is already connected to a wire")
        self.ends, self.latency, self.tap = (nic_a, nic_b), latency, []
        nic_a.wire = nic_b.wire = self

    def peer(self, nic):
        return self.ends[1] if nic is self.ends[0] else self.ends[0]

    def transmit(self, src, frame):
        self.tap.append((src.board.clock, src.name, bytes(frame)))
        self._deliver(self.peer(src), frame, self.latency)

    def inject(self, to_nic, frame, delay=None):
        """A frame from outside the machine, arriving at `to_nic` after `delay` (latency)."""
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise TypeError(f"a frame is bytes, not {type(frame).__name__} {frame!r:.40}")
        if to_nic not in self.ends:
            raise ValueError(f"{to_nic.name} is not on this wire")
        self.tap.append((to_nic.board.clock, "outside", bytes(frame)))
        self._deliver(to_nic, frame, self.latency if delay is None else delay)

    @staticmethod
    def _deliver(nic, frame, delay):
        frame = bytes(frame)
        nic.board.schedule(delay, lambda: nic.receive(frame))

    def disconnect(self):
        for nic in self.ends:
            nic.wire = None
