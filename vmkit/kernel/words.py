"""A record of named u32 words in emulated memory, read and written in place.

The trap frame on the kernel stack and the COS's (or a VM's) virtual CPU are
both such records: the kernel's Python changes them where they live, so what
it changes is what the stub's popad/iretd load into the CPU, and what a widget
reading memory shows. A subclass names its FIELDS; word i is at +4*i.
"""
import struct

_unpack, _pack = struct.Struct("<I").unpack_from, struct.Struct("<I").pack_into


class Words:
    FIELDS = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.OFFSET = {name: 4 * i for i, name in enumerate(cls.FIELDS)}
        cls.SIZE = 4 * len(cls.FIELDS)
        for name, offset in cls.OFFSET.items():     # a read is a property, not a failed lookup
            if isinstance(getattr(cls, name, None), (_Word, type(None))):   # (a method keeps its name)
                setattr(cls, name, _Word(_reader(offset)))   # (the kernel reads these on every entry)

    def __init__(self, memory, address):
        attrs = self.__dict__           # (past __setattr__, which takes words only)
        attrs["memory"], attrs["address"] = memory, address
        # The machine's memory buffer itself when the whole record lies in it (checked once
        # here): each word is then one unpack or pack where it lives, not a bounds-checked call
        # (the kernel reads and writes ~20 words per entry). Otherwise memory's own checks.
        view = getattr(memory, "_view", None)
        inside = view is not None and 0 <= address and address + self.SIZE <= len(view)
        attrs["_view"] = view if inside else None

    def __getattr__(self, name):                    # only names that are not words get here
        raise AttributeError(f"{type(self).__name__} has no word {name!r}")

    def __setattr__(self, name, value):
        offset = self.OFFSET.get(name)
        if offset is None:
            raise AttributeError(f"{type(self).__name__} has no word {name!r}")
        try:
            value &= 0xFFFFFFFF             # (an int, as nearly always: no int() call)
        except TypeError:
            value = int(value) & 0xFFFFFFFF
        view = self._view
        if view is None:
            self.memory.write_u32(self.address + offset, value, code=False)
        else:
            _pack(view, self.address + offset, value)

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


class _Word(property):
    """A field's read: the u32 at its offset, where the record lives."""


def _reader(offset):
    def read(self):
        view = self._view
        if view is None:
            return self.memory.read_u32(self.address + offset)
        return _unpack(view, self.address + offset)[0]
    return read
