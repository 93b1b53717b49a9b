"""Why shared memory: the same frames sent by a card that traps at every register access
(vmm/net_pio.py) and through the shared region (vm_net.py). What is counted is what the machine
did: the vectors the sender's CPU delivered (CPU.delivered: every kernel entry, the guest's
#GP on `out` included) and the frames on the wire."""
import re

from vmkit.hw.nic import Wire
from vmkit.lessons import takeover
from vmkit.vmm import net_guest, net_pio
from vmkit.vmm.net_device import install_vm_with_net
from vmkit.vmm.net_pio import install_vm_with_pio_net

FRAMES = 140


def send(pio, batch=7, size=60, frames=FRAMES):
    """(frames on the wire from nic0, the sender CPU's kernel entries per frame, sender traps per frame)."""
    board, cos, loader = takeover.takeover(nics=2, cpus=2)
    kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
    sink = install_vm_with_net(kernel, net_guest.program("sink", [("sink", frames)]),
                               net_guest.MEMORY, "sink", "nic1", cpu=1)
    dst = sink.vmm.net.port.mac
    if pio:
        src = install_vm_with_pio_net(kernel, net_pio.program("src", dst, frames, size),
                                      net_guest.MEMORY, "src", "nic0", cpu=0)
    else:
        src = install_vm_with_net(kernel, net_guest.program(
            "src", [("stream", dst, batch, frames // batch, size)]), net_guest.MEMORY, "src", "nic0", cpu=0)
    cpu, traps = board.cpus[0], src.vmm.vcpu.traps
    entries = cpu.delivered
    for _ in range(100):
        if b"src done" in src.vmm.console:
            break
        board.run(20_000)
    entries, traps = cpu.delivered - entries, src.vmm.vcpu.traps - traps
    sent = [f for _, who, f in wire.tap if who == "nic0"]
    requests = src.vmm.net.port.counters().requests
    board.close()
    return sent, entries / len(sent), traps / len(sent), dst, src.vmm.net.port.mac, requests


def test_the_trap_per_register_card_costs_a_kernel_entry_per_dword():
    sent, entries, traps, dst, mac, _ = send(pio=True)
    assert sent == [net_guest.frame(dst, b"frame", mac)] * FRAMES      # the same bytes on the wire
    # 15 dwords, the length, the command, the status: 18 a frame (+ the setup and its timer's, a few)
    assert 18 <= traps < 18 + 1, traps
    assert entries >= traps


def test_the_shared_region_costs_a_kernel_entry_per_batch_ten_times_fewer():
    sent, shared, traps, dst, mac, requests = send(pio=False)
    assert len(sent) == FRAMES and requests == FRAMES // 7        # one request a batch (claim 19)
    assert traps < 0.5, traps                                       # those, the setup's, the timer's
    pio = send(pio=True)[1]
    assert pio >= 10 * shared, (pio, shared)


def test_a_full_size_frame_costs_the_card_a_trap_per_dword_and_the_region_nothing_more():
    sent, pio, traps, dst, mac, _ = send(pio=True, size=1512, frames=7)
    assert len(sent) == 7 and all(len(f) == 1512 for f in sent)
    assert traps >= 1512 // 4 + 3                                  # 378 dwords, length, command, status
    sent, shared, _, _, _, requests = send(pio=False, size=1512, frames=FRAMES)
    assert len(sent) == FRAMES and all(len(f) == 1512 for f in sent) and requests == FRAMES // 7
    assert pio >= 100 * shared, (pio, shared)



def test_the_cards_frame_with_a_source_mac_not_the_vms_is_dropped_and_counted():
    board, cos, loader = takeover.takeover(nics=2)
    kernel, wire = loader.kernel, Wire(board.nics[0], board.nics[1])
    guest = net_pio.program("src", b"\x02\x00\x00\x00\x10\x09", 3)

    def spoofing(base):                             # the card's address (in eax, dx) never stored: source 0
        lines = guest(base).splitlines()
        stores = [k for k, line in enumerate(lines) if re.fullmatch(r"\s*mov \[0x[0-9a-f]+\], e?ax", line)]
        assert len(stores) == 2, stores
        return "\n".join("        nop" if k in stores else line for k, line in enumerate(lines))
    src = install_vm_with_pio_net(kernel, spoofing, net_guest.MEMORY, "src", "nic0")
    for _ in range(40):
        if b"src done" in src.vmm.console:
            break
        board.run(20_000)
    c = src.vmm.net.port.counters()
    board.close()
    assert b"src done" in src.vmm.console and wire.tap == []       # nothing reached the wire
    assert (c.refused_source, c.frames_sent) == (3, 0)
