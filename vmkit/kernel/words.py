"""A record of named u32 words in emulated memory, read and written in place.

The trap frame on the kernel stack and the COS's (or a VM's) virtual CPU are
both such records: the kernel's Python changes them where they live, so what
it changes is what the stub's popad/iretd load into the CPU, and what a widget
reading memory shows. A subclass names its FIELDS; word i is at +4*i.
"""
import struct

_unpack, _pack = struct.Struct("<I").unpack_from, struct.Struct("<I").pack_into


class Words:
    """A subclass names its FIELDS and declares `__slots__` (its own attributes besides
    memory, address and _view; usually none): a record has no __dict__, so a name that
    is not one of its words cannot be set by mistake (AttributeError), and each word is
    a property whose read and write are one Python call each (no __setattr__ of its own
    that every write would go through: the kernel writes ~6 words per entry)."""
    FIELDS = ()
    __slots__ = ("memory", "address", "_view")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__slots__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} is a record of words: it declares __slots__ "
                            f"(else any misspelt word could be set)")
        cls.OFFSET = {name: 4 * i for i, name in enumerate(cls.FIELDS)}
        cls.SIZE = 4 * len(cls.FIELDS)
        for name, offset in cls.OFFSET.items():     # a read is a property, not a failed lookup
            if isinstance(getattr(cls, name, None), (_Word, type(None))):   # (a method keeps its name)
                setattr(cls, name, _word(offset))   # (the kernel reads these on every entry)

    def __init__(self, memory, address):
        self.memory, self.address = memory, address
        # The machine's memory buffer itself when the whole record lies in it (checked once
        # here): each word is then one unpack or pack where it lives, not a bounds-checked call
        # (the kernel reads and writes ~20 words per entry). Otherwise memory's own checks.
        view = getattr(memory, "_view", None)
        inside = view is not None and 0 <= address and address + self.SIZE <= len(view)
        self._view = view if inside else None

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


class _Word(property):
    """A field: the u32 at its offset, read and written where the record lives."""


def _word(offset):
    def read(self):
        view = self._view
        if view is None:
            return self.memory.read_u32(self.address + offset)
        return _unpack(view, self.address + offset)[0]

    def write(self, value):
        try:
            value &= 0xFFFFFFFF             # (an int, as nearly always: no int() call)
        except TypeError:
            value = int(value) & 0xFFFFFFFF
        view = self._view
        if view is None:
            self.memory.write_u32(self.address + offset, value, code=False)
        else:
            _pack(view, self.address + offset, value)
    return _Word(read, write)


_RUNS = {}


def u32s(n):
    """The struct of n little-endian u32s, made once: a run of words read or written in
    one access (the kernel's pushes onto a stack, the mapping cache's word runs)."""
    run = _RUNS.get(n)
    if run is None:
        run = _RUNS[n] = struct.Struct(f"<{n}I")
    return run
