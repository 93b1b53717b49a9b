"""Notebook 08's logic: a VM's frames through the shared region and the kernel alone
(claims 18-20, 39-40). The machines here are the tests' (tests/test_vm_net.py): two NICs
joined by a wire, VMs whose drivers are x86 at CPL 3 (vmm/net_guest.py), the COS with a
small x86 driver of its own for its (virtual) NIC."""
import struct
from dataclasses import dataclass

from vmkit.hw.board import NIC_PORTS, NIC_IRQS
from vmkit.hw.nic import (CTRL, IMR, MAC_HI, MAC_LO, RX_BASE, RX_COUNT, RX_TAIL, TX_BASE,
                          TX_COUNT, TX_TAIL, Wire, mac_str)
from vmkit.kernel import net_ring
from vmkit.kernel.net_ring import BUFFER, NetHeader, Slot
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import NET_PORT, REQUEST, install_vm_with_net
from . import takeover

RUN = 100_000


def two_nics(cpus=1):
    """A displaced COS on a board with nic0 and nic1 joined by a wire."""
    board, cos, loader = takeover.takeover(nics=2, cpus=cpus)
    return board, cos, loader.kernel, Wire(board.nics[0], board.nics[1])


def vm(kernel, name, steps, nic):
    return install_vm_with_net(kernel, net_guest.program(name, steps), net_guest.MEMORY, name, nic)


def run_until_done(board, *worlds, limit=40):
    for _ in range(limit):
        if all(b" done" in w.vmm.console or w.state == "crashed" for w in worlds):
            return
        board.run(RUN)


def console(world):
    return bytes(world.vmm.console).decode("latin-1")


def ping_echo(pings=(b"ping 1", b"ping 2", b"ping 3")):
    """VM a on nic0 sends `pings` in one batch (one request) to VM b on nic1, which echoes each."""
    board, cos, kernel, wire = two_nics()
    b = vm(kernel, "b", [("echo", len(pings))], "nic1")
    a = vm(kernel, "a", [("send", b.vmm.net.port.mac, list(pings)), ("recv", len(pings))], "nic0")
    run_until_done(board, a, b)
    return board, kernel, wire, a, b


def wire_text(wire, names=None):
    """The frames on the wire: when, from which NIC, dst <- src, payload."""
    names = names or {}
    rows = []
    for time, who, f in wire.tap:
        dst, src = f[:6], f[6:12]
        rows.append(f"{time:>9,}  {who:7} {names.get(dst, mac_str(dst)):>17} <- "
                    f"{names.get(src, mac_str(src)):17}  {f[14:].rstrip(bytes(1))!r}")
    return "\n".join(rows)


def counters_text(*worlds):
    """The kernel's PortState of each VM's port, read from kernel memory."""
    fields = ("requests", "frames_sent", "frames_received", "refused_pointer", "refused_length",
              "empty_requests", "rx_dropped")
    rows = [f"{'':6}" + "".join(f"{f:>17}" for f in fields)]
    for w in worlds:
        c = w.vmm.net.port.counters()
        rows.append(f"{w.name:6}" + "".join(f"{getattr(c, f):>17}" for f in fields))
    return "\n".join(rows)


# ---- the region, drawn from the live layout ---------------------------------------------------
def region_parts(port):
    """[(name, guest address, size, what)] of a port's shared region, from net_ring's names."""
    r = port.region
    slots = net_ring.SLOTS * Slot.SIZE
    return [("NetHeader", r + net_ring.HEADER, NetHeader.SIZE, "the pointers (ring indices), requests, MAC"),
            ("TX slots", r + net_ring.TX_SLOTS, slots, "the driver's pointers to its frames"),
            ("RX slots", r + net_ring.RX_SLOTS, slots, "the kernel's pointers into the receive portion"),
            ("driver's frames", r + net_ring.FRAMES, net_ring.SLOTS * BUFFER, "what a TX slot may point at"),
            ("physical transmit buffer portion", r + net_ring.PHYS_TX, net_ring.SLOTS * BUFFER,
             "the kernel's copy; the NIC's DMA reads it"),
            ("physical receive buffer portion", r + net_ring.PHYS_RX, net_ring.SLOTS * BUFFER,
             "the kernel copies a received frame here")]


# ---- one packet's life, step by step ------------------------------------------------------------
@dataclass
class Step:
    time: int
    label: str
    sender: dict                  # the sender's region: header, TX slot, the frame, its copy
    receiver: dict                # the receiver's region: header, RX slot, the received copy
    events: list


def _view(port, ring, i):
    h = port.header()
    slot = port.slots(ring)[i]
    at = port.region + (net_ring.PHYS_TX if ring == "tx" else net_ring.PHYS_RX) + i * BUFFER
    return {"header": {k: getattr(h, k) for k in ("tx_producer", "tx_consumer", "rx_producer",
                                                    "rx_consumer", "requests")},
            "slot": (i, slot.buffer, slot.length, slot.flags),
            "pointed": port.read(slot.buffer, 32) if slot.buffer else b"",
            "portion": (at, port.read(at, 32))}


# the trace events that end a step of the packet's life: (kind, what its data must hold, the step)
MOMENTS = [("net.tx", {"vm": "a"}, "the kernel sensed the request, checked the pointer and copied the "
                                   "frame to the physical transmit buffer portion"),
           ("nic.tx", {"nic": "nic0"}, "the NIC's DMA read the copy: the frame is on the wire"),
           ("net.rx", {"vm": "b"}, "nic1's interrupt: the kernel copied the frame into b's physical "
                                   "receive buffer portion and pointed an RX slot at it"),
           ("vmm.raise", {"vm": "b"}, "the kernel issued to b's VMM the instruction to raise line 10"),
           ("vmm.inject", {"vm": "b", "vector": 0x2A}, "b's VMM injected vector 0x2A through b's own IDT"),
           ("vm.console", {"vm": "b"}, "b's handler took the frame from where the RX slot points "
                                       "(rx_consumer moved); b printed it")]


def packet_life(payload=b"one packet"):
    """VM a sends one frame to VM b; the region's bytes of both at each step of its life.
    The first step is a breakpoint at a's request (its `out`), the others are read when the
    trace records the step's event (reading only)."""
    board, cos, kernel, wire = two_nics()
    b = vm(kernel, "b", [("recv", 1)], "nic1")
    a = vm(kernel, "a", [("send", b.vmm.net.port.mac, [payload])], "nic0")
    pa, pb = a.vmm.net.port, b.vmm.net.port
    steps, trace = [], board.trace
    mark = [trace.mark()]

    def record(label):
        steps.append(Step(board.now(), label, _view(pa, "tx", 0), _view(pb, "rx", 0),
                          trace.events[mark[0]:]))
        mark[0] = len(trace.events)

    code = board.memory.read(a.vmm.base, net_guest.VARS)       # its guest addresses start at 0
    out = code.rindex(bytes([0xBA]) + (NET_PORT + REQUEST).to_bytes(4, "little") + b"\xef") + 5
    hook = board.cpu.on_execute(out, lambda c: not steps and c["cr3"] == a.cr3 and record(
        "a's driver wrote the frame, pointed TX slot 0 at it, moved tx_producer; next: its one "
        "`out` (the request for transmission)"))
    emit, todo = trace.emit, list(MOMENTS)

    def watch(kind, /, cpu=None, **data):
        ev = emit(kind, cpu=cpu, **data)
        if steps and todo and kind == todo[0][0] and all(data.get(k) == v for k, v in todo[0][1].items()):
            record(todo.pop(0)[2])
        return ev
    trace.emit = watch
    try:
        run_until_done(board, a, b)
    finally:
        trace.emit = emit
        board.cpu.remove(hook)
    return board, kernel, a, b, steps


def step_text(step):
    def hexs(data):
        return " ".join(f"{x:02x}" for x in data)
    s, r = step.sender, step.receiver
    i, buf, length, flags = s["slot"]
    j, rbuf, rlength, rflags = r["slot"]
    lines = [f"@{step.time:,}  {step.label}",
             f"  a's region  header {s['header']}",
             f"              TX slot {i}: pointer {buf:#x} length {length} flags {flags}",
             f"              at the pointer:  {hexs(s['pointed'])}",
             f"              transmit portion {s['portion'][0]:#x}: {hexs(s['portion'][1])}",
             f"  b's region  header {r['header']}",
             f"              RX slot {j}: pointer {rbuf:#x} length {rlength} flags {rflags}",
             f"              receive portion {r['portion'][0]:#x}: {hexs(r['portion'][1])}"]
    lines += ["  " + str(e) for e in step.events[-6:]]
    return "\n".join(lines)


# ---- a VM and the COS: the COS's own driver for its (virtual) NIC, x86 at CPL 1 ------------------
PORT = NIC_PORTS[0]
LINE = NIC_IRQS[0]
COS_RING, COS_TX_RING, COS_RX_BUF, COS_TX_BUF, COS_VARS = 0x300000, 0x300100, 0x301000, 0x308000, 0x30F000
COS_SLOTS, COS_BUF_LEN = 4, 0x600


def _outl(reg, value):
    return f"mov dx, {PORT + reg:#x}\n mov eax, {value:#x}\n out dx, eax\n"


def cos_setup_driver(buffers=3):
    """The COS brings its NIC up: rings of 4 in its memory, `buffers` receive buffers given."""
    descs = "".join(f"mov dword ptr [{COS_RING + 16 * i:#x}], {COS_RX_BUF + 0x800 * i:#x}\n"
                    f"mov dword ptr [{COS_RING + 16 * i + 4:#x}], {COS_BUF_LEN:#x}\n"
                    for i in range(COS_SLOTS))
    return ("init:\n" + descs + _outl(RX_BASE, COS_RING) + _outl(RX_COUNT, COS_SLOTS)
            + _outl(RX_TAIL, buffers) + _outl(TX_BASE, COS_TX_RING) + _outl(TX_COUNT, COS_SLOTS)
            + _outl(IMR, 0) + _outl(CTRL, 3) + "ret")


def cos_send_driver(frames):
    """The COS sends `frames` (its source MAC read from the NIC's MAC registers), one doorbell."""
    code = "init:\n"
    for i, f in enumerate(frames):
        buf = COS_TX_BUF + 0x800 * i
        code += "".join(f"mov dword ptr [{buf + o:#x}], {struct.unpack_from('<I', f, o)[0]:#x}\n"
                        for o in range(0, len(f), 4))
        code += (f"mov dx, {PORT + MAC_LO:#x}\n in eax, dx\n mov [{buf + 6:#x}], eax\n"
                 f"mov dx, {PORT + MAC_HI:#x}\n in eax, dx\n mov [{buf + 0xa:#x}], ax\n")
        code += (f"mov dword ptr [{COS_TX_RING + 16 * i:#x}], {buf:#x}\n"
                 f"mov dword ptr [{COS_TX_RING + 16 * i + 4:#x}], {len(f):#x}\n")
    return code + _outl(TX_TAIL, len(frames)) + "ret"


def cos_received(board, i):
    """(length, flags, frame) of the COS's RX descriptor i, read from COS memory."""
    length, flags = struct.unpack("<HH", board.memory.read(COS_RING + 16 * i + 4, 4))
    return length, flags, board.memory.read(COS_RX_BUF + 0x800 * i, length)


def vm_and_cos():
    """VM a on nic1 says hello to the COS (whose NIC is nic0, across the wire), the COS
    answers; VM c on nic0 shares that adapter with the COS. Returns (board, a, what the COS's
    RX descriptor 0 holds, who sent through nic0 as the trace has it)."""
    board, cos, kernel, wire = two_nics()
    takeover.run_module(board, cos, cos_setup_driver())
    cos_mac = kernel.shared["nic0"].mac
    a = vm(kernel, "a", [("send", cos_mac, [b"hello cos"]), ("recv", 2)], "nic1")
    vm(kernel, "c", [("send", a.vmm.net.port.mac, [b"from c, on the COS's adapter"])], "nic0")
    for _ in range(5):
        board.run(RUN)
    got = cos_received(board, 0)
    takeover.run_module(board, cos, cos_send_driver([net_guest.frame(a.vmm.net.port.mac, b"hello vm")]))
    run_until_done(board, a)
    senders = sorted({e["from"] for e in board.trace.of("nic.share_tx") if e["nic"] == "nic0"})
    return board, a, got, senders


# ---- why shared memory ------------------------------------------------------------------------
def comparison_text(frames=140):
    """The shared region and the trap-per-register card, the same frames (60 and 1512 bytes):
    kernel entries per packet on the sender's CPU (CPU.delivered), traps of the sender,
    frames per request (bench_net.py also times them)."""
    from vmkit import bench_net
    out = []
    for size, pio_frames in ((60, frames), (1512, frames // 10)):
        rows = [("trap per register", bench_net.stream(1, frames=pio_frames, pio=True, size=size)),
                ("shared region, batch 1", bench_net.stream(1, frames=frames, size=size)),
                ("shared region, batch 7", bench_net.stream(7, frames=frames, size=size))]
        out.append(f"{f'{size}-byte frames':24}{'kernel entries/packet':>22}{'sender traps/packet':>21}"
                   f"{'frames/request':>16}")
        for label, r in rows:
            per = f"{r[0]:16.1f}" if label.startswith("shared") else f"{'(no requests)':>16}"
            out.append(f"{label:24}{r[7]:22.2f}{r[2]:21.2f}{per}")
        out.append("")
    return "\n".join(out)


# ---- beyond the claims: the host talks to a guest ------------------------------------------------
def bridge_echo(texts=(b"hello from the host",), slices=200):
    """A VM on nic1 echoes; nic1's far end is a UDP socket on 127.0.0.1 (hw/bridge.py). A socket
    of this host sends each text and waits for the reply while the machine runs. Returns
    [(sent, reply)], the bridge's address and its log of host frames (virtual time, frame)."""
    import socket
    from vmkit.hw.bridge import UdpBridge
    board, cos, kernel, _ = two_nics()
    board.nics[1].wire.disconnect()                # nic1's far end: the host instead of nic0
    e = vm(kernel, "e", [("echo", len(texts))], "nic1")
    bridge = UdpBridge(board.nics[1], e.vmm.net.port.mac)
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host.bind(("127.0.0.1", 0))
    host.settimeout(0.01)
    pairs = []
    try:
        for text in texts:
            host.sendto(text, bridge.address)
            reply = None
            for _ in range(slices):
                board.run(RUN // 2)
                try:
                    reply = host.recv(2048)
                    break
                except socket.timeout:
                    pass
            pairs.append((text, reply))
    finally:
        host.close()
        board.close()
    return pairs, bridge.address, bridge.log, console(e)
