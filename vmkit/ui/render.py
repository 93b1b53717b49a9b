"""Small HTML and diagram helpers shared by the widgets.

Graphviz's `dot` is not a Python package: where it is missing a diagram is
shown as its DOT source with a one-line hint instead of raising.
"""
import html
import shutil

from vmkit.hw.asm import disassemble_one
from vmkit.hw.x86 import EFLAGS_IOPL_SHIFT

FLAG_BITS = [("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
             ("DF", 10), ("OF", 11)]


class DotText:
    """What a diagram shows when `dot` is not installed."""
    def __init__(self, source):
        self.source = source

    def __repr__(self):
        return ("(Graphviz's `dot` is not installed: `apt-get install graphviz`, or run ./kit lab "
                "as root. The diagram's DOT source:)\n" + self.source)


def show(graph):
    return graph if shutil.which("dot") else DotText(graph.source)


def flags_text(eflags):
    set_flags = [name for name, bit in FLAG_BITS if eflags >> bit & 1]
    return " ".join(set_flags) + f" IOPL={(eflags >> EFLAGS_IOPL_SHIFT) & 3}"


def registers_html(state, previous=None):
    """A register table; registers that changed since `previous` are bold."""
    previous = previous or state
    cells = []
    for name in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags",
                 "cs", "ds", "ss", "cr0"):
        value = state[name]
        text = f"{value:08x}" if name not in ("cs", "ds", "ss") else f"{value:04x}"
        if value != previous[name]:
            text = f"<b style='color:#c0392b'>{text}</b>"
        cells.append(f"<td><code>{name}</code></td><td><code>{text}</code></td>")
    rows = ["<tr>" + "".join(cells[i:i + 4]) + "</tr>" for i in range(0, len(cells), 4)]
    tables = " ".join(f"<code>{t.upper()}</code> base={state[t][1]:#x} limit={state[t][2]:#x}"
                      for t in ("gdtr", "idtr"))
    return (f"<table>{''.join(rows)}</table><div>flags: <code>{flags_text(state['eflags'])}</code>"
            f" &nbsp; CPL {state['cpl']} &nbsp; {tables}</div>")


def next_instruction_html(board, cpu):
    eip = cpu["eip"]
    code = board.memory.read(eip, min(16, board.memory.size - eip))
    return f"next: <code>{eip:#010x}: {html.escape(disassemble_one(code, eip))}</code>"


def hexdump_html(board, address, length=64, previous=None):
    return bytes_html(board.memory.read(address, length), address, previous)


def bytes_html(data, address, previous=None, labels=None):
    """A hex dump; bytes that differ from `previous` are bold red. labels:
    {offset: field name}: each row ends with the names of the fields that start in it."""
    lines = []
    for row in range(0, len(data), 16):
        cells = []
        for i in range(row, min(row + 16, len(data))):
            byte = f"{data[i]:02x}"
            if previous is not None and previous[i] != data[i]:
                byte = f"<b style='color:#c0392b'>{byte}</b>"
            cells.append(byte)
        line = f"{address + row:08x}  " + " ".join(cells)
        if labels:
            names = [labels[o] for o in sorted(labels) if row <= o < row + 16]
            line += "  <span style='color:#7f8c8d'>" + html.escape(" ".join(names)) + "</span>"
        lines.append(line)
    return "<pre style='margin:0'>" + "\n".join(lines) + "</pre>"


def labelled_bytes_text(data, labels, per_line=4):
    """Fields of a record, one `name=value` each (little-endian), as text."""
    ends = sorted(labels) + [len(data)]
    fields = [f"{labels[o]}={int.from_bytes(data[o:e], 'little'):#x}" for o, e in zip(ends, ends[1:])]
    return "\n".join("  " + " ".join(fields[i:i + per_line]) for i in range(0, len(fields), per_line))


def events_html(events, limit=12):
    shown = [html.escape(str(e)) for e in events[-limit:]]
    more = f"({len(events) - limit} earlier events not shown)\n" if len(events) > limit else ""
    return "<pre style='margin:0'>" + more + ("\n".join(shown) or "(no events)") + "</pre>"
