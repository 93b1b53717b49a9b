"""A world's save area (claims 15, 45): the state the world switch stores and loads.

Laid out the way the switch's instructions (switch_x86.py) store and load it: the
kernel's x86 takes its offsets from here, as AREA_* symbols; nothing else
spells them out.

  0x00 edi esi ebp esp ebx edx ecx eax   popad's order, as the stub's pushad
                                         left them in the frame (ESP: the world's,
                                         in pushad's slot)
  0x20 eip cs eflags                     iretd's order
  0x2C ss ds es fs gs                    selectors, one u32 each
  0x40 gdtr: u16 limit, u32 base         sgdt/lgdt's operand: limit, then base
  0x48 idtr: u16 limit, u32 base         sidt/lidt's
  0x50 ldtr: u16 selector                sldt/lldt: base and limit come from
                                         the LDT descriptor the selector names
  0x54 tr: u16 selector                  str/ltr: likewise, from the TSS descriptor
  0x58 cr3
  0x5C CRC-32 of 0x00..0x5B
  0x78 switches into the world  0x7C ticks run                      (128 bytes)

A CRC-32 seals what the x86 stored (`seal`); the switch refuses to load an area whose
CRC no longer matches (switch.py). Counters beside it, bumped in place (`bump`).
"""
import struct
import zlib

LAYOUT = (("edi", "I"), ("esi", "I"), ("ebp", "I"), ("esp", "I"),
          ("ebx", "I"), ("edx", "I"), ("ecx", "I"), ("eax", "I"),
          ("eip", "I"), ("cs", "I"), ("eflags", "I"),
          ("ss", "I"), ("ds", "I"), ("es", "I"), ("fs", "I"), ("gs", "I"),
          ("gdtr.limit", "H"), ("gdtr.base", "I"), ("", "2x"),
          ("idtr.limit", "H"), ("idtr.base", "I"), ("", "2x"),
          ("ldtr.sel", "H"), ("", "2x"),
          ("tr.sel", "H"), ("", "2x"),
          ("cr3", "I"))
_AREA = struct.Struct("<" + "".join(f for _, f in LAYOUT))
ITEMS = tuple(n for n, _ in LAYOUT if n)
_U32 = struct.Struct("<I")
OFFSET = {n: struct.calcsize("<" + "".join(f for _, f in LAYOUT[:i]))
          for i, (n, _) in enumerate(LAYOUT) if n}
WIDTH = {n: struct.calcsize("<" + f) for n, f in LAYOUT if n}
STATE_SIZE = _AREA.size                          # 0x5C
CRC, SWITCHES, TICKS = STATE_SIZE, 0x78, 0x7C
SIZE = 128
GENERAL = ITEMS[:8]
FRAME_ITEMS = GENERAL + ("eip", "cs", "eflags", "esp", "ss")     # what the stub's popad/iretd load
SEGMENTS = ("ds", "es", "fs", "gs")
# The save area's operands as the x86 names them: AREA_EDI ... AREA_GDTR (lgdt's operand) ... AREA_CR3.
# (Offsets only, used inside [ ]: keystone 0.9.2 takes `and ecx, ~SYM` for a memory operand, measured.)
SYMBOLS = {}
for _name in ITEMS:
    SYMBOLS.setdefault("AREA_" + _name.split(".")[0].upper(), OFFSET[_name])


# every field of the 128-byte area by offset, for a labelled dump (the padding has none)
FIELDS = {**{OFFSET[n]: n for n in ITEMS}, CRC: "crc", CRC + 4: "(free)", SWITCHES: "switches",
          TICKS: "ticks"}


def decode_area(raw):
    """Save-area bytes -> {item: value}."""
    return dict(zip(ITEMS, _AREA.unpack_from(raw)))


def read_area(memory, address):
    return decode_area(memory.read(address, STATE_SIZE))


def write_area(memory, address, state):
    """Store `state` (every item of ITEMS) and its CRC."""
    raw = _AREA.pack(*(state[n] & ((1 << 8 * WIDTH[n]) - 1) for n in ITEMS))
    memory.write(address, raw + struct.pack("<I", zlib.crc32(raw)), code=False)


def seal(memory, address):
    """The CRC-32 of what the x86 stored, stored after it; returns the CRC."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + CRC + 4 > len(view):
        crc = zlib.crc32(memory.read(address, STATE_SIZE))
        memory.write_u32(address + CRC, crc, code=False)
        return crc
    crc = zlib.crc32(view[address:address + STATE_SIZE])
    _U32.pack_into(view, address + CRC, crc)         # (in place: data, no code to flush)
    return crc


def area_intact(memory, address):
    return intact(span(memory, address, STATE_SIZE + 4))


def span(memory, address, length):
    """The bytes at address .. address + length - 1, as a view of the machine's memory
    buffer (no copy: read it at once) when they lie in it; else memory.read's (its
    check: a bus error). The switch reads its save areas, the frame and descriptors so."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + length > len(view):
        return memory.read(address, length)
    return view[address:address + length]


def intact(raw):
    """A save area's bytes and CRC: does the CRC match?"""
    return zlib.crc32(raw[:STATE_SIZE]) == _U32.unpack_from(raw, STATE_SIZE)[0]


def bump(memory, address, amount):
    """Add to a u32 counter in kernel memory (data: no translated-code flush), in place
    in the memory buffer when it lies there (a switch bumps two)."""
    view = getattr(memory, "_view", None)
    if view is None or address < 0 or address + 4 > len(view):
        memory.write_u32(address, memory.read_u32(address) + amount, code=False)   # (mod 2**32)
        return
    _U32.pack_into(view, address, (_U32.unpack_from(view, address)[0] + amount) & 0xFFFFFFFF)
