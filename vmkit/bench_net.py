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
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import install_vm_with_net


def stream(batch, frames=2100, cpus=2):
    """(frames per request, requests per frame, sender traps per frame, frames/s wall,
    frames the receiver took, virtual instructions)."""
    board, cos, loader = takeover.takeover(nics=2, cpus=cpus)
    kernel = loader.kernel
    wire = Wire(board.nics[0], board.nics[1])
    times = frames // batch
    sink = install_vm_with_net(kernel, net_guest.program("sink", [("sink", times * batch)]),
                               net_guest.MEMORY, "sink", "nic1", cpu=cpus - 1)
    dst = sink.vmm.net.port.mac
    sender = install_vm_with_net(kernel, net_guest.program("src", [("stream", dst, batch, times)]),
                                 net_guest.MEMORY, "src", "nic0", cpu=0)
    traps, start, t = sender.vmm.vcpu.traps, board.clock, time.perf_counter()
    for _ in range(5_000):
        if b"done" in sender.vmm.console:
            break
        board.run(2_000)
    elapsed = time.perf_counter() - t
    c, traps, clock = sender.vmm.net.port.counters(), sender.vmm.vcpu.traps - traps, board.clock
    board.run(200_000)                             # the last frames reach the sink
    sent = c.frames_sent
    got = sink.vmm.net.port.counters()
    board.close()
    return (sent / max(1, c.requests), c.requests / max(1, sent), traps / max(1, sent),
            sent / elapsed, got.frames_received, got.rx_dropped, clock - start)


def main():
    print("a VM's frames through the shared region and the kernel (claims 18-20), "
          "VM on nic0 -> VM on nic1:")
    for batch in (1, 3, 7):
        fpr, rpf, traps, rate, got, dropped, clock = stream(batch)
        print(f"  batches of {batch}: {fpr:4.1f} frames/request  {rpf:4.2f} requests/frame  "
              f"{traps:5.2f} sender traps/frame  {rate:7.0f} packets/s (wall)  "
              f"{clock / max(1, got + dropped):4.0f} virtual instr/frame; "
              f"the sink took {got}, dropped {dropped}")


if __name__ == "__main__":
    main()
