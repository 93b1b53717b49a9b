"""A VM's network path through the kernel alone (claims 18-20, 39-40).

Each VM with a network port has a shared memory region in its own memory
(net_ring.py declares its bytes; every address in it, and `Port.region`, is a
guest address: the guest sees its memory from 0, and the kernel reaches
those bytes at the host address its VMM's checked translation gives, Port.host) and an address of its own on one of the
shared NICs (nic_share.py, claim 8: the COS's frames, the kernel's and the
VMs' share the adapter). Only the kernel moves data between the region and
the NIC:

Output. The driver writes frames into its part of the region, points TX
slots at them, moves tx_producer, and makes one request for transmission
(one `out` to its port: a trap into its VMM, vmm/net_device.py). On sensing
it the kernel takes *every* slot queued since the last request (claim 19):
for each, the pointer and length are checked against the region, the frame
is copied to the physical transmit buffer portion and a descriptor of the
real NIC names that copy (the NIC's DMA reads it there). A slot gets DONE,
or DONE | ERROR if it was refused; tx_consumer moves past it either way.

Input. A frame for the VM's MAC reaches the NIC's interrupt (nic_share.py
sorts it here). The kernel copies it into the physical receive buffer
portion, points the next RX slot at it, moves rx_producer and issues to the
VMM the instruction to raise the VM's network line (VMM.raise_line); the
VMM injects it through the guest's own IDT when the guest can take it.

Nothing here trusts the region. The kernel's own indices, and the counters of
what it refused, are a PortState in kernel memory (one page from the kernel's
heap holds every port's); every pointer is checked to lie in the VM's region
before a byte is read, so no other world's memory is ever read or written.
Refusals (each a counter and a `net.refused` trace event): a pointer outside
the driver's frames, a length outside 14..1514 (a frame larger than the
buffer), a frame whose source MAC is not the VM's own (checked in
hand_to_nic, on the copy the NIC reads, whatever transmit step made it), a
request with nothing queued, a ring index >= SLOTS, any request
once FLOOD_LIMIT of them came with nothing queued in one kernel tick (a
sender with frames never floods: each of its requests does work). A
received frame for no one's MAC is counted in NetCounters.unknown_mac, one
the VM has no free RX slot for in rx_dropped.
"""
from vmkit.hw.nic import MIN_FRAME, MAX_FRAME, mac_str
from . import layout, net_ring
from .net_ring import BUFFER, SLOTS, NetCounters, NetHeader, PortState, Slot

NET_LINE = 10               # the port's line on the VM's virtual PIC: vector 0x20 + 10 in the guest
TX_REFUSALS = ("refused_pointer", "refused_length")   # what a transmit step may refuse a slot for
FLOOD_LIMIT = 64            # empty requests in a kernel tick; past them, requests are refused


MAX_PORTS = (layout.PAGE - NetCounters.SIZE) // PortState.SIZE


def vm_mac(nic_mac, index):
    """The address of the VM port `index` on a NIC with `nic_mac`: locally administered,
    byte 4 = 0x10 + index (the COS keeps the NIC's, the kernel byte 5 ^ 0x80)."""
    return bytes([nic_mac[0] | 0x02, *nic_mac[1:4], 0x10 + index, nic_mac[5]])


class Field:
    """A u32 field of a record in emulated memory, read and written in place."""
    def __init__(self, record, name):
        self.offset = record.OFFSET[name]

    def __get__(self, obj, owner=None):
        return obj.memory.read_u32(obj.state + self.offset)

    def __set__(self, obj, value):
        obj.memory.write_u32(obj.state + self.offset, value & 0xFFFFFFFF, code=False)


class VmNet:
    """The kernel's side of every VM port: one page of kernel memory for the counters.
    `transmit` is the transmit step every port's request runs (exercise 08 plugs the
    learner's in here, as exercise 07 plugs its policy into the mapping cache)."""

    def __init__(self, kernel):
        self.transmit = transmit
        self.kernel, self.memory, self.trace = kernel, kernel.memory, kernel.trace
        end = kernel.base + layout.HEAP_END
        if kernel.heap + layout.PAGE > end:
            raise RuntimeError("no room in the kernel's heap for the VMs' network page")
        self.page, kernel.heap = kernel.heap, kernel.heap + layout.PAGE
        self.memory.write(self.page, bytes(layout.PAGE), code=False)
        self.ports = []
        self.hooked = set()

    @classmethod
    def of(cls, kernel):
        if getattr(kernel, "vm_net", None) is None:
            kernel.vm_net = cls(kernel)
        return kernel.vm_net

    @property
    def counters(self):
        return NetCounters.unpack(self.memory.read(self.page, NetCounters.SIZE))

    def attach(self, vmm, nic, region):
        """A port for `vmm` on the shared NIC `nic` ("nic0"), its region at guest address
        `region` (inside the VM's memory, page-aligned: checked by the caller)."""
        front = self.kernel.shared.get(nic)
        if front is None or not hasattr(front, "send_from"):
            raise ValueError(f"{nic!r} is not a NIC the kernel shares "
                             f"(shared: {sorted(self.kernel.shared)})")
        if len(self.ports) >= MAX_PORTS:
            raise ValueError(f"the kernel's network page holds {MAX_PORTS} ports")
        index = len(self.ports)
        state = self.page + NetCounters.SIZE + index * PortState.SIZE
        port = Port(self, front, vmm, region, vm_mac(front.mac, index), state)
        self.ports.append(port)
        self.memory.write_u32(self.page + NetCounters.OFFSET["ports"], len(self.ports), code=False)
        front.attach_port(port.mac, port.receive)
        if nic not in self.hooked:
            self.hooked.add(nic)
            front.unknown = self._unknown
        return port

    def _unknown(self, frame):
        at = self.page + NetCounters.OFFSET["unknown_mac"]
        self.memory.write_u32(at, self.memory.read_u32(at) + 1, code=False)
        self.trace.emit("net.refused", vm=None, why=f"frame for unknown MAC {mac_str(frame[:6])}",
                        counter="unknown_mac")


class Port:
    tx_consumer = Field(PortState, "tx_consumer")
    rx_producer = Field(PortState, "rx_producer")
    tick = Field(PortState, "tick")
    tick_empty = Field(PortState, "tick_empty")

    def __init__(self, net, front, vmm, region, mac, state):
        self.net, self.front, self.vmm, self.region, self.mac = net, front, vmm, region, mac
        self.kernel, self.memory, self.trace, self.state = net.kernel, net.memory, net.trace, state
        self.interrupts = lambda: True             # net_device.py: does the guest want them
        self.memory.write(state, PortState(region=region, mac=mac).pack(), code=False)
        self.write(region, bytes(net_ring.SIZE))
        self._header(slots=SLOTS, mac=mac)
        self.trace.emit("net.attach", vm=vmm.name, nic=front.device.name, mac=mac_str(mac),
                        region=region, state=state)

    # ---- the region and the counters ------------------------------------------------------
    def header(self):
        return NetHeader.unpack(self.read(self.region, NetHeader.SIZE))

    def _header(self, **fields):
        for name, value in fields.items():
            at, fmt = self.region + NetHeader.OFFSET[name], NetHeader.FORMAT[name]
            data = value if fmt.endswith("s") else value.to_bytes(4, "little")
            self.write(at, data)

    def slots(self, ring):
        """The SLOTS slots of ring "tx" or "rx", as the region holds them now (for widgets)."""
        first = {"tx": net_ring.TX_SLOTS, "rx": net_ring.RX_SLOTS}[ring]
        raw = self.read(self.region + first, SLOTS * Slot.SIZE)
        return [Slot.unpack(raw, i * Slot.SIZE) for i in range(SLOTS)]

    def counters(self):
        return PortState.unpack(self.memory.read(self.state, PortState.SIZE))

    def _count(self, name):
        at = self.state + PortState.OFFSET[name]
        self.memory.write_u32(at, self.memory.read_u32(at) + 1, code=False)

    def _refuse(self, counter, why):
        self._count(counter)
        self.trace.emit("net.refused", vm=self.vmm.name, why=why, counter=counter)

    def _index(self, name):
        """A ring index the driver wrote in the region; None (refused) if it is garbage."""
        value = getattr(self.header(), name)
        if value >= SLOTS:
            self._refuse("bad_index", f"{name} {value} outside a ring of {SLOTS}")
            return None
        return value

    # ---- output: the request for transmission -----------------------------------------------
    def request(self):
        """The VM's request for transmission: send every frame queued before it (claim 19)."""
        ticks = self.kernel.ticks
        if self.tick != ticks:
            self.tick, self.tick_empty = ticks, 0
        if self.tick_empty >= FLOOD_LIMIT:
            return self._refuse("flooded", f"a request after {FLOOD_LIMIT} with nothing queued "
                                           f"in tick {ticks}")
        self._count("requests")
        self._header(requests=self.counters().requests)
        producer = self._index("tx_producer")
        if producer is None:
            return
        consumer = self.tx_consumer
        if producer == consumer:
            self.tick_empty += 1
            return self._refuse("empty_requests", "a request with nothing queued")
        before = self.counters().frames_sent
        self.net.transmit(self, consumer, producer)     # its return is not trusted: the counter is
        self.tx_consumer = producer
        self._header(tx_consumer=producer)
        self.trace.emit("net.request", vm=self.vmm.name, frames=self.counters().frames_sent - before,
                        slots=(producer - consumer) % SLOTS, tick=ticks)

    # ---- what the transmit step (transmit(), below; exercise 08's) may do -----------------
    def host(self, address, length=1):
        """The host address of the VM's bytes at guest address `address` .. + length, checked
        by its VMM (VMM.host): outside the VM's memory it is that VM's fault (GuestFault)."""
        return self.vmm.host(address, length, "a network buffer")

    def read(self, address, length):
        """Bytes of the VM's memory at guest address `address` (Port.host checks it)."""
        return self.memory.read(self.host(address, length), length)

    def write(self, address, data):
        """Store into the VM's memory at guest address `address` (Port.host checks it)."""
        data = bytes(data)
        self.memory.write(self.host(address, len(data)), data, code=False)

    def _flags(self, i, flags):
        self.write(self.region + net_ring.tx_slot(i) + Slot.OFFSET["flags"], flags.to_bytes(2, "little"))

    def refuse(self, i, counter, why):
        """TX slot i is refused: `counter` (a PortState field) counts it, the slot gets DONE | ERROR."""
        if counter not in TX_REFUSALS:
            raise ValueError(f"{counter!r} is not a refusal counter of a TX slot ({', '.join(TX_REFUSALS)})")
        self._refuse(counter, f"TX slot {i}: {why}")
        self._flags(i, net_ring.DONE | net_ring.ERROR)

    def source_ok(self, physical, what):
        """Is the source MAC of the frame at guest address `physical` the port's own?
        If not, counted (`refused_source`) and traced: the frame must not be sent."""
        source = self.read(physical + 6, 6)
        if source == self.mac:
            return True
        self._refuse("refused_source", f"{what}: source MAC {mac_str(source)} "
                                       f"is not the VM's {mac_str(self.mac)}")
        return False

    def hand_to_nic(self, i, physical, length):
        """A descriptor of the real NIC names the `length` bytes at guest address `physical`
        (the NIC's DMA reads them at their host address, Port.host, now); TX slot i gets
        DONE, or DONE | ERROR if the NIC refused. True if sent.

        The kernel's own check first, whatever transmit step made the copy: the copy's
        source MAC must be the port's, as a virtual switch's port admits only its own
        address. A VM sending as another VM, the COS or the kernel would steer their
        replies to itself and confuse whoever sorts by source; such a frame is dropped
        (slot DONE | ERROR, `refused_source`, a `net.refused` event). The copy checked
        is the one the NIC reads: it is in the VM's memory, but the VM's only vCPU does
        not run while its kernel entry checks and sends (the NIC sends within the doorbell)."""
        if not self.source_ok(physical, f"TX slot {i}"):
            self._flags(i, net_ring.DONE | net_ring.ERROR)
            return False
        pointer = Slot.unpack(self.read(self.region + net_ring.tx_slot(i), Slot.SIZE)).buffer
        self.trace.emit("net.tx", vm=self.vmm.name, slot=i, pointer=pointer, copy=physical,
                        length=length)
        ok = self.front.send_from(self.host(physical, length), length, self.vmm.name)
        if ok:
            self._count("frames_sent")
        self._flags(i, net_ring.DONE | (0 if ok else net_ring.ERROR))
        return ok

    def waiting(self):
        """Frames in the RX ring the driver has not taken yet."""
        return self.rx_producer != self.header().rx_consumer

    # ---- input: a frame for the VM's MAC, from the NIC's interrupt ----------------------------
    def receive(self, frame):
        consumer = self._index("rx_consumer")
        if consumer is None:
            return
        producer = self.rx_producer
        if (producer + 1) % SLOTS == consumer:
            return self._refuse("rx_dropped", f"no free RX slot for a frame of {len(frame)} bytes")
        physical = self.region + net_ring.PHYS_RX + producer * BUFFER     # a guest address
        self.write(physical, frame)
        self.write(self.region + net_ring.rx_slot(producer),
                   Slot(buffer=physical, length=len(frame), flags=net_ring.DONE).pack())
        self.rx_producer = producer = (producer + 1) % SLOTS
        self._header(rx_producer=producer)
        self._count("frames_received")
        self.trace.emit("net.rx", vm=self.vmm.name, slot=(producer - 1) % SLOTS, copy=physical,
                        length=len(frame))
        if self.interrupts():
            self.vmm.raise_line(NET_LINE)          # to the VMM: raise an interrupt


def transmit(port, consumer, producer):
    """The kernel's transmit step: TX slots consumer, consumer + 1, ... up to (not
    including) producer, every frame queued before the request (claim 19). For each:
    read the slot (the driver's pointer and length), check it (a length an Ethernet
    frame can have; a pointer whose whole frame lies in the driver's frames of this
    VM's region, so nothing of another world is read), copy the frame into the slot's
    buffer of the physical transmit buffer portion and hand that copy to the NIC."""
    frames = port.region + net_ring.FRAMES
    i = consumer
    while i != producer:
        slot = Slot.unpack(port.read(port.region + net_ring.tx_slot(i), Slot.SIZE))
        if not MIN_FRAME <= slot.length <= MAX_FRAME:
            port.refuse(i, "refused_length", f"length {slot.length} outside {MIN_FRAME}..{MAX_FRAME}")
        elif not frames <= slot.buffer <= frames + SLOTS * BUFFER - slot.length:
            port.refuse(i, "refused_pointer", f"pointer {slot.buffer:#x}+{slot.length} "
                                              f"outside the region's frames {frames:#x}..")
        else:
            physical = port.region + net_ring.PHYS_TX + i * BUFFER
            port.write(physical, port.read(slot.buffer, slot.length))
            port.hand_to_nic(i, physical, slot.length)
        i = (i + 1) % SLOTS
