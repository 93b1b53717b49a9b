"""A record of named u32 words in emulated memory, read and written in place.

The trap frame on the kernel stack and the COS's (or a VM's) virtual CPU are
both such records: the kernel's Python changes them where they live, so what
it changes is what the stub's popad/iretd load into the CPU, and what a widget
reading memory shows. A subclass names its FIELDS; word i is at +4*i.
"""
import ctypes
import struct


class _Record(type):
    """Words' metaclass: a record made in memory (its class's `_in_memory` twin, a ctypes
    structure) is an instance of its class and of Words too, as a record made elsewhere is."""
    def __instancecheck__(cls, obj):
        kind = getattr(type(obj), "_record_class", None)
        return type.__instancecheck__(cls, obj) or (kind is not None and issubclass(kind, cls))


class Words(metaclass=_Record):
    """A subclass names its FIELDS and declares `__slots__` (its own attributes besides
    memory and address; usually none): a record has no __dict__, so a name that is not
    one of its words cannot be set by mistake (AttributeError). A record made inside
    the machine's memory buffer (nearly always) is its class's `_in_memory` twin, whose
    words are C-level fields over the buffer; any other is this class, each word a
    property read and written through memory's checked read_u32 and write_u32."""
    FIELDS = ()
    __slots__ = ("memory", "address")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__slots__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} is a record of words: it declares __slots__ "
                            f"(else any misspelt word could be set)")
        cls.OFFSET = {name: 4 * i for i, name in enumerate(cls.FIELDS)}
        cls.SIZE = 4 * len(cls.FIELDS)
        named = []
        for name, offset in cls.OFFSET.items():     # a read is a property, not a failed lookup
            if isinstance(getattr(cls, name, None), (_Word, type(None))):   # (a method keeps its name)
                setattr(cls, name, _word(offset))   # (the kernel reads these on every entry)
                named.append(name)
        cls._in_memory = _in_memory(cls, named)

    def __new__(cls, memory, address, *args, **kwargs):
        """A record that lies wholly in the machine's memory buffer is made as its
        `_in_memory` twin (see `_in_memory`); any other (a memory without a buffer, a
        record running past its end) as this class, each word checked by memory's own
        read_u32 and write_u32 (a bus error on the first word past the end)."""
        view = getattr(memory, "_view", None)
        if view is not None and 0 <= address and address + cls.SIZE <= len(view):
            record = cls._in_memory.from_address(memory.address + address)   # (its buffer's: the
            record._setup(memory, address, *args, **kwargs)                  # record keeps memory,
            return record                                                    # so the buffer, alive)
        return object.__new__(cls)

    def _setup(self, memory, address):
        """The attributes of a record made in memory (`__new__`), as __init__ sets them."""
        self.memory, self.address = memory, address

    def __init__(self, memory, address):
        self.memory, self.address = memory, address

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


def _in_memory(cls, named):
    """The twin of record class `cls` for a record inside the machine's memory buffer: the
    same methods, properties and attributes (`__slots__`: a misspelt word still cannot be
    set), its words ctypes fields over the buffer itself (from_address: no copy), so a
    word read or written where it lives is one C-level access, not a Python call (~30
    against ~150-200 ns; the kernel reads ~50 words and writes ~25 per timer tick).
    A store wraps mod 2**32, as the property's does. Words a method of `cls` shadows
    keep their place, unnamed."""
    namespace, slots = {}, ["memory", "address"]
    for klass in reversed(cls.__mro__[:cls.__mro__.index(Words)]):     # Words' subclasses, base first
        for name, value in vars(klass).items():
            if name == "__slots__":
                slots += [n for n in ((value,) if isinstance(value, str) else value) if n not in slots]
            elif not (name.startswith("__") and name != "__repr__" or name == "_in_memory"
                      or isinstance(value, (_Word, type(Words.memory)))):
                namespace[name] = value
    namespace.setdefault("_setup", Words._setup)
    namespace.update(__slots__=tuple(slots), __module__=cls.__module__, __qualname__=cls.__qualname__,
                     as_dict=Words.as_dict, _record_class=cls)
    twin = type(cls.__name__, (ctypes.LittleEndianStructure,), namespace)
    twin._fields_ = [(name if name in named else f"_word_{i}", ctypes.c_uint32)
                     for i, name in enumerate(cls.FIELDS)]
    return twin


class _Word(property):
    """A field: the u32 at its offset, read and written where the record lives."""


def _word(offset):
    def read(self):
        return self.memory.read_u32(self.address + offset)

    def write(self, value):
        try:
            value &= 0xFFFFFFFF             # (an int, as nearly always: no int() call)
        except TypeError:
            value = int(value) & 0xFFFFFFFF
        self.memory.write_u32(self.address + offset, value, code=False)
    return _Word(read, write)


_RUNS = {}


def u32s(n):
    """The struct of n little-endian u32s, made once: a run of words read or written in
    one access (the kernel's pushes onto a stack, the mapping cache's word runs)."""
    run = _RUNS.get(n)
    if run is None:
        run = _RUNS[n] = struct.Struct(f"<{n}I")
    return run
