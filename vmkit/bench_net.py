"""A VM's network path, measured (`./kit bench`, with bench.py). Asserts nothing.

Claim 19 in figures: a driver that queues a batch before its one request
makes a kernel entry per batch, not per frame. Each row is one VM on nic0
streaming frames over the wire to a VM on nic1 that takes them in its
interrupt handler; the figures are counted by the machine (the kernel's
PortState counters in kernel memory, the NIC's frames on the wire, the VM's
traps into its VMM), and packets/s is wall time, so only the ratio between
rows means much on a noisy machine.
"""
import time

from vmkit.hw.nic import Wire
from vmkit.lessons import takeover
from vmkit.vmm import net_guest, net_pio
from vmkit.vmm.net_device import install_vm_with_net
from vmkit.vmm.net_pio import install_vm_with_pio_net

PIO_FRAMES = 300          # the trap-per-register path is slow: fewer frames, the same rate


def stream(batch, frames=2100, cpus=2, pio=False, size=60):
    """(frames per request, requests per frame, sender traps per frame, frames/s wall,
    frames the receiver took, frames it dropped, virtual instructions, kernel entries per
    frame on the sender's CPU). pio: the sender's card is the trap-per-register one."""
    board, cos, loader = takeover.takeover(nics=2, cpus=cpus)
    kernel = loader.kernel
    Wire(board.nics[0], board.nics[1])
    times = frames // batch
    sink = install_vm_with_net(kernel, net_guest.program("sink", [("sink", times * batch)]),
                               net_guest.MEMORY, "sink", "nic1", cpu=cpus - 1)
    dst = sink.vmm.net.port.mac
    if pio:
        sender = install_vm_with_pio_net(kernel, net_pio.program("src", dst, times, size),
                                         net_guest.MEMORY, "src", "nic0", cpu=0)
    else:
        sender = install_vm_with_net(kernel, net_guest.program("src", [("stream", dst, batch, times, size)]),
                                     net_guest.MEMORY, "src", "nic0", cpu=0)
    cpu = board.cpus[0]
    traps, entries, start = sender.vmm.vcpu.traps, cpu.delivered, board.clock
    t = time.perf_counter()
    for _ in range(2_000):
        if b"done" in sender.vmm.console:
            break
        board.run(20_000)
    elapsed = time.perf_counter() - t
    c, clock = sender.vmm.net.port.counters(), board.clock
    traps, entries = sender.vmm.vcpu.traps - traps, cpu.delivered - entries
    board.run(200_000)                             # the last frames reach the sink
    sent = c.frames_sent
    got = sink.vmm.net.port.counters()
    board.close()
    return (sent / max(1, c.requests), c.requests / max(1, sent), traps / max(1, sent),
            sent / elapsed, got.frames_received, got.rx_dropped, clock - start,
            entries / max(1, sent))


def main():
    print("a VM's frames through the shared region and the kernel (claims 18-20), "
          "VM on nic0 -> VM on nic1:")
    rows = {}
    for batch in (1, 3, 7):
        fpr, rpf, traps, rate, got, dropped, clock, entries = rows[batch] = stream(batch)
        print(f"  batches of {batch}: {fpr:4.1f} frames/request  {rpf:4.2f} requests/frame  "
              f"{traps:5.2f} sender traps/frame  {rate:7.0f} packets/s (wall)  "
              f"{clock / max(1, got + dropped):4.0f} virtual instr/frame; "
              f"the sink took {got}, dropped {dropped}")
    print("the same frames, the sender's card trapping at every register access "
          "(vmm/net_pio.py) beside the shared region:")
    for size in (60, 1512):
        pio = stream(1, frames=PIO_FRAMES if size == 60 else PIO_FRAMES // 10, pio=True, size=size)
        one, seven = (rows[1], rows[7]) if size == 60 else (stream(1, size=size), stream(7, size=size))
        print(f"  {size}-byte frames{'':11}{'packets/s (wall)':>18}{'kernel entries/packet':>24}"
              f"{'sender traps/packet':>22}")
        for label, row in (("trap per register", pio), ("shared region, batch 1", one),
                           ("shared region, batch 7", seven)):
            print(f"  {label:26}{row[3]:18.0f}{row[7]:24.2f}{row[2]:22.2f}")
        print(f"  shared region (batch 7) / trap per register: {seven[3] / max(1e-9, pio[3]):.1f}x "
              f"the packets/s, {pio[7] / max(1e-9, seven[7]):.0f}x fewer kernel entries per packet")

if __name__ == "__main__":
    main()
