"""A record of named u32 words in emulated memory, read and written in place.

The trap frame on the kernel stack and the COS's (or a VM's) virtual CPU are
both such records: the kernel's Python changes them where they live, so what
it changes is what the stub's popad/iretd load into the CPU, and what a widget
reading memory shows. A subclass names its FIELDS; word i is at +4*i.
"""


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
        object.__setattr__(self, "memory", memory)
        object.__setattr__(self, "address", address)

    def __getattr__(self, name):                    # only names that are not words get here
        raise AttributeError(f"{type(self).__name__} has no word {name!r}")

    def __setattr__(self, name, value):
        if name not in self.OFFSET:
            raise AttributeError(f"{type(self).__name__} has no word {name!r}")
        self.memory.write_u32(self.address + self.OFFSET[name], int(value), code=False)

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


class _Word(property):
    """A field's read: the u32 at its offset, where the record lives."""


def _reader(offset):
    def read(self):
        return self.memory.read_u32(self.address + offset)
    return read
