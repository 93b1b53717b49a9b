"""A network adapter as a shared device (claim 8).

Both the COS and the kernel use the one NIC, and frames are sorted by MAC
between them. The kernel drives the real NIC itself, as scsi_share.py
drives the real controller: rings and buffers in the kernel's memory, the
NIC in promiscuous mode (it must take frames for two addresses; its filter
knows only one), its RX interrupt the kernel's.

The COS keeps believing it owns the NIC. The NIC's ports are not in the
COS's I/O bitmap, so every access traps to the kernel (traps.py) and lands
here, on a *virtual* NIC with the same register map (docs/devices.md): the
real MAC, the COS's own rings in COS memory (where it pointed TX_BASE and
RX_BASE), its own ISR, IMR, heads, tails and RX_DROPPED. The kernel moves
frames between those rings and the real ones, reading and writing COS
memory as the NIC's DMA would, with the NIC's own rules (DONE, length,
drop-and-count when the COS gave no buffer, never truncate).

The kernel answers to a second address, `kernel_mac`: the real MAC made
locally administered (byte 0 | 0x02) with the last byte ^ 0x80 — on the
board's NICs (02:00:00:00:00:0n) that is 02:00:00:00:00:8n. A received frame
goes to the COS's ring (its MAC; anything not the kernel's if the COS set
its virtual promiscuous bit), to `kernel_rx` (the kernel's MAC), to both
(broadcast), or nowhere.

Transmit is one real descriptor per frame and completes inside the doorbell
write (docs/devices.md), so the kernel reads DONE/ERROR right after ringing:
frames of the two senders cannot interleave, and the real NIC needs no
TXDONE interrupt. The COS's virtual interrupt line follows its ISR & IMR;
when it rises the COS gets the IRQ forwarded (from `completion` when a real
RX interrupt caused it, else queued at once, e.g. TXDONE at its doorbell).
Limit: traps.py gives no access size, so a narrow COS write counts as a
whole register (upper bytes 0).
"""
import struct

from vmkit.hw.nic import (CTRL, ISR, IMR, TX_BASE, TX_COUNT, TX_TAIL, TX_HEAD, RX_BASE, RX_COUNT,
                          RX_TAIL, RX_HEAD, MAC_LO, MAC_HI, RX_DROPPED, CTRL_RX_EN, CTRL_TX_EN,
                          CTRL_PROMISC, CTRL_RESET, INT_RX, INT_TXDONE, DESC_SIZE, DESC_DONE,
                          DESC_ERROR, MIN_FRAME, MAX_FRAME, BROADCAST, mac_str)
from . import contain, layout

RX_SLOTS, TX_SLOTS = 8, 4           # real rings: 7 receive buffers (one slot stays empty), 4 to send
BUFFER = 0x800                      # 2 KiB a buffer, two a page
CAPACITY = 1536                     # what an RX buffer holds: any Ethernet frame (<= 1514)
RX_RING, TX_RING = 0x000, 0x100     # offsets in the kernel's pages: both rings in the first page,
RX_BUFS = layout.PAGE               # then the RX buffers,
TX_BUFS = RX_BUFS + RX_SLOTS * BUFFER   # then the TX buffers
PAGES = (TX_BUFS + TX_SLOTS * BUFFER) // layout.PAGE
_RW = (IMR, TX_BASE, TX_COUNT, RX_BASE, RX_COUNT)


def kernel_mac(mac):
    """The kernel's own address beside the COS's `mac` (locally administered, last byte ^ 0x80)."""
    return bytes([mac[0] | 0x02, *mac[1:5], mac[5] ^ 0x80])


class SharedNIC:
    def __init__(self, kernel, device):
        self.kernel, self.device, self.trace = kernel, device, kernel.trace
        self.ports, self.memory = kernel.board.ports, kernel.memory
        self.area = self._alloc(kernel)
        self.kernel_rx = []                        # frames for the kernel's MAC, oldest first
        self.rx_next = self.tx_next = 0            # the kernel's positions in the real rings
        self.regs = dict.fromkeys((CTRL, ISR, IMR, TX_BASE, TX_COUNT, TX_TAIL, TX_HEAD,
                                   RX_BASE, RX_COUNT, RX_TAIL, RX_HEAD, RX_DROPPED), 0)
        self.cos_line = False                      # the COS's virtual interrupt line
        self.forward = False                       # it rose: the COS has an IRQ coming
        self.mac = struct.pack("<IH", self._in(MAC_LO), self._in(MAC_HI) & 0xFFFF)
        self.kernel_mac = kernel_mac(self.mac)
        self._out(CTRL, CTRL_RESET)                # whatever the COS left, start from a known state
        for i in range(RX_SLOTS):
            self._rx_desc_reset(i, self.area + RX_BUFS + i * BUFFER)
        self._out(RX_BASE, self.area + RX_RING)
        self._out(RX_COUNT, RX_SLOTS)
        self._out(RX_TAIL, RX_SLOTS - 1)
        self._out(TX_BASE, self.area + TX_RING)
        self._out(TX_COUNT, TX_SLOTS)
        self._out(IMR, INT_RX)
        self._out(CTRL, CTRL_RX_EN | CTRL_TX_EN | CTRL_PROMISC)
        self._unmask(device.irq)
        self.trace.emit("nic.share_init", nic=device.name, cos_mac=mac_str(self.mac),
                        kernel_mac=mac_str(self.kernel_mac), rings=self.area)

    @staticmethod
    def _alloc(kernel):
        """PAGES pages from the kernel's page heap (the pages syscalls.py hands out)."""
        end = kernel.base + layout.HEAP_END
        if kernel.heap + PAGES * layout.PAGE > end:
            raise RuntimeError(f"no room in the kernel's heap for a shared NIC's {PAGES} pages")
        area, kernel.heap = kernel.heap, kernel.heap + PAGES * layout.PAGE
        return area

    def _unmask(self, line):
        port, bit = (0x21, 1 << line) if line < 8 else (0xA1, 1 << (line - 8))
        self.ports.write(port, 1, self.ports.read(port, 1) & ~bit)
        if line >= 8:
            self.ports.write(0x21, 1, self.ports.read(0x21, 1) & ~4)

    def _in(self, reg):
        return self.ports.read(self.device.base + reg, 4)

    def _out(self, reg, value):
        self.ports.write(self.device.base + reg, 4, value)

    def _rx_desc_reset(self, i, buf=None):
        addr = self.area + RX_RING + i * DESC_SIZE
        buf = buf if buf is not None else self.memory.read_u32(addr)
        self.memory.write(addr, struct.pack("<IHHII", buf, CAPACITY, 0, 0, 0), code=False)

    # ---- the kernel's own traffic ------------------------------------------------------
    def send(self, frame):
        """Transmit a whole frame (header included) for the kernel. True if the NIC sent it."""
        frame = bytes(frame)
        if not MIN_FRAME <= len(frame) <= MAX_FRAME:
            raise ValueError(f"a frame is {MIN_FRAME}..{MAX_FRAME} bytes, not {len(frame)}")
        return self._transmit(frame, "kernel")

    def _transmit(self, frame, who):
        """One frame, one real descriptor, one doorbell; the NIC sends it within the write."""
        i, self.tx_next = self.tx_next, (self.tx_next + 1) % TX_SLOTS
        desc, buf = self.area + TX_RING + i * DESC_SIZE, self.area + TX_BUFS + i * BUFFER
        self.memory.write(buf, frame, code=False)
        self.memory.write(desc, struct.pack("<IHHII", buf, len(frame), 0, 0, 0), code=False)
        self.trace.emit("nic.share_tx", nic=self.device.name, length=len(frame),
                        dst=mac_str(frame[:6]), **{"from": who})
        self._out(TX_TAIL, self.tx_next)
        return self.memory.read_u16(desc + 6) & (DESC_DONE | DESC_ERROR) == DESC_DONE

    # ---- the real NIC's interrupt --------------------------------------------------------
    def completion(self):
        """IRQ of the real NIC: sort what arrived, give the buffers back.
        True if the COS's virtual line rose (it has an interrupt coming)."""
        isr = self._in(ISR)
        if isr:
            self._out(ISR, isr)                    # clear first: a later frame raises the line again
        head = self._in(RX_HEAD)
        if head != self.rx_next:
            while self.rx_next != head:
                addr = self.area + RX_RING + self.rx_next * DESC_SIZE
                buf, length = struct.unpack("<IH", self.memory.read(addr, 6))
                frame = self.memory.read(buf, length)
                self._rx_desc_reset(self.rx_next)
                self.rx_next = (self.rx_next + 1) % RX_SLOTS
                self._sort(frame)
            self._out(RX_TAIL, (head - 1) % RX_SLOTS)   # every buffer is the NIC's again
        forward, self.forward = self.forward, False
        return forward

    def _sort(self, frame):
        dst = frame[:6]
        if self.vm_ports and dst in self.vm_ports:     # a VM's address (vm_net.py)
            return self._to_vm(frame)
        if dst == BROADCAST:
            to = "both"
        elif dst == self.kernel_mac:
            to = "kernel"
        elif dst == self.mac or self.regs[CTRL] & CTRL_PROMISC:
            to = "cos"
        else:
            to = "dropped"
        self.trace.emit("nic.share_rx", nic=self.device.name, to=to, length=len(frame), dst=mac_str(dst))
        if to == "dropped" and self.unknown is not None:
            self.unknown(frame)
        if to in ("kernel", "both"):
            self.kernel_rx.append(frame)
        if to in ("cos", "both"):
            self._to_cos(frame)
        if to == "both" and self.vm_ports:            # a broadcast reaches every VM on this NIC too
            for receive in self.vm_ports.values():
                receive(frame)

    # ---- the VMs' traffic (claims 18-20): vm_net.py's ports -------------------------------
    vm_ports = None                                # VM MAC -> its port's receive(frame)
    unknown = None                                 # counts a frame for no one (vm_net.py)

    def attach_port(self, mac, receive):
        if self.vm_ports is None:
            self.vm_ports = {}
        self.vm_ports[bytes(mac)] = receive

    def _to_vm(self, frame):
        dst = frame[:6]
        self.trace.emit("nic.share_rx", nic=self.device.name, to="vm", length=len(frame), dst=mac_str(dst))
        self.vm_ports[dst](frame)

    def send_from(self, buffer, length, who):
        """Transmit `length` bytes the kernel already put at physical `buffer` (a VM's
        physical transmit buffer portion): a real descriptor names it, the NIC's DMA reads
        it there. True if the NIC sent it."""
        i, self.tx_next = self.tx_next, (self.tx_next + 1) % TX_SLOTS
        desc = self.area + TX_RING + i * DESC_SIZE
        self.memory.write(desc, struct.pack("<IHHII", buffer, length, 0, 0, 0), code=False)
        self.trace.emit("nic.share_tx", nic=self.device.name, length=length,
                        dst=mac_str(self.memory.read(buffer, 6)), **{"from": who})
        self._out(TX_TAIL, self.tx_next)
        return self.memory.read_u16(desc + 6) & (DESC_DONE | DESC_ERROR) == DESC_DONE

    # ---- the COS's virtual NIC -----------------------------------------------------------
    def _drop(self, reason, length, count=False):
        if count:
            self.regs[RX_DROPPED] += 1
        self.trace.emit("nic.share_drop", nic=self.device.name, length=length, reason=reason)

    def _cos_desc(self, base, index):
        """A descriptor of the COS's ring; it must lie in the COS's memory (contain.py:
        a bus master checks no segment limit, so the kernel does). ValueError if not."""
        addr = base + index * DESC_SIZE
        contain.check_dma(self.kernel, addr, DESC_SIZE, "NIC descriptor")
        return (addr, *struct.unpack("<IHH", self.memory.read(addr, 8)))

    def _to_cos(self, frame):
        """Into the COS's RX ring, as the NIC would: at its RX_HEAD, if it gave a buffer there."""
        r, n = self.regs, len(frame)
        if not r[CTRL] & CTRL_RX_EN:
            return self._drop("COS RX disabled", n)
        if r[RX_COUNT] == 0 or r[RX_HEAD] == r[RX_TAIL]:
            return self._drop("no COS RX buffer", n, count=True)
        try:
            addr, buf, capacity, flags = self._cos_desc(r[RX_BASE], r[RX_HEAD])
            if n > capacity:
                return self._drop(f"frame of {n} bytes > COS buffer of {capacity}", n, count=True)
            contain.check_dma(self.kernel, buf, n, "NIC RX buffer")
            self.memory.write(buf, frame)
        except ValueError:
            return self._drop(f"COS RX descriptor {r[RX_HEAD]} or its buffer outside the COS's memory",
                              n, count=True)
        self.memory.write(addr + 4, struct.pack("<HH", n, (flags & ~DESC_ERROR) | DESC_DONE), code=False)
        r[RX_HEAD] = (r[RX_HEAD] + 1) % r[RX_COUNT]
        r[ISR] |= INT_RX
        self._update_line()

    def _cos_transmit(self):
        """The COS rang its doorbell (or enabled TX): send its descriptors TX_HEAD..TX_TAIL-1."""
        r = self.regs
        if not r[CTRL] & CTRL_TX_EN or r[TX_COUNT] == 0:
            return
        sent = False
        while r[TX_HEAD] != r[TX_TAIL]:
            index, r[TX_HEAD], sent = r[TX_HEAD], (r[TX_HEAD] + 1) % r[TX_COUNT], True
            try:
                addr, buf, length, flags = self._cos_desc(r[TX_BASE], index)
            except ValueError:
                self._drop(f"COS TX descriptor {index} outside the COS's memory", 0)
                continue
            frame = None
            if not MIN_FRAME <= length <= MAX_FRAME:
                self._drop(f"COS TX length {length} outside {MIN_FRAME}..{MAX_FRAME}", length)
            else:
                try:
                    contain.check_dma(self.kernel, buf, length, "NIC TX buffer")
                    frame = self.memory.read(buf, length)
                except ValueError:
                    self._drop(f"COS TX buffer {buf:#x} outside the COS's memory", length)
            ok = frame is not None and self._transmit(frame, "cos")
            flags = (flags & ~DESC_ERROR) | DESC_DONE | (0 if ok else DESC_ERROR)
            self.memory.write(addr + 6, struct.pack("<H", flags), code=False)
        if sent:
            r[ISR] |= INT_TXDONE

    def _update_line(self):
        level = bool(self.regs[ISR] & self.regs[IMR])
        if level and not self.cos_line:
            self.forward = True
        self.cos_line = level

    def cos_read(self, offset):
        reg = offset & ~3
        mac = {MAC_LO: struct.unpack_from("<I", self.mac)[0], MAC_HI: struct.unpack_from("<H", self.mac, 4)[0]}
        return (mac[reg] if reg in mac else self.regs.get(reg, 0)) >> 8 * (offset & 3)

    def cos_write(self, offset, value):
        r, reg = self.regs, offset & ~3
        value = (value << 8 * (offset & 3)) & 0xFFFFFFFF
        if reg == CTRL:
            if value & CTRL_RESET:
                self.regs = dict.fromkeys(r, 0)
                self.trace.emit("nic.share_reset", nic=self.device.name)
            else:
                r[CTRL] = value & (CTRL_RX_EN | CTRL_TX_EN | CTRL_PROMISC)
                self._cos_transmit()
        elif reg == ISR:
            r[ISR] &= ~value
        elif reg in _RW:
            r[reg] = value
            if reg in (TX_BASE, TX_COUNT):
                r[TX_HEAD] = r[TX_TAIL] = 0
            elif reg in (RX_BASE, RX_COUNT):
                r[RX_HEAD] = r[RX_TAIL] = 0
        elif reg in (TX_TAIL, RX_TAIL):
            count = r[TX_COUNT if reg == TX_TAIL else RX_COUNT]
            if value >= count:
                self.trace.emit("nic.share_error", nic=self.device.name, why=f"tail {value} outside a ring of {count}")
            else:
                r[reg] = value
                if reg == TX_TAIL:
                    self._cos_transmit()
        self._update_line()
        if self.forward:                           # no real interrupt carries this one: queue it now
            self.forward = False
            self.kernel.irqs.cos.queue(self.device.irq)
