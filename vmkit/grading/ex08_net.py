"""Grades exercise 08: the learner's transmit is the running kernel's transmit
step (VmNet.transmit) on a machine with two NICs joined by a wire. VM a on nic0
pings VM b on nic1 in batches (one request each); b echoes every frame back.
What is checked is what the machine did: the frames on the wire, the bytes of
a's physical transmit buffer portion, the NIC's descriptors, the kernel's
counters in kernel memory, the guests' consoles. Then VM m queues slots it
should not (a pointer to bytes of its memory outside its region's frames,
lengths no frame has) before one good frame. Every address in the region is a
guest address (the guest sees its memory from 0): the port's read, write and
hand_to_nic translate them, checked, to host memory."""
import struct

from vmkit.hw.nic import DESC_SIZE, MAX_FRAME, Wire
from vmkit.kernel import net_ring
from vmkit.kernel.net_ring import BUFFER, NetHeader, Slot
from vmkit.kernel.nic_share import TX_RING, TX_SLOTS
from vmkit.kernel.vm_net import VmNet
from vmkit.lessons import takeover
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import NET_PORT, REQUEST, install_vm_with_net

PINGS = ([b"ping 1", b"ping 2", b"ping 3"], [b"ping 4", b"ping 5"])
FIELDS = (("destination MAC", 0, 6), ("source MAC", 6, 12), ("type", 12, 14), ("payload", 14, None))
SECRET = b"m's private bytes"


def _machine(transmit):
    board, cos, loader = takeover.takeover(nics=2)
    VmNet.of(loader.kernel).transmit = transmit
    return board, loader.kernel, Wire(board.nics[0], board.nics[1])


def _vm(kernel, name, steps, nic):
    return install_vm_with_net(kernel, net_guest.program(name, steps), net_guest.MEMORY, name, nic)


def _run(board, *worlds):
    for _ in range(40):
        if all(b" done" in w.vmm.console or w.state == "crashed" for w in worlds):
            return
        board.run(100_000)


def _diff(got, want):
    """The first field of an Ethernet frame that differs, in words."""
    if len(got) != len(want):
        return f"its length is {len(got)} bytes, the driver's slot said {len(want)}"
    for name, lo, hi in FIELDS:
        if got[lo:hi] != want[lo:hi]:
            return f"its {name} is {got[lo:hi][:16].hex()}, the driver wrote {want[lo:hi][:16].hex()}"
    return None


def _descriptors(board, kernel, nic):
    area = kernel.shared[nic].area + TX_RING
    return [struct.unpack("<IH", board.memory.read(area + k * DESC_SIZE, 6)) for k in range(TX_SLOTS)]


def _closing(check):
    """The board is closed however the check ends (a wrong answer may raise in the kernel)."""
    def run(transmit):
        machine = _machine(transmit)
        try:
            return check(*machine)
        finally:
            machine[0].close()
    run.__name__ = check.__name__
    return run


@_closing
def check_ping_echo(board, kernel, wire):
    b = _vm(kernel, "b", [("echo", 5)], "nic1")
    b_mac = b.vmm.net.port.mac
    a = _vm(kernel, "a", [("send", b_mac, PINGS[0]), ("send", b_mac, PINGS[1]), ("recv", 5)], "nic0")
    a_mac = a.vmm.net.port.mac
    _run(board, a, b)
    pa = a.vmm.net.port
    want = [net_guest.frame(b_mac, p, a_mac) for batch in PINGS for p in batch]
    sent = [f for _, who, f in wire.tap if who == "nic0"]
    if not sent:
        return ("nothing of a's went on the wire (its frames_sent counter is "
                f"{a.vmm.net.port.counters().frames_sent}): after the copy, hand it to the NIC "
                "with port.hand_to_nic(i, copy_address, length)")
    payloads = [p for batch in PINGS for p in batch]
    for k, frame in enumerate(want):
        slot = k                                   # slots 0..4: the driver's first five
        carried = [f for f in sent if f[14:14 + len(payloads[k])] == payloads[k]]
        if not carried:
            batch = 0 if k < 3 else 1
            return (f"the wire carried {len(sent)} of a's 5 pings: frame {k + 1} (TX slot {slot}, "
                    f"request {batch + 1}) never went. A request queued "
                    f"{len(PINGS[batch])} frames; send every slot from consumer up to producer "
                    f"(claim 19), not only the first")
        problem = _diff(carried[0], frame)
        if problem:
            return f"frame {k + 1} on the wire (a's TX slot {slot}): {problem}"
        copy = pa.region + net_ring.PHYS_TX + slot * BUFFER          # a guest address
        if board.memory.read(pa.host(copy, len(frame)), len(frame)) != frame:
            return (f"frame {k + 1} (TX slot {slot}) is not in the physical transmit buffer portion at "
                    f"region + PHYS_TX + {slot} * BUFFER = {copy:#x}: copy each slot's frame to its "
                    f"own buffer there")
    for buffer, length in _descriptors(board, kernel, "nic0"):
        lo = pa.host(pa.region + net_ring.PHYS_TX)                   # descriptors: host addresses
        if not lo <= buffer < lo + net_ring.SLOTS * BUFFER:
            where = ("the driver's own frame (slot.buffer)" if pa.host(pa.region) <= buffer < lo
                     else "no buffer of the transmit portion")
            return (f"a descriptor of nic0 names host address {buffer:#x}, {where}: hand the NIC the "
                    f"copy in the physical transmit buffer portion (region + PHYS_TX ..), which the "
                    f"guest cannot change while the NIC reads it")
    if len(sent) > len(want):
        return f"the wire carried {len(sent)} frames from a, it queued {len(want)}: a slot went twice?"
    for w in (a, b):
        c = w.vmm.net.port.counters()
        if c.frames_sent != 5:
            return (f"{w.name}'s frames_sent counter is {c.frames_sent}, it sent 5: hand each frame "
                    f"with port.hand_to_nic (it counts)")
    text = bytes(a.vmm.console).decode("latin-1").splitlines()
    if [ln for ln in text if ln.startswith("a got")] != [f"a got ping {k}" for k in range(1, 6)]:
        return f"a's console is {text}: the echoes did not all come back"
    return None


def _slot(index, buffer, length):
    at = net_ring.tx_slot(index)
    return f"""
        mov dword ptr [ebx + {at + Slot.OFFSET['buffer']:#x}], {buffer}
        mov word ptr [ebx + {at + Slot.OFFSET['length']:#x}], {length:#x}"""


@_closing
def check_refusals(board, kernel, wire):
    secret = 0x3f00                                 # a guest address of m's: its memory, not its region
    b = _vm(kernel, "b", [("echo", 1)], "nic1")
    b_mac = b.vmm.net.port.mac
    frames = f"ebx + {net_ring.FRAMES:#x}"
    bad = [("a pointer outside its region's frames", secret, 60, "refused_pointer"),
           (f"a length of {MAX_FRAME + 500} bytes (more than MAX_FRAME)", None, MAX_FRAME + 500,
            "refused_length"),
           ("a length of 4 bytes (less than a header)", None, 4, "refused_length")]
    code = ""
    for i, (_, pointer, length, _) in enumerate(bad):
        code += (f"\n        lea edi, [{frames}]" + _slot(i, "edi", length) if pointer is None
                 else _slot(i, f"{pointer:#x}", length))
    code += f"""
        mov dword ptr [ebx + {NetHeader.OFFSET['tx_producer']:#x}], {len(bad):#x}
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax"""
    m = _vm(kernel, "m", [("asm", code), ("send", b_mac, [b"good"]), ("recv", 1)], "nic0")
    # m's own source MAC in it: the kernel's source check (Port.hand_to_nic) must not be what stops it
    board.memory.write(m.vmm.host(secret, 60), net_guest.frame(b"\xff" * 6, SECRET, m.vmm.net.port.mac),
                       code=False)
    _run(board, m, b)
    pm = m.vmm.net.port
    for _, who, f in wire.tap:
        if SECRET in f:
            return (f"TX slot 0 of VM m pointed at {secret:#x}, in m's memory but outside its region's "
                    f"frames, and those bytes went on the wire: check that buffer .. buffer + length "
                    f"lies in m's region's frames (port.region + FRAMES .. + SLOTS * BUFFER) before "
                    f"reading a byte")
    c = pm.counters()
    for i, (what, _, length, counter) in enumerate(bad):
        flags = Slot.unpack(pm.read(pm.region + net_ring.tx_slot(i), Slot.SIZE)).flags
        if flags != net_ring.DONE | net_ring.ERROR:
            return (f"TX slot {i} of VM m had {what}; its flags are {flags:#x}, not DONE | ERROR: "
                    f"port.refuse(i, {counter!r}, why) it")
    want = {"refused_pointer": 1, "refused_length": 2}
    got = {n: getattr(c, n) for n in want}
    if got != want:
        return (f"m's counters say {got}, its slots deserved {want} ("
                + "; ".join(f"slot {i}: {w}" for i, (w, _, _, _) in enumerate(bad))
                + "): check the length (MIN_FRAME..MAX_FRAME) first, then the pointer")
    good = [f for _, who, f in wire.tap if who == "nic0"]
    if len(good) != 1 or b"good" not in good[0] or b"good" not in bytes(m.vmm.console):
        return (f"after the refused slots m's good frame should go and come back; the wire from nic0 "
                f"carried {len(good)} frames, m printed {bytes(m.vmm.console)[-60:]!r}")
    return None


CHECKS = [("ping and echo in batches, through your step", 5, check_ping_echo),
          ("bad pointers and lengths refused", 3, check_refusals)]
FUNCTION = "transmit"
