"""Grades exercise 08: the learner's transmit is the running kernel's transmit
step (VmNet.transmit) on a machine with two NICs joined by a wire. VM a on nic0
pings VM b on nic1 in three requests, the third wrapping the ring (slots 5, 6, 7,
0); b echoes every frame back. What is checked is what the machine did: the
frames on the wire, the bytes of a's physical transmit buffer portion, its TX
slots' flags, the NIC's descriptors, the kernel's counters in kernel memory, the
guests' consoles. Then VM m queues, in one request, slots it should not (a
pointer to bytes of its memory outside its region, lengths one past each bound,
frames one byte past either end of its frames) and frames exactly at each bound,
which must go; then one good frame in the ring's last slot. VM f points a slot
past all its memory, where a read is its fault: refused, f must go on. Every address in the
region is a guest address (the guest sees its memory from 0): the port's read,
write and hand_to_nic translate them, checked, to host memory."""
import struct

from vmkit.grading import limit
from vmkit.hw.nic import DESC_SIZE, MAX_FRAME, MIN_FRAME, Wire
from vmkit.kernel import net_ring
from vmkit.kernel.net_ring import BUFFER, NetHeader, Slot
from vmkit.kernel.nic_share import TX_RING, TX_SLOTS
from vmkit.kernel.vm_net import VmNet
from vmkit.lessons import takeover
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import NET_PORT, REQUEST, install_vm_with_net

# Three requests: the third wraps the ring (slots 5, 6, 7, 0) and ends in a frame of an odd
# length whose last byte is not the zero of a frame's padding (a copy one byte short shows).
PINGS = ([b"ping 1", b"ping 2", b"ping 3"], [b"ping 4", b"ping 5"],
         [b"ping 6", b"ping 7", b"ping 8", b"ping 9 " + b"of an odd length, its last byte not a zero: z"])
SENT = sum(len(batch) for batch in PINGS)
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
            k = next(k for k in range(len(got[lo:hi])) if got[lo + k] != want[lo + k])
            return (f"its {name} differs from byte {lo + k} of the frame on: "
                    f"{got[lo + k:hi][:16].hex()}, the driver wrote {want[lo + k:hi][:16].hex()}")
    return None


def _descriptors(board, kernel, nic):
    area = kernel.shared[nic].area + TX_RING
    return [struct.unpack("<IH", board.memory.read(area + k * DESC_SIZE, 6)) for k in range(TX_SLOTS)]


def _request(port, consumer, producer):
    return (f"your transmit, called for {port.vmm.name}'s request with TX slots consumer {consumer} .. "
            f"producer {producer}{' (the ring wraps)' if producer < consumer else ''},")


def _closing(check):
    """The board is closed however the check ends (a wrong answer may raise in the kernel);
    a call of the learner's that does not return is stopped and named (limit.py)."""
    def run(transmit):
        machine = _machine(limit.bounded(transmit, _request))
        try:
            return check(*machine)
        except limit.Stopped as e:
            return (f"{e} The loop takes i from consumer round the ring, i = (i + 1) % SLOTS, and "
                    f"stops when i == producer" if e.hung else str(e))
        finally:
            machine[0].close()
    run.__name__ = check.__name__
    return run


@_closing
def check_ping_echo(board, kernel, wire):
    b = _vm(kernel, "b", [("echo", SENT)], "nic1")
    b_mac = b.vmm.net.port.mac
    a = _vm(kernel, "a", [("send", b_mac, PINGS[0]), ("send", b_mac, PINGS[1]),   # a's inbox holds 8:
                          ("recv", len(PINGS[0]) + len(PINGS[1])),                # the echoes are taken
                          ("send", b_mac, PINGS[2]), ("recv", len(PINGS[2]))], "nic0")
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
    batches = [b for b, batch in enumerate(PINGS) for _ in batch]
    for k, frame in enumerate(want):
        slot = k % net_ring.SLOTS                  # the driver's slots in turn, round the ring
        carried = [f for f in sent if f[14:20] == payloads[k][:6]]      # "ping k": found, then compared
        if not carried:
            batch = batches[k]
            first = batches.index(batch) % net_ring.SLOTS
            last = (first + len(PINGS[batch]) - 1) % net_ring.SLOTS
            wrapped = (f" The ring wraps: this request's slots were {first}..{net_ring.SLOTS - 1} "
                       f"and 0..{last} (consumer {first}, producer {last + 1}): after slot "
                       f"{net_ring.SLOTS - 1} comes slot 0, i = (i + 1) % SLOTS"
                       if last < first else "")
            return (f"the wire carried {len(sent)} of a's {SENT} pings: frame {k + 1} (TX slot {slot}, "
                    f"request {batch + 1}) never went. A request queued "
                    f"{len(PINGS[batch])} frames; send every slot from consumer up to producer "
                    f"(claim 19), not only the first.{wrapped}")
        problem = _diff(carried[0], frame)
        if problem:
            return f"frame {k + 1} on the wire (a's TX slot {slot}): {problem}"
    last = {k % net_ring.SLOTS: (k, frame) for k, frame in enumerate(want)}     # slot 0: ping 9's
    for slot, (k, frame) in sorted(last.items()):
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
        if c.frames_sent != SENT:
            return (f"{w.name}'s frames_sent counter is {c.frames_sent}, it sent {SENT}: hand each frame "
                    f"with port.hand_to_nic (it counts)")
    for slot in range(net_ring.SLOTS):             # all eight were used, slot 0 twice
        flags = Slot.unpack(pa.read(pa.region + net_ring.tx_slot(slot), Slot.SIZE)).flags
        if flags != net_ring.DONE:
            return (f"a's TX slot {slot} has flags {flags:#x}, not DONE ({net_ring.DONE:#x}), though its frame "
                    f"went: the flags tell the driver the kernel is through with the slot. "
                    f"port.hand_to_nic(i, ...) marks slot i: give it the slot's own index")
    text = bytes(a.vmm.console).decode("latin-1").splitlines()
    if [ln for ln in text if ln.startswith("a got")] != [f"a got {p.decode()}" for p in payloads]:
        return f"a's console is {text}: the echoes did not all come back"
    return None


# VM m's one request, slot by slot: (what the slot has, its pointer as an offset from the
# region, its length, the counter that refuses it or None for a frame that must go). Each bound
# is tried on both sides: a check off by one, or one that forgets the frame's length, shows.
REGION_END = net_ring.FRAMES + net_ring.SLOTS * BUFFER
SECRET_AT = 0x3f00                                  # a guest address of m's: its memory, not its region
M_SLOTS = [
    ("a pointer outside its region's frames", None, 60, "refused_pointer"),
    (f"a length of {MAX_FRAME + 1} bytes (MAX_FRAME + 1)", net_ring.FRAMES, MAX_FRAME + 1, "refused_length"),
    (f"a length of {MIN_FRAME - 1} bytes (MIN_FRAME - 1, less than a header)", net_ring.FRAMES,
     MIN_FRAME - 1, "refused_length"),
    ("a frame of 60 bytes whose last byte is one past its region's frames", REGION_END - 59, 60,
     "refused_pointer"),
    ("a frame of 60 bytes just before its region's frames (in the region's first page)",
     net_ring.FRAMES - 60, 60, "refused_pointer"),
    (f"a frame of MAX_FRAME ({MAX_FRAME}) bytes ending on the last byte of its region's frames",
     REGION_END - MAX_FRAME, MAX_FRAME, None),
    (f"a frame of MIN_FRAME ({MIN_FRAME}) bytes, a header alone, at the first byte of its region's frames",
     net_ring.FRAMES, MIN_FRAME, None),
]
NOBODY = bytes.fromhex("02000000ff99")              # the good slots' destination: no VM's MAC
FAR = 0xFFFFF000                                    # VM f's slot: a pointer past all its memory


def _marker(i):
    return b"m's TX slot %d" % i


def _slot(index, buffer, length):
    at = net_ring.tx_slot(index)
    return f"""
        mov dword ptr [ebx + {at + Slot.OFFSET['buffer']:#x}], {buffer}
        mov word ptr [ebx + {at + Slot.OFFSET['length']:#x}], {length:#x}"""


def _refusal_frames(board, m):
    """Each slot's bytes, written into m's memory before it runs: its own source MAC in each
    (the kernel's source check, Port.hand_to_nic, must not be what stops a frame), a marker
    to find it on the wire, a last byte that is not zero. Longest first: slot 3's frame,
    written after slot 5's, is the last 59 bytes of the frames and one byte past them.
    {slot: (guest address, the bytes there at its length)}."""
    pm = m.vmm.net.port
    where = {i: (SECRET_AT if offset is None else pm.region + offset, length)
             for i, (_, offset, length, _) in enumerate(M_SLOTS)}
    for i in sorted(where, key=lambda i: -where[i][1]):
        at, length = where[i]
        head = NOBODY + pm.mac + net_guest.ETHERTYPE
        body = (SECRET if M_SLOTS[i][1] is None else _marker(i)).ljust(max(length - 15, 0), b".") + b"z"
        board.memory.write(m.vmm.host(at, length), (head + body)[:length], code=False)
    return {i: (at, pm.read(at, length)) for i, (at, length) in where.items()}


@_closing
def check_refusals(board, kernel, wire):
    b = _vm(kernel, "b", [("echo", 2)], "nic1")
    b_mac = b.vmm.net.port.mac
    code = ""
    for i, (_, offset, length, _) in enumerate(M_SLOTS):
        code += (_slot(i, f"{SECRET_AT:#x}", length) if offset is None
                 else f"\n        lea edi, [ebx + {offset:#x}]" + _slot(i, "edi", length))
    code += f"""
        mov dword ptr [ebx + {NetHeader.OFFSET['tx_producer']:#x}], {len(M_SLOTS):#x}
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax"""
    # then one good frame in the last slot: the ring wraps (consumer 7, producer 0)
    m = _vm(kernel, "m", [("asm", code), ("send", b_mac, [b"good"]), ("recv", 1)], "nic0")
    # VM f: a request whose one slot points past all of f's memory (a read there is f's fault,
    # GuestFault: the kernel stops f), then a good frame
    far = _slot(0, f"{FAR:#x}", 60) + f"""
        mov dword ptr [ebx + {NetHeader.OFFSET['tx_producer']:#x}], 1
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax"""
    fv = _vm(kernel, "f", [("asm", far), ("send", b_mac, [b"again"]), ("recv", 1)], "nic0")
    frames = _refusal_frames(board, m)
    _run(board, m, b, fv)
    pm = m.vmm.net.port
    tap = [f for _, who, f in wire.tap if who == "nic0"]
    for i, (what, offset, length, counter) in enumerate(M_SLOTS):
        at = frames[i][0]
        if counter == "refused_pointer" and any(f.startswith(frames[i][1][:30]) for f in tap):
            where = ("in m's memory but outside its region" if offset is None else
                     f"region + {offset:#x}, in m's region but not in its frames (region + {net_ring.FRAMES:#x}"
                     f" .. region + {REGION_END:#x})")
            return (f"TX slot {i} of VM m had {what}: {length} bytes at {at:#x}, {where}, and those bytes "
                    f"went on the wire: check that the whole frame, buffer .. buffer + length, lies in "
                    f"m's region's frames (frames <= buffer and buffer + length <= frames + SLOTS * "
                    f"BUFFER) before reading a byte")
    if fv.state == "crashed":
        return (f"VM f was stopped ({fv.fault}). Its TX slot 0 pointed at {FAR:#x}, past all of f's "
                f"memory: reading there (port.read) is f's fault and the kernel stops f. A bad "
                f"pointer is refused (port.refuse(i, 'refused_pointer', why)) before a byte is read, "
                f"and the VM goes on")
    c = pm.counters()
    for i, (what, _, length, counter) in enumerate(M_SLOTS):
        flags = Slot.unpack(pm.read(pm.region + net_ring.tx_slot(i), Slot.SIZE)).flags
        if counter and flags != net_ring.DONE | net_ring.ERROR:
            return (f"TX slot {i} of VM m had {what}; its flags are {flags:#x}, not DONE | ERROR: "
                    f"port.refuse(i, {counter!r}, why) it")
        if not counter and flags != net_ring.DONE:
            return (f"TX slot {i} of VM m had {what}: a frame that may go, but its flags are {flags:#x}, "
                    f"not DONE ({net_ring.DONE:#x}){'' if flags & net_ring.ERROR == 0 else ': it was refused'}. "
                    f"Both ends of a range are allowed: MIN_FRAME <= length <= MAX_FRAME, and "
                    f"frames <= buffer <= frames + SLOTS * BUFFER - length")
    want = {"refused_pointer": 0, "refused_length": 0}
    for _, _, _, counter in M_SLOTS:
        if counter:
            want[counter] += 1
    got = {n: getattr(c, n) for n in want}
    if got != want:
        return (f"m's counters say {got}, its slots deserved {want} ("
                + "; ".join(f"slot {i}: {w}" for i, (w, _, _, n) in enumerate(M_SLOTS) if n)
                + "): check the length (MIN_FRAME..MAX_FRAME) first, then the pointer")
    for i, (what, _, length, counter) in enumerate(M_SLOTS):
        if counter is None and frames[i][1] not in tap:
            near = [f for f in tap if f[:14] == frames[i][1][:14] and len(f) in (length - 1, length, length + 1)]
            return (f"TX slot {i} of VM m had {what}; the wire did not carry it as the driver wrote it"
                    + (f" (it carried {len(near[0])} bytes: {_diff(near[0], frames[i][1])})" if near else "")
                    + ": copy slot.length bytes from slot.buffer and hand the NIC that length")
    good = [f for f in tap if b"good" in f[14:20]]
    if len(good) != 1 or b"m got good" not in bytes(m.vmm.console):
        return (f"after its first request m queued one good frame in TX slot {net_ring.SLOTS - 1}, the "
                f"last of the ring (consumer {net_ring.SLOTS - 1}, producer 0: the ring wraps, "
                f"i = (i + 1) % SLOTS); it should go and come back: the wire from nic0 carried it "
                f"{len(good)} time(s), m printed {bytes(m.vmm.console)[-60:]!r}")
    flags = Slot.unpack(fv.vmm.net.port.read(fv.vmm.net.port.region + net_ring.tx_slot(0), Slot.SIZE)).flags
    refused = fv.vmm.net.port.counters().refused_pointer
    again = [frame for frame in tap if b"again" in frame[14:20]]
    if flags != net_ring.DONE | net_ring.ERROR or refused != 1:
        return (f"VM f's TX slot 0 pointed at {FAR:#x}, past all its memory: its flags are {flags:#x} and "
                f"f's refused_pointer counter {refused}, not DONE | ERROR and 1: port.refuse(i, "
                f"'refused_pointer', why) it")
    if len(again) != 1 or b"f got again" not in bytes(fv.vmm.console):
        return (f"after its request with a pointer past its memory (TX slot 0), f queued a good frame in "
                f"slot 1: the wire from nic0 carried it {len(again)} time(s), f printed "
                f"{bytes(fv.vmm.console)[-60:]!r}")
    return None


CHECKS = [("ping and echo in batches, through your step", 5, check_ping_echo),
          ("bad pointers and lengths refused", 3, check_refusals)]
FUNCTION = "transmit"
