"""The naive way to give a VM a network card: an emulated NIC whose every register access traps.

This is the straightforward emulated-device path (an NE2000 in a VM: the
driver moves the frame through a data register, then writes its length and
a command) kept next to net_device.py only to be measured against it. The
guest's work is the same: frames to another VM's MAC over the shared NIC of
claim 8. What differs is the way in: here each `out` of a frame's dword is a
trap into the kernel and the VMM (the VM's TSS has no I/O bitmap), so a
60-byte frame costs 15 + 3 traps; on the shared-region path a whole batch of
frames costs one.

    PIO_PORT + DATA     write: the next dword of the frame being built
    PIO_PORT + LENGTH   write: the frame's length in bytes
    PIO_PORT + COMMAND  write CMD_TX: send the frame built so far
    PIO_PORT + STATUS   read: ST_DONE once the last frame went, | ST_ERROR if the NIC refused it
    PIO_PORT + MAC_LO, MAC_HI   read: the card's address (bytes 0..3, 4..5)

The card's memory, where DATA's dwords go, is the port's physical transmit
buffer portion (net_ring.PHYS_TX, in the VM's region, as a card's on-board
buffer is memory the host reaches): the emulated card writes each dword
there and, on CMD_TX, the kernel hands that buffer to the real NIC as
vm_net.py does. So the frames on the wire are the same bytes either way.
"""
from vmkit.hw.nic import MAX_FRAME, MIN_FRAME
from vmkit.kernel import net_ring

PIO_PORT = 0x1600
DATA, LENGTH, COMMAND, STATUS, MAC_LO, MAC_HI = 0x0, 0x4, 0x8, 0xC, 0x10, 0x14
NPORTS = 0x20
CMD_TX = 1
ST_DONE, ST_ERROR = 1, 2


class PioNet:
    def __init__(self, vmm, port):
        self.vmm, self.port = vmm, port
        self.offset = self.length = 0
        self.status = 0
        self.buffer = port.region + net_ring.PHYS_TX       # the card's memory (a guest address)

    def claims(self, port):
        return PIO_PORT <= port < PIO_PORT + NPORTS

    def port_io(self, frame, mnemonic, port):
        reg, mac = port - PIO_PORT, self.port.mac
        if mnemonic == "in":
            frame.eax = {STATUS: self.status, MAC_LO: int.from_bytes(mac[:4], "little"),
                         MAC_HI: int.from_bytes(mac[4:], "little")}.get(reg, 0)
        elif reg == DATA:
            if self.offset + 4 <= net_ring.BUFFER:         # past the card's buffer: dropped, as a card does
                self.port.write(self.buffer + self.offset, frame.eax.to_bytes(4, "little"))
                self.offset += 4
        elif reg == LENGTH:
            self.length = frame.eax & 0xFFFF
        elif reg == COMMAND and frame.eax == CMD_TX:
            ok = MIN_FRAME <= self.length <= min(MAX_FRAME, self.offset)
            if not ok:
                self.port._refuse("refused_length", f"a frame of {self.length} bytes "
                                                    f"({self.offset} written)")
            elif not self.port.source_ok(self.buffer, "the card's frame"):   # the kernel's check, as for the ring
                ok = False
            else:
                ok = self.port.front.send_from(self.port.host(self.buffer, self.length), self.length,
                                               self.vmm.name)
                if ok:
                    self.port._count("frames_sent")
                else:
                    self.port._refuse("refused_length", f"a frame of {self.length} bytes "
                                                        f"({self.offset} written)")
            self.status, self.offset = ST_DONE | (0 if ok else ST_ERROR), 0


def install_vm_with_pio_net(kernel, guest, memory_bytes, name, nic="nic0", region=0x8000, cpu=None, entry=0):
    """A VM whose network card is the trap-per-register one (its card memory in a region
    at `region`, as install_vm_with_net places the shared one)."""
    from .net_device import install_vm_with_net
    world = install_vm_with_net(kernel, guest, memory_bytes, name, nic, region, cpu, entry)
    world.vmm.net = PioNet(world.vmm, world.vmm.net.port)
    return world


def program(name, dst, times, size=60):
    """A guest (x86 at CPL 3) that sends `times` frames of `size` bytes (60..1512, a multiple
    of 4) to `dst` through the registers: each dword by an `out`, then the length, the
    command, a read of the status."""
    if not 60 <= size <= 1512 or size % 4:
        raise ValueError(f"a frame here is 60..1512 bytes, a multiple of 4, not {size!r}")
    from .disk_guest import _gate, _say
    from . import guests
    from .guests import timer_handler
    from .net_guest import GATES, IDT, VARS, frame
    data = frame(dst, b"frame".ljust(size - 14, b"\0"))

    streamed = _say(f"{name} streamed\n") + "\n" + _say(f"{name} done\n")

    def source(base):
        buf = base + VARS + 0x100
        words = "\n".join(f"        mov dword ptr [{buf + 4 * k:#x}], "
                          f"{int.from_bytes(data[4 * k:4 * k + 4], 'little'):#x}"
                          for k in range(len(data) // 4))
        return f"""
start:  jmp setup
{timer_handler(base)}
setup:  {_gate(base + IDT, 0x20, "timer")}
        {guests.load_idt(base, GATES * 8 - 1, sti=False)}
{words}
        mov edx, {PIO_PORT + MAC_LO:#x}
        in eax, dx                      ; the card's address into the frame's source
        mov [{buf + 6:#x}], eax
        mov edx, {PIO_PORT + MAC_HI:#x}
        in eax, dx
        mov [{buf + 10:#x}], ax
        sti
        mov ebp, {times:#x}
send:   mov esi, {buf:#x}
        mov ecx, {len(data) // 4:#x}
        mov edx, {PIO_PORT + DATA:#x}
nextd:  lodsd
        out dx, eax                     ; a trap per dword
        loop nextd
        mov edx, {PIO_PORT + LENGTH:#x}
        mov eax, {len(data):#x}
        out dx, eax
        mov edx, {PIO_PORT + COMMAND:#x}
        mov eax, {CMD_TX:#x}
        out dx, eax
        mov edx, {PIO_PORT + STATUS:#x}
        in eax, dx
        dec ebp
        jnz send
{streamed}
stop:   hlt
        jmp stop
"""
    return source
