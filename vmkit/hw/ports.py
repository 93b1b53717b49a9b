"""The I/O port space: `in`/`out` reach the device that decodes the port.

A port no device decodes reads as all ones and ignores writes, as on an
ISA bus with nothing behind it.
"""


class PortConflict(ValueError):
    pass


class PortBus:
    def __init__(self):
        self._owner = {}                     # port -> (device, base)

    def attach(self, device, base, count):
        taken = [p for p in range(base, base + count) if p in self._owner]
        if taken:
            other = self._owner[taken[0]][0]
            raise PortConflict(f"ports {base:#x}..{base + count - 1:#x} for {device!r} overlap "
                               f"{other!r} at {taken[0]:#x}")
        for p in range(base, base + count):
            self._owner[p] = (device, base)

    def owner(self, port):
        hit = self._owner.get(port)
        return hit[0] if hit else None

    def read(self, port, size):
        hit = self._owner.get(port)
        if hit is None:
            return (1 << (8 * size)) - 1
        device, base = hit
        return device.io_read(port - base, size) & ((1 << (8 * size)) - 1)

    def write(self, port, size, value):
        hit = self._owner.get(port)
        if hit is not None:
            device, base = hit
            device.io_write(port - base, size, value & ((1 << (8 * size)) - 1))
