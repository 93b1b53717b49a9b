"""Claims 18-20, 39-40: a VM's frames reach the NIC through a shared region and the kernel alone.

The guests are x86 at CPL 3 (vmm/net_guest.py); nic0 and nic1 are joined by a wire, so a
frame a VM on nic0 sends arrives at nic1 and is sorted to the VM whose MAC it names. What is
checked is what the machine did: the region's bytes, the kernel's counters in kernel memory,
the frames on the wire, the interrupt the guest took, what the guest printed.
"""
from collections import Counter

import pytest

from vmkit.hw.nic import CTRL, CTRL_RESET, Wire
from vmkit.kernel import net_ring
from vmkit.kernel.net_ring import NetHeader, PortState, Slot
from vmkit.kernel.vm_net import FLOOD_LIMIT, NET_LINE, NetCounters, vm_mac
from vmkit.lessons import takeover
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import NET_PORT, REQUEST, install_vm_with_net
from vmkit.kernel.worlds import VMError

H = NetHeader.OFFSET


@pytest.fixture
def machine():
    board, cos, loader = takeover.takeover(nics=2)
    wire = Wire(board.nics[0], board.nics[1])
    yield board, loader.kernel, wire
    board.close()


def vm(kernel, name, steps, nic):
    return install_vm_with_net(kernel, net_guest.program(name, steps), net_guest.MEMORY, name, nic)


def mac_of(kernel, nic, index):
    return vm_mac(kernel.shared[nic].mac, index)


def run_until(board, *worlds, limit=40):
    for _ in range(limit):
        if all(b" done" in w.vmm.console or w.state == "crashed" for w in worlds):
            return
        board.run(100_000)
    raise AssertionError([bytes(w.vmm.console) for w in worlds])


def lines(world):
    return bytes(world.vmm.console).decode().splitlines()


def port(world):
    return world.vmm.net.port


def refused(board, mark, vm):
    return [e["counter"] for e in board.trace.since(mark, "net.refused") if e["vm"] == vm]


def send_slot(buffer, length, index=0):
    """x86 for a test: TX slot `index` -> (buffer, length), tx_producer = index + 1, one request."""
    buffer = buffer if isinstance(buffer, str) else f"{buffer:#x}"
    return f"""
        mov dword ptr [ebx + {net_ring.tx_slot(index) + Slot.OFFSET['buffer']:#x}], {buffer}
        mov word ptr [ebx + {net_ring.tx_slot(index) + Slot.OFFSET['length']:#x}], {length:#x}
        mov dword ptr [ebx + {H['tx_producer']:#x}], {index + 1:#x}
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax"""


def test_the_region_is_bytes_of_the_vm_the_counters_bytes_of_the_kernel(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [], "nic0")
    p = port(a)
    assert a.vmm.owns(p.region, net_ring.SIZE) and p.region % net_ring.PAGE == 0   # a guest address
    assert p.host(p.region) == a.region[0] + p.region          # its bytes in host memory
    header = NetHeader.unpack(board.memory.read(p.host(p.region), NetHeader.SIZE))
    assert (header.slots, header.mac) == (net_ring.SLOTS, mac_of(kernel, "nic0", 0))
    assert kernel.contains(p.state) and not a.vmm.owns(p.state)
    assert board.memory.read_u32(p.state) == p.region           # PortState.region, in kernel memory
    run_until(board, a)
    assert board.memory.read_u32(a.vmm.host(net_guest.V_REGION)) == p.region   # the driver found it


def test_two_vms_ping_and_echo_through_the_nic_and_the_wire(machine):
    board, kernel, wire = machine
    b_mac = mac_of(kernel, "nic1", 1)
    a = vm(kernel, "a", [("send", b_mac, [b"ping 1", b"ping 2", b"ping 3"]), ("recv", 3)], "nic0")
    b = vm(kernel, "b", [("echo", 3)], "nic1")
    mark = board.trace.mark()
    run_until(board, a, b)
    assert lines(a) == ["a sent 3", "a got ping 1", "a got ping 2", "a got ping 3", "a done"]
    assert lines(b) == ["b echoed ping 1", "b echoed ping 2", "b echoed ping 3", "b done"]
    a_mac = mac_of(kernel, "nic0", 0)
    on_wire = [(who, f) for _, who, f in wire.tap]
    pings = [net_guest.frame(b_mac, b"ping %d" % i, a_mac) for i in (1, 2, 3)]
    echoes = [net_guest.frame(a_mac, b"ping %d" % i, b_mac) for i in (1, 2, 3)]
    assert on_wire == [("nic0", f) for f in pings] + [("nic1", f) for f in echoes]
    # the last ping sat in a's physical transmit buffer portion; b got it in its receive portion
    pa, pb = port(a), port(b)
    assert board.memory.read(pa.host(pa.region + net_ring.PHYS_TX + 2 * net_ring.BUFFER), 60) == pings[2]
    slot = Slot.unpack(board.memory.read(pb.host(pb.region + net_ring.rx_slot(2)), Slot.SIZE))
    assert (slot.buffer, slot.length) == (pb.region + net_ring.PHYS_RX + 2 * net_ring.BUFFER, 60)
    assert board.memory.read(pb.host(slot.buffer), 60) == pings[2]     # the pointer is b's guest address
    # and each got its frames through its own IDT's gate 0x20 + NET_LINE
    injected = {e["vm"] for e in board.trace.since(mark, "vmm.inject") if e["vector"] == 0x20 + NET_LINE}
    assert injected == {"a", "b"}
    assert pa.counters().frames_sent == 3 and pa.counters().frames_received == 3
    assert pb.counters().frames_sent == 3 and pb.counters().frames_received == 3


def test_every_frame_queued_before_one_request_goes_on_that_request(machine):
    board, kernel, wire = machine
    dst = mac_of(kernel, "nic1", 9)                              # nobody's: only the wire matters
    a = vm(kernel, "a", [("send", dst, [b"one", b"two", b"three", b"four", b"five"]),
                         ("send", dst, [b"six"])], "nic0")
    mark = board.trace.mark()
    run_until(board, a)
    requests = [e["frames"] for e in board.trace.since(mark, "net.request")]
    assert requests == [5, 1]                                    # claim 19: frames per request
    real = [e for e in board.trace.since(mark, "nic.tx") if e["nic"] == "nic0"]
    assert len(real) == 6 and len(wire.tap) == 6
    first = board.trace.since(mark, "net.request", "nic.tx")[:6]
    assert [e.kind for e in first] == ["nic.tx"] * 5 + ["net.request"]
    assert len({e.time for e in first}) == 1                     # all five inside one trapped `out`
    c = port(a).counters()
    assert (c.requests, c.frames_sent, c.tx_consumer) == (2, 6, 6)
    header = NetHeader.unpack(board.memory.read(port(a).host(port(a).region), NetHeader.SIZE))
    assert (header.tx_producer, header.tx_consumer, header.requests) == (6, 6, 2)
    assert [s.flags for s in port(a).slots("tx")[:6]] == [net_ring.DONE] * 6
    assert [s.length for s in port(a).slots("tx")[:6]] == [60] * 6


def test_a_frame_from_the_wire_is_copied_in_and_the_guest_handler_takes_it(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [("recv", 2)], "nic1")
    board.run(100_000)                                           # its driver is up and waiting
    me = mac_of(kernel, "nic1", 0)
    for k, text in enumerate((b"hello a", b"again")):
        wire.inject(board.nics[1], net_guest.frame(me, text, b"\x02\0\0\0\0\x77"), delay=100 + 5000 * k)
    run_until(board, a)
    assert lines(a) == ["a got hello a", "a got again", "a done"]
    inbox = board.memory.read(a.vmm.host(net_guest.INBOX + net_ring.BUFFER), 60)
    assert inbox == net_guest.frame(me, b"again", b"\x02\0\0\0\0\x77")     # what its handler copied
    header = NetHeader.unpack(board.memory.read(port(a).host(port(a).region), NetHeader.SIZE))
    assert (header.rx_producer, header.rx_consumer) == (2, 2)


def test_a_guest_cannot_reach_the_nic_registers(machine):
    board, kernel, wire = machine
    nic = board.nics[0]
    before = (nic.ctrl, nic.rx_base, nic.tx_base, nic.rx_tail)
    a = vm(kernel, "a", [("asm", f"""
        mov edx, {nic.base + CTRL:#x}
        mov eax, {CTRL_RESET:#x}
        out dx, eax
        in eax, dx
        mov [ebx - {net_guest.REGION - 0x3020:#x}], eax"""),
        ("send", mac_of(kernel, "nic1", 5), [b"still works"])], "nic0")
    mark = board.trace.mark()
    run_until(board, a)
    assert (nic.ctrl, nic.rx_base, nic.tx_base, nic.rx_tail) == before
    assert not board.trace.since(mark, "nic.reset")
    assert board.memory.read_u32(a.vmm.host(0x3020)) == 0x800000FF   # not CTRL: the VMM's 0xFF
    assert lines(a) == ["a sent 1", "a done"] and len(wire.tap) == 1


def test_a_guest_touching_another_vms_region_faults_alone(machine):
    board, kernel, wire = machine
    b = vm(kernel, "b", [("recv", 1)], "nic1")
    region = port(b).host(port(b).region)                      # b's region in host memory
    target = region + net_ring.PHYS_RX
    a = vm(kernel, "a", [("asm", f"mov dword ptr [{target:#x}], 0xdeadbeef")], "nic0")
    before = board.memory.read(region, net_ring.SIZE)
    run_until(board, a, limit=5)
    assert a.state == "crashed" and a.fault.startswith("#GP")   # past its segment's limit
    assert board.memory.read(region, net_ring.SIZE) == before
    wire.inject(board.nics[1], net_guest.frame(mac_of(kernel, "nic1", 0), b"for b"))
    run_until(board, b)
    assert lines(b) == ["b got for b", "b done"]


# ---- bad input: refused with a counter in kernel memory and a trace event; the rest goes on --
def bad(machine, code, steps_after=()):
    """VM a runs `code` (ebx = its region), then sends one good frame; b echoes on nic1."""
    board, kernel, wire = machine
    b = vm(kernel, "b", [("echo", 1)], "nic1")
    b_mac = mac_of(kernel, "nic1", 0)
    a = vm(kernel, "a", [("asm", code), *steps_after, ("send", b_mac, [b"good"]), ("recv", 1)], "nic0")
    mark = board.trace.mark()
    others = board.memory.read(b.vmm.base, b.vmm.size)
    run_until(board, a, b)
    assert lines(a)[-3:] == ["a sent 1", "a got good", "a done"]      # the kernel and b go on
    assert lines(b) == ["b echoed good", "b done"]
    return board, kernel, a, b, mark, others


def test_a_pointer_outside_the_region_is_refused(machine):
    board, kernel, wire = machine
    code = send_slot(0x1000, 0x3c)                               # a's own code: its memory, not its region
    board, kernel, a, b, mark, _ = bad(machine, code)
    assert refused(board, mark, "a") == ["refused_pointer"]
    assert port(a).counters().refused_pointer == 1
    assert len(wire.tap) == 2                                   # the good frame and its echo only
    flags = Slot.unpack(board.memory.read(port(a).host(port(a).region + net_ring.tx_slot(0)), Slot.SIZE)).flags
    assert flags == net_ring.DONE | net_ring.ERROR


def test_a_pointer_into_another_vms_memory_reads_nothing_of_it(machine, monkeypatch):
    board, kernel, wire = machine
    b = vm(kernel, "b", [], "nic1")
    region = port(b).host(port(b).region)                      # b's region in host memory
    secret = region + net_ring.FRAMES                          # a's pointer: past a's memory
    board.memory.write(secret, net_guest.frame(b"\xff" * 6, b"b's secret"))
    run_until(board, b)
    a = vm(kernel, "a", [("asm", send_slot(secret, 0x3c))], "nic0")
    reads, real_read = [], board.memory.read

    def read(address, length):                    # every read of emulated memory from Python
        reads.append((address, length))
        return real_read(address, length)
    monkeypatch.setattr(board.memory, "read", read)
    mark = board.trace.mark()
    run_until(board, a)
    assert refused(board, mark, "a") == ["refused_pointer"] and wire.tap == []
                                                 # (b's own traps read its code: not its region)
    assert [(at, n) for at, n in reads if at < region + net_ring.SIZE and at + n > region] == []


def test_a_length_larger_than_the_buffer_is_refused(machine):
    code = f"lea edi, [ebx + {net_ring.FRAMES:#x}]\n" + send_slot("edi", net_ring.BUFFER + 1)
    board, kernel, a, b, mark, _ = bad(machine, code)
    assert refused(board, mark, "a") == ["refused_length"]
    assert port(a).counters().refused_length == 1


def test_a_request_with_nothing_queued_is_refused(machine):
    board, kernel, a, b, mark, _ = bad(machine, f"mov edx, {NET_PORT + REQUEST:#x}\nout dx, eax")
    assert refused(board, mark, "a") == ["empty_requests"]
    assert port(a).counters().empty_requests == 1 and port(a).counters().requests == 2


def test_a_garbage_ring_index_is_refused_and_nothing_is_sent(machine):
    code = (f"mov dword ptr [ebx + {H['tx_producer']:#x}], 0x12345\n"
            f"mov edx, {NET_PORT + REQUEST:#x}\nout dx, eax\n"
            f"mov dword ptr [ebx + {H['tx_producer']:#x}], 0")    # the driver puts it right again
    board, kernel, a, b, mark, _ = bad(machine, code)
    assert refused(board, mark, "a") == ["bad_index"]
    assert port(a).counters().bad_index == 1


def test_a_garbage_rx_index_drops_the_frame_and_counts_it(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [("asm", f"mov dword ptr [ebx + {H['rx_consumer']:#x}], 0xffff")], "nic1")
    run_until(board, a)
    mark = board.trace.mark()
    wire.inject(board.nics[1], net_guest.frame(mac_of(kernel, "nic1", 0), b"lost"))
    board.run(20_000)
    assert refused(board, mark, "a") == ["bad_index"]
    assert port(a).counters().bad_index == 1 and port(a).counters().frames_received == 0
    assert board.memory.read(port(a).host(port(a).region + net_ring.PHYS_RX), 60) == bytes(60)


def test_a_frame_for_an_unknown_mac_is_dropped_and_counted(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [("recv", 1)], "nic1")
    board.run(100_000)
    mark = board.trace.mark()
    wire.inject(board.nics[1], net_guest.frame(mac_of(kernel, "nic1", 7), b"nobody"))
    wire.inject(board.nics[1], net_guest.frame(mac_of(kernel, "nic1", 0), b"a's"), delay=3000)
    run_until(board, a)
    assert lines(a) == ["a got a's", "a done"]
    net = kernel.vm_net
    assert NetCounters.unpack(board.memory.read(net.page, NetCounters.SIZE)).unknown_mac == 1
    assert refused(board, mark, None) == ["unknown_mac"]


def test_a_flood_of_requests_is_cut_at_the_limit_and_the_others_go_on(machine):
    board, kernel, a, b, mark, _ = bad(machine, "nop", steps_after=[("flood", 3 * FLOOD_LIMIT),
                                                                 ("asm", "hlt")])   # a tick later
    c = port(a).counters()
    assert c.flooded > 0 and c.flooded + c.requests == 3 * FLOOD_LIMIT + 1
    assert set(refused(board, mark, "a")) == {"flooded", "empty_requests"}
    assert kernel.cos_ticks() > 0


def test_a_region_that_does_not_fit_is_refused_before_anything_changes(machine):
    board, kernel, wire = machine
    count = len(kernel.worlds.all)
    with pytest.raises(VMError, match="does not fit"):
        install_vm_with_net(kernel, net_guest.program("a", []), 0x8000, "a", "nic0")
    with pytest.raises(VMError, match="not a NIC the kernel shares"):
        install_vm_with_net(kernel, net_guest.program("a", []), net_guest.MEMORY, "a", "nic5")
    assert len(kernel.worlds.all) == count


# ---- a VM and the COS on the shared adapters ----------------------------------------------------
def test_a_vm_and_the_cos_talk_and_share_one_adapter():
    """The COS has no NIC driver of its own (cos/drivers.py only probes the NIC), so its side
    is test_nic_share.py's x86 module driver, at CPL 1, through the kernel's virtual NIC."""
    from test_nic_share import COS_MAC, cos_rx, send_driver, setup_driver
    board, cos, loader = takeover.takeover(nics=2)
    kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
    takeover.run_module(board, cos, setup_driver(buffers=3))
    a = vm(kernel, "a", [("send", COS_MAC, [b"hello cos"]), ("recv", 2)], "nic1")
    c = vm(kernel, "c", [("send", mac_of(kernel, "nic1", 0), [b"from c"])], "nic0")
    for _ in range(10):
        board.run(100_000)
    a_mac = mac_of(kernel, "nic1", 0)
    assert cos_rx(board, 0) == (60, 1, net_guest.frame(COS_MAC, b"hello cos", a_mac))
    takeover.run_module(board, cos, send_driver([net_guest.frame(a_mac, b"hello vm")]))
    run_until(board, a, c)
    assert lines(a) == ["a sent 1", "a got from c", "a got hello vm", "a done"]
    senders = {e["from"] for e in board.trace.of("nic.share_tx") if e["nic"] == "nic0"}
    assert senders == {"cos", "c"}                               # claim 8: one adapter for both
    board.close()


def test_docs_net_md_tables_are_the_declarations():
    import pathlib
    from vmkit.kernel.record import doc_tables
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "net.md").read_text()
    assert doc_tables(doc, net_ring.STRUCTURES) == doc, "run: python -m vmkit.kernel.net_ring docs/net.md"
    for name, value in (("FRAMES", net_ring.FRAMES), ("PHYS_TX", net_ring.PHYS_TX),
                        ("PHYS_RX", net_ring.PHYS_RX), ("SIZE", net_ring.SIZE)):
        assert f"| `{value:#06x}` |" in doc, name


def test_a_sender_with_a_frame_in_every_request_is_never_refused(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [("stream", mac_of(kernel, "nic1", 9), 1, 3 * FLOOD_LIMIT)], "nic0")
    mark = board.trace.mark()
    run_until(board, a)
    c = port(a).counters()
    assert (c.requests, c.frames_sent, c.flooded) == (3 * FLOOD_LIMIT, 3 * FLOOD_LIMIT, 0)
    assert refused(board, mark, "a") == [] and len(wire.tap) == 3 * FLOOD_LIMIT
    per_tick = Counter(e["tick"] for e in board.trace.since(mark, "net.request"))
    assert max(per_tick.values()) > FLOOD_LIMIT                  # the limit would have cut it


def test_ping_and_echo_with_the_vms_on_two_cpus():
    board, cos, loader = takeover.takeover(nics=2, cpus=2)
    kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
    b_mac = mac_of(kernel, "nic1", 1)
    a = install_vm_with_net(kernel, net_guest.program("a", [("send", b_mac, [b"x", b"y"]), ("recv", 2)]),
                            net_guest.MEMORY, "a", "nic0", cpu=0)
    b = install_vm_with_net(kernel, net_guest.program("b", [("echo", 2)]), net_guest.MEMORY, "b", "nic1",
                            cpu=1)
    run_until(board, a, b)
    assert lines(a) == ["a sent 2", "a got x", "a got y", "a done"]
    assert lines(b) == ["b echoed x", "b echoed y", "b done"]
    board.close()


def test_a_broadcast_reaches_every_vm_on_the_nic(machine):
    board, kernel, wire = machine
    a = vm(kernel, "a", [("recv", 1)], "nic1")
    b = vm(kernel, "b", [("recv", 1)], "nic1")
    board.run(100_000)
    wire.inject(board.nics[1], net_guest.frame(b"\xff" * 6, b"to all"))
    run_until(board, a, b)
    assert lines(a) == ["a got to all", "a done"] and lines(b) == ["b got to all", "b done"]
    assert kernel.shared["nic1"].kernel_rx == [net_guest.frame(b"\xff" * 6, b"to all")]


def test_the_same_exchange_twice_gives_the_same_trace():
    def once():
        board, cos, loader = takeover.takeover(nics=2)
        kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
        b_mac = mac_of(kernel, "nic1", 1)
        a = vm(kernel, "a", [("send", b_mac, [b"p1", b"p2"]), ("recv", 2)], "nic0")
        b = vm(kernel, "b", [("echo", 2)], "nic1")
        run_until(board, a, b)
        events = [(e.time, e.kind, sorted(e.data.items()))
                  for e in board.trace.of("net.request", "net.tx", "net.rx", "vmm.inject", "nic.tx")]
        board.close()
        return events, wire.tap
    first, second = once(), once()
    assert first == second and len(first[1]) == 4


def test_a_transmit_step_that_forgets_the_check_cannot_read_past_the_vms_memory(machine):
    """The port's read takes guest addresses through the VMM's checked translation: a pointer
    past the VM's memory, handed to a transmit step that does not check it, stops that VM
    (its fault), and reads nothing of anyone's memory."""
    from vmkit.kernel.vm_net import VmNet

    def unchecked(p, consumer, producer):            # exercise 08's known wrong answer
        for i in range(consumer, producer):
            slot = Slot.unpack(p.read(p.region + net_ring.tx_slot(i), Slot.SIZE))
            copy = p.region + net_ring.PHYS_TX + i * net_ring.BUFFER
            p.write(copy, p.read(slot.buffer, slot.length))
            p.hand_to_nic(i, copy, slot.length)
    board, kernel, wire = machine
    VmNet.of(kernel).transmit = unchecked
    b = vm(kernel, "b", [("recv", 1)], "nic1")
    past = net_guest.MEMORY                           # the first guest address past a's memory
    a = vm(kernel, "a", [("asm", send_slot(past, 0x3c))], "nic0")
    run_until(board, a)
    assert a.state == "crashed" and wire.tap == []
    assert a.fault == (f"a network buffer at guest address {past:#x} (+60) is outside the VM's "
                       f"memory (0..{net_guest.MEMORY - 1:#x})")
    wire.inject(board.nics[1], net_guest.frame(mac_of(kernel, "nic1", 0), b"for b"))
    run_until(board, b)
    assert lines(b) == ["b got for b", "b done"] and board.cpu.shutdown is None


def stores(offset, data):
    """x86: `data` stored at [ebx + offset], a dword at a time."""
    data = bytes(data).ljust(-(-len(data) // 4) * 4, b"\0")
    return "\n".join(f"mov dword ptr [ebx + {offset + k:#x}], {int.from_bytes(data[k:k + 4], 'little'):#x}"
                     for k in range(0, len(data), 4))


def test_a_frame_with_a_source_mac_not_the_vms_is_dropped_and_counted(machine):
    board, kernel, wire = machine
    b = vm(kernel, "b", [("recv", 1)], "nic1")
    b_mac = mac_of(kernel, "nic1", 0)
    c_mac = mac_of(kernel, "nic0", 2)                       # c: another VM on a's own NIC
    cos_mac = kernel.shared["nic0"].mac
    spoofed = [net_guest.frame(b_mac, b"as the COS", cos_mac), net_guest.frame(b_mac, b"as c", c_mac)]
    code = "\n".join(stores(net_ring.FRAMES + k * net_ring.BUFFER, f) + "\n" +
                     f"mov word ptr [ebx + {net_ring.tx_slot(k) + Slot.OFFSET['length']:#x}], 60" +
                     f"\nlea edi, [ebx + {net_ring.FRAMES + k * net_ring.BUFFER:#x}]"
                     f"\nmov [ebx + {net_ring.tx_slot(k):#x}], edi" for k, f in enumerate(spoofed))
    code += f"\nmov dword ptr [ebx + {H['tx_producer']:#x}], 2\nmov edx, {NET_PORT + REQUEST:#x}\nout dx, eax"
    a = vm(kernel, "a", [("asm", code), ("send", b_mac, [b"good"])], "nic0")
    vm(kernel, "c", [], "nic0")
    mark = board.trace.mark()
    run_until(board, a, b)
    good = net_guest.frame(b_mac, b"good", mac_of(kernel, "nic0", 1))
    assert [(who, f) for _, who, f in wire.tap] == [("nic0", good)]      # nothing spoofed on the wire
    assert lines(b) == ["b got good", "b done"]
    pb = port(b)                                           # b's ring: one frame, the good one
    header = NetHeader.unpack(board.memory.read(pb.host(pb.region), NetHeader.SIZE))
    slot = Slot.unpack(board.memory.read(pb.host(pb.region + net_ring.rx_slot(0)), Slot.SIZE))
    assert header.rx_producer == 1 and board.memory.read(pb.host(slot.buffer), 60) == good
    pa = port(a)                                           # a's counters, in kernel memory
    state = board.memory.read(pa.state, PortState.SIZE)
    assert PortState.unpack(state).refused_source == 2 and PortState.unpack(state).frames_sent == 1
    flags = [Slot.unpack(board.memory.read(pa.host(pa.region + net_ring.tx_slot(k)), Slot.SIZE)).flags
             for k in range(3)]
    assert flags == [net_ring.DONE | net_ring.ERROR] * 2 + [net_ring.DONE]
    assert refused(board, mark, "a") == ["refused_source"] * 2
    assert [e["frames"] for e in board.trace.since(mark, "net.request") if e["vm"] == "a"] == [0, 1]


def test_a_sink_on_its_own_cpu_keeps_up_with_a_sender_in_batches_of_three():
    """The sink's handler copies a 60-byte frame in 15 dword moves: ~32 instructions a frame,
    less than the sender's ~57 at batches of 3, so its 7 RX slots never fill (a byte copy,
    ~77 a frame, lost a quarter of them: docs/net.md)."""
    board, cos, loader = takeover.takeover(nics=2, cpus=2)
    kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
    sink = install_vm_with_net(kernel, net_guest.program("sink", [("sink", 150)]), net_guest.MEMORY,
                               "sink", "nic1", cpu=1)
    src = install_vm_with_net(kernel, net_guest.program("src", [("stream", port(sink).mac, 3, 50)]),
                              net_guest.MEMORY, "src", "nic0", cpu=0)
    run_until(board, sink, src)
    state = PortState.unpack(board.memory.read(port(sink).state, PortState.SIZE))   # kernel memory
    board.close()
    assert (state.frames_received, state.rx_dropped) == (150, 0)
    assert lines(sink) == ["sink sank 150", "sink done"]
