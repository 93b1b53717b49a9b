"""Record: a fixed layout of named fields, declared once as struct formats.

A structure that lives in bytes (on the disk, in guest memory) is declared as
a class with FIELDS, a tuple of (name, struct format) in byte order, the way
dissect.vmfs declares its structures in one cstruct text and xv6 in fs.h.
From that one declaration the class works out OFFSET (name -> byte offset)
and SIZE, packs values into bytes and unpacks bytes into an instance whose
attributes are the fields. Nothing else spells out the bytes: code that
needs a field's place asks `Cls.OFFSET["name"]`, and docs/vmfs.md's tables
are generated from the same FIELDS.

A field may carry a third element, its meaning, which docs tables print.
A format with a count (`"256I"`) is an array and comes back as a tuple;
`"16s"` is a byte string. Everything is little-endian (x86's order) unless
the class says otherwise with ORDER, and there is never padding: a gap in a
layout is a field of its own (`("reserved", "12s")`) so its offset is named.
"""
import re
import struct


class RecordMeta(type):
    def __init__(cls, name, bases, ns):
        super().__init__(name, bases, ns)
        fields = ns.get("FIELDS")
        if fields is None:
            return
        order = getattr(cls, "ORDER", "<")
        cls.OFFSET, cls.FORMAT, cls._array = {}, {}, {}
        offset = 0
        cls.MEANING = {}
        for fname, fmt, *meaning in fields:
            cls.OFFSET[fname], cls.FORMAT[fname] = offset, fmt
            cls.MEANING[fname] = meaning[0] if meaning else ""
            count = fmt[:-1]
            cls._array[fname] = bool(count) and fmt[-1] != "s"
            offset += struct.calcsize(order + fmt)
        cls.SIZE = offset
        cls.NAMES = tuple(f[0] for f in fields)
        cls._struct = struct.Struct(order + "".join(f[1] for f in fields))


class Record(metaclass=RecordMeta):
    """Subclass with FIELDS = ((name, format), ...). See the module docstring."""
    FIELDS = None
    ORDER = "<"

    def __init__(self, **values):
        for name in self.NAMES:
            setattr(self, name, values.pop(name, self._zero(name)))
        if values:
            raise TypeError(f"{type(self).__name__} has no field {sorted(values)[0]!r}")

    @classmethod
    def _zero(cls, name):
        fmt = cls.FORMAT[name]
        if fmt.endswith("s"):
            return b""
        if cls._array[name]:
            return (0,) * int(fmt[:-1])
        return 0

    @classmethod
    def unpack(cls, raw, offset=0):
        """An instance from SIZE bytes of `raw` at `offset`."""
        if len(raw) - offset < cls.SIZE:            # said in the record's words, not struct's
            raise ValueError(f"{cls.__name__}.unpack needs {cls.SIZE} bytes ({cls.__name__}.SIZE) at "
                             f"offset {offset}; it was given {max(len(raw) - offset, 0)}")
        flat = cls._struct.unpack_from(raw, offset)
        values, i = {}, 0
        for name in cls.NAMES:
            if cls._array[name]:
                n = int(cls.FORMAT[name][:-1])
                values[name], i = tuple(flat[i:i + n]), i + n
            else:
                values[name], i = flat[i], i + 1
        return cls(**values)

    def pack(self):
        """SIZE bytes."""
        flat = []
        for name in self.NAMES:
            value = getattr(self, name)
            if self._array[name]:
                flat.extend(value)
            else:
                flat.append(value)
        return self._struct.pack(*flat)

    def replace(self, **changes):
        values = {name: getattr(self, name) for name in self.NAMES}
        values.update(changes)
        return type(self)(**values)

    def __eq__(self, other):
        return type(self) is type(other) and self.pack() == other.pack()

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.NAMES
                          if not self._array[n] and not self.FORMAT[n].endswith("s"))
        return f"{type(self).__name__}({shown})"

    @classmethod
    def table(cls):
        """(offset, size, name, format) rows, for docs and tests."""
        return [(cls.OFFSET[n], struct.calcsize(cls.ORDER + cls.FORMAT[n]), n, cls.FORMAT[n])
                for n in cls.NAMES]

    @classmethod
    def markdown(cls):
        """The layout as a Markdown table: offset, size, field, format, meaning."""
        rows = ["| offset | size | field | format | meaning |", "|---|---|---|---|---|"]
        for off, size, name, fmt in cls.table():
            rows.append(f"| {off:#05x} | {size:#x} | `{name}` | `{fmt}` | {cls.MEANING[name]} |")
        return "\n".join(rows)


_TABLE = re.compile(r"(<!-- layout: (\w+) -->\n).*?(\n<!-- end layout -->)", re.S)


def doc_tables(text, structures):
    """`text` with each `<!-- layout: Name -->` ... `<!-- end layout -->` block regenerated
    from `structures[Name]` (a Record class), so a doc's tables are the declarations."""
    return _TABLE.sub(lambda m: m.group(1) + structures[m.group(2)].markdown() + m.group(3), text)
