"""A free-space bitmap of VMFS (descriptors, pointer blocks or file blocks): one bit per resource.

Resource n is bit n % 8 of byte n // 8; 1 = in use (docs/vmfs.md). This
holds the bitmap's bytes as read from the disk and says which sectors a
change dirtied; the volume writes those sectors, in the order its write
order needs (vmfs.py).
"""
import re

from .vmfs_errors import Corrupt, NoSpace
from .vmfs_format import SECTOR

_NOT_FULL = re.compile(b"[^\xff]")
WHAT = {"fd": "file descriptors", "pb": "pointer blocks", "fb": "file blocks"}


class Bitmap:
    def __init__(self, kind, raw, count):
        self.kind, self.bits, self.count = kind, bytearray(raw), count
        self.name = f"{kind.upper()} bitmap"
        whole = count // 8
        used = sum(bin(b).count("1") for b in self.bits[:whole])
        used += sum(self.bits[whole] >> i & 1 for i in range(count % 8)) if count % 8 else 0
        self.free = count - used
        self._hint = 0

    def used(self, k):
        return bool(self.bits[k // 8] >> (k % 8) & 1)

    def marked(self):
        """Every set bit, including any past the count (fsck reports those)."""
        out = set()
        for i, byte in enumerate(self.bits):
            if byte:
                out.update(i * 8 + bit for bit in range(8) if byte >> bit & 1)
        return out

    def find_free(self, n):
        """n clear bits below the count, first fit from after the last allocation; NoSpace if fewer."""
        if n > self.free:
            raise NoSpace(self.name, f"{n} {WHAT[self.kind]} wanted, {self.free} free")
        found = []
        for lo, hi in ((self._hint, len(self.bits)), (0, self._hint)):
            pos = lo
            while len(found) < n:
                m = _NOT_FULL.search(self.bits, pos, hi)
                if m is None:
                    break
                byte = m.start()
                for k in range(byte * 8, byte * 8 + 8):
                    if len(found) < n and k < self.count and not self.used(k):
                        found.append(k)
                pos = byte + 1
        if len(found) < n:
            raise Corrupt(self.name, f"fewer clear bits than the {self.free} counted free")
        self._hint = found[-1] // 8 if found else self._hint
        return found

    def set(self, numbers, used):
        """Set (used) or clear bits; the sector indexes whose bytes changed."""
        dirty = set()
        for k in numbers:
            byte, bit = divmod(k, 8)
            if bool(self.bits[byte] >> bit & 1) != used:
                self.bits[byte] ^= 1 << bit
                self.free += -1 if used else 1
                dirty.add(byte // SECTOR)
        return sorted(dirty)

    def sector(self, s):
        return bytes(self.bits[s * SECTOR:(s + 1) * SECTOR])
