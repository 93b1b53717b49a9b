"""The network port a VMM gives its VM: a few trapping registers in front of the shared region.

The data never passes through these registers: frames, pointers and indices
are bytes of the shared region (kernel/net_ring.py), and the kernel moves
them (kernel/vm_net.py). The ports only let the driver find the region and
make its one request for transmission; every in/out of the guest traps to
its VMM anyway (the VM's TSS has no I/O bitmap), so one `out` is the
request, and the kernel senses it in the trap.

    NET_PORT + REGION   read: the guest address of the shared region
    NET_PORT + REQUEST  write (any value): the request for transmission
    NET_PORT + CONTROL  read/write: bit 0 IE, interrupt on receive (line NET_LINE)

Registers are whole 32-bit words; reads of anything else give 0, writes are
ignored. The NIC's own ports are not here: a guest's in/out to them reaches
the VMM's default (ignored, reads 0xFF), never the device.
"""
from vmkit.kernel import net_ring
from vmkit.kernel.vm_net import NET_LINE, VmNet
from vmkit.kernel.worlds import VMError

NET_PORT = 0x1500
REGION, REQUEST, CONTROL = 0x0, 0x4, 0x8
NPORTS = 16
CTL_IE = 1


class VirtualNet:
    def __init__(self, vmm, port):
        self.vmm, self.port = vmm, port
        self.control = 0
        self.port.interrupts = lambda: bool(self.control & CTL_IE)

    def claims(self, port):
        return NET_PORT <= port < NET_PORT + NPORTS

    def port_io(self, frame, mnemonic, port):
        reg = port - NET_PORT
        if mnemonic == "in":
            frame.eax = {REGION: self.port.region, CONTROL: self.control}.get(reg, 0)
        elif reg == REQUEST:
            self.port.request()
        elif reg == CONTROL:
            self.control = frame.eax & CTL_IE
            if self.control and self.port.waiting():   # as a NIC's line follows ISR & IMR:
                self.vmm.raise_line(NET_LINE)          # frames already there interrupt at once


def install_vm_with_net(kernel, guest, memory_bytes, name, nic="nic0", region=0x8000, cpu=None, entry=0):
    """A VM with a network port on the shared NIC `nic`, its shared region at
    `region` bytes into its memory (page-aligned, wholly inside it): guest address `region`."""
    if not isinstance(region, int) or region % net_ring.PAGE or region < 0 \
            or region + net_ring.SIZE > memory_bytes:
        raise VMError(f"a shared region of {net_ring.SIZE:#x} bytes at {region!r} does not fit "
                      f"page-aligned in {memory_bytes:#x} bytes of VM memory")
    if nic not in kernel.shared or not hasattr(kernel.shared[nic], "send_from"):
        raise VMError(f"{nic!r} is not a NIC the kernel shares (shared: {sorted(kernel.shared)})")
    world = kernel.install_vm(guest, memory_bytes, name, cpu, entry)
    port = VmNet.of(kernel).attach(world.vmm, nic, region)       # a guest address
    world.vmm.net = VirtualNet(world.vmm, port)
    return world
