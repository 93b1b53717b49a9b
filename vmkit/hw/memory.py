"""Physical memory: one host buffer that every CPU maps at address 0.

Unicorn maps the same ctypes buffer into each CPU (`mem_map_ptr`), so two
CPUs see one memory, as on an SMP board. Writes made from Python
(firmware, loaders, devices' DMA) go through `write`, which also drops the
CPUs' translated-code caches for the range: Unicorn does not notice a
write it did not make itself and would keep running the old code
(measured on Unicorn 2.1.4).
"""
import ctypes
import struct

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class BusError(ValueError):
    """A physical address the machine does not have."""


class PhysicalMemory:
    PAGE = 0x1000

    def __init__(self, size):
        if size <= 0 or size % self.PAGE:
            raise ValueError(f"memory size {size:#x} must be a positive multiple of 4 KiB")
        self.size = size
        self.buffer = (ctypes.c_ubyte * size)()
        self.address = ctypes.addressof(self.buffer)
        self._view = memoryview(self.buffer).cast("B")   # u32 reads/writes without a bytes copy
        self._invalidators = []     # one per CPU: drops translated code for a range

    def attach(self, invalidate):
        self._invalidators.append(invalidate)

    def check(self, addr, length):
        if addr < 0 or length < 0 or addr + length > self.size:
            raise BusError(f"physical range {addr:#x}..{addr + length:#x} is outside "
                           f"the machine's {self.size:#x} bytes of memory")

    def read(self, addr, length):
        self.check(addr, length)
        return ctypes.string_at(self.address + addr, length)

    def write(self, addr, data, code=True):
        """Write bytes; `code=False` (stack frames, DMA buffers) skips the costly
        translated-code flush when the bytes are known not to be instructions."""
        data = bytes(data)
        self.check(addr, len(data))
        ctypes.memmove(self.address + addr, data, len(data))
        # An empty range flushes nothing; Unicorn 2.1.4 refuses one (UC_ERR_ARG, measured).
        for invalidate in self._invalidators if code and data else ():
            invalidate(addr, addr + len(data))

    def read_u32(self, addr):
        """(The kernel reads trap frames and its tables word by word: this is its
        hottest path, so it unpacks straight from the buffer.)"""
        if addr < 0 or addr + 4 > self.size:
            self.check(addr, 4)
        return _U32.unpack_from(self._view, addr)[0]

    def write_u32(self, addr, value, code=True):
        if not code:
            if addr < 0 or addr + 4 > self.size:
                self.check(addr, 4)
            _U32.pack_into(self._view, addr, value & 0xFFFFFFFF)
            return
        self.write(addr, struct.pack("<I", value & 0xFFFFFFFF))

    def read_u16(self, addr):
        if addr < 0 or addr + 2 > self.size:
            self.check(addr, 2)
        return _U16.unpack_from(self._view, addr)[0]

    def same(self, addr, data):
        """Do the bytes at `addr` equal `data`? (Copied out and compared as bytes, by memcmp:
        a memoryview's own == goes item by item, ~2 ns a byte, measured: 68 µs for 40 KB
        against 1.8, and the kernel compares the COS's module area on every COS trap.)"""
        self.check(addr, len(data))
        return self._view[addr:addr + len(data)].tobytes() == data
