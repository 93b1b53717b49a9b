"""Instructions replaced by int3, kept in kernel-controlled memory: one table layout, two users.

pushfd, popfd and iretd do not trap at CPL 1, so the kernel patches each of the
COS's to int3 and emulates the original (kernel.py, traps.py): its table is at
layout.PATCHES in the kernel's block. A VM's guest runs at CPL 3, where iretd
does not trap either: its VMM patches the guest's to int3 (vmm/vmm.py), and its
table is at VMM_PATCHES in that VM's VMM region (guest addresses). Either list
is the machine's state, like a debugger's breakpoint table: a record read
where it lives, holding the byte each patch replaced, so the unload (unload.py)
can put every byte back, the monitor acts on what the bytes say, and a widget
can show the table. Layout (little-endian):

    0x00  u32 count
    0x04  count entries of 8 bytes:
          u32 address   the patched byte (COS code or its module area)
          u8  original  the byte int3 replaced
          u8  mnemonic  index into MNEMONICS
          u16 (zero)
"""
import struct

from . import layout

MNEMONICS = ("pushfd", "popfd", "iretd")
ENTRY = struct.Struct("<IBBxx")
ADDRESS, MNEMONIC = struct.Struct("<I"), 5          # an entry's address; its mnemonic's offset
_COUNT = ADDRESS                                    # the count word
HEADER = 4


def capacity(size):
    """Entries a table of `size` bytes holds (its count word, then the entries)."""
    return (size - HEADER) // ENTRY.size


CAPACITY = capacity(layout.HEAP - layout.PATCHES)                     # the COS's: 511


class PatchTableFull(RuntimeError):
    pass


class PatchTable:
    """address -> mnemonic, as a read-only mapping over the record in memory.
    `capacity`: how many entries its area holds (the COS's CAPACITY by default)."""

    def __init__(self, memory, address, capacity=CAPACITY):
        self.memory, self.address, self.capacity = memory, address, capacity

    def __len__(self):
        return self.memory.read_u32(self.address)

    def entries(self):
        """[(address, original byte, mnemonic)] in the order they were patched."""
        raw = self.memory.read(self.address + HEADER, len(self) * ENTRY.size)
        return [(a, b, MNEMONICS[m]) for a, b, m in ENTRY.iter_unpack(raw)]

    def __iter__(self):
        """The patched addresses, as a mapping's keys."""
        return iter([a for a, _, _ in self.entries()])

    def items(self):
        return [(a, m) for a, _, m in self.entries()]

    def get(self, address, default=None):
        """The mnemonic patched at `address` (the first entry for it). Searched in the
        table's bytes, not in decoded entries: the kernel asks on every int3 it gets."""
        if not 0 <= address <= 0xFFFFFFFF:
            return default
        raw, key = self._raw(), ADDRESS.pack(address)
        at = raw.find(key)
        while at >= 0:
            if at % ENTRY.size == 0:                 # an entry's address, not bytes across two
                return MNEMONICS[raw[at + MNEMONIC]]
            at = raw.find(key, at + 1)
        return default

    def _raw(self):
        """The entries' bytes, copied out of the buffer in one slice when the table lies in
        it (get's hot path), else through memory.read (its bus-error check)."""
        memory, at = self.memory, self.address
        view = getattr(memory, "_view", None)
        if view is not None and 0 <= at and at + HEADER <= len(view):
            end = at + HEADER + _COUNT.unpack_from(view, at)[0] * ENTRY.size
            if end <= len(view):
                return view[at + HEADER:end].tobytes()
        return memory.read(at + HEADER, len(self) * ENTRY.size)

    def __getitem__(self, address):
        found = self.get(address)
        if found is None:
            raise KeyError(address)
        return found

    def __contains__(self, address):
        return self.get(address) is not None

    def add(self, address, original, mnemonic):
        count = len(self)
        if count >= self.capacity:
            raise PatchTableFull(f"the patch table at {self.address:#x} holds {self.capacity} entries")
        self.memory.write(self.address + HEADER + count * ENTRY.size,
                          ENTRY.pack(address, original, MNEMONICS.index(mnemonic)), code=False)
        self.memory.write_u32(self.address, count + 1, code=False)

    def _rewrite(self, entries):
        raw = b"".join(ENTRY.pack(a, b, MNEMONICS.index(m)) for a, b, m in entries)
        self.memory.write(self.address + HEADER, raw, code=False)
        self.memory.write_u32(self.address, len(entries), code=False)

    def forget(self, begin, end):
        """Drop the entries in [begin, end) without touching the code (it was replaced)."""
        self._rewrite([e for e in self.entries() if not begin <= e[0] < end])

    def restore(self):
        """Put every original byte back where int3 stands; the table empties.
        Returns how many bytes were restored (a byte no longer int3 -- code the COS
        replaced since -- is left as it is)."""
        restored = 0
        for a, original, _ in self.entries():
            if self.memory.read(a, 1) == b"\xcc":
                self.memory.write(a, bytes([original]))
                restored += 1
        self._rewrite([])
        return restored
