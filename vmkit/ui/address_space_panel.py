"""Notebook 09's pictures: one VM's linear address space as a diagram drawn
from its live page directory and GDT (lessons.address_spaces.address_space),
and a widget that makes the CPU read an address from the guest, the VMM or the COS
(lessons.probes.Prober) and shows what the machine did."""
import html

import graphviz
import ipywidgets as widgets

from vmkit.kernel import mapcache, paging
from vmkit.lessons import address_spaces as lesson
from .render import show

COLOURS = {"guest memory": "#d5f5e3", "VMM region": "#fcf3cf", "VMM region (host)": "#fcf3cf",
           "kernel": "#fdebd0", "mapping window": "#e8daef", "page tables": "#f2f3f4",
           "last page": "#f2f3f4", "not present": "#ffffff"}


def _rows(space):
    """(first, end, who, access) from the top of the address space down, gaps included."""
    rows, at = [], 0
    runs = list(space.runs)
    if space.window and not space.of("mapping window"):       # its table is there, no slot mapped now
        rows_window = [(mapcache.WINDOW, mapcache.WINDOW + paging.SPAN, "mapping window", "supervisor, no page now")]
    else:
        rows_window = []
    for first, end, name, what in sorted([(r.first, r.end, r.name, lesson.access(r)) for r in runs] + rows_window):
        if first > at:
            rows.append((at, first, "not present", ""))
        rows.append((first, end, name, what))
        at = end
    if at < 1 << 32:
        rows.append((at, 1 << 32, "not present", ""))
    return rows[::-1]


def _reach(segment, first, end):
    """How much of linear [first, end) a segment's offsets 0..limit reach."""
    if segment is None:
        return ""
    top = segment.base + segment.limit
    if top >= end - 1 and segment.base <= first:
        return "✓"
    if top < first or segment.base >= end:
        return "past limit"
    return f"to {top:#x}"


def space_diagram(space):
    """The address space as one table, top of memory first: each range with whose it
    is, its pages' access, and how far the guest's and the VMM's data segments reach."""
    columns = [("guest DS", space.segment("guest data")), ("VMM DS", space.segment("VMM data"))]
    columns = [(n, s) for n, s in columns if s is not None]
    head = "".join(f"<TD><B>{n}</B><BR/>limit {s.limit:#x}</TD>" for n, s in columns)
    cells = [f"<TR><TD><B>linear</B></TD><TD><B>whose</B></TD><TD><B>pages</B></TD>{head}</TR>"]
    for first, end, who, access in _rows(space):
        reach = "".join(f"<TD>{_reach(s, first, end)}</TD>" for _, s in columns)
        cells.append(f'<TR><TD ALIGN="LEFT">{first:#010x}..{end - 1:#010x}</TD>'
                     f'<TD BGCOLOR="{COLOURS.get(who, "#ffffff")}">{html.escape(who)}</TD>'
                     f"<TD>{html.escape(access)}</TD>{reach}</TR>")
    g = graphviz.Digraph("space", graph_attr={"fontname": "Helvetica"},
                         node_attr={"shape": "plaintext", "fontname": "monospace", "fontsize": "10"})
    g.node("space", f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
                    f'<TR><TD COLSPAN="{3 + len(columns)}"><B>{html.escape(space.world)}</B>: CR3 {space.cr3:#x}, '
                    f'GDT {space.gdtr[0]:#x}</TD></TR>{"".join(cells)}</TABLE>>')
    return show(g)


WHO = ("guest", "VMM", "COS")


class ProbeWidget(widgets.VBox):
    """Pick an address (or type one), read it from the guest, the VMM or the COS: each
    click runs x86 on a machine (lessons.probes.Prober); the results pile up
    below, newest last."""

    def __init__(self, prober, presets):
        self.prober = prober
        self.choice = widgets.Dropdown(options=[(f"{what} ({a:#x})", a) for what, a in presets],
                                       description="address")
        self.typed = widgets.Text(placeholder="or type one: 0x...", layout=widgets.Layout(width="14em"))
        self.buttons = [widgets.Button(description=f"read it from the {who}") for who in WHO]
        for b, who in zip(self.buttons, WHO):
            b.on_click(lambda _, who=who: self.probe(who, self.address()))
        self.view = widgets.HTML()
        self.results = []
        super().__init__([widgets.HBox([self.choice, self.typed]), widgets.HBox(self.buttons), self.view])

    def address(self):
        text = self.typed.value.strip()
        if not text:
            return self.choice.value
        try:
            value = int(text, 0)
        except ValueError:
            return None
        return value if 0 <= value <= 0xFFFFFFFF else None

    def probe(self, who, address):
        """Read `address` from `who` ("guest", "VMM" or "COS"); returns the result line.
        Anything but a 32-bit linear address gets a line saying so, and no machine runs."""
        if address is None or isinstance(address, bool) or not isinstance(address, int) \
                or not 0 <= address <= 0xFFFFFFFF:
            shown = self.typed.value if address is None else address
            line = f"not an address: {shown!r} (a number from 0 to 0xffffffff, e.g. 0x40a000)"
        elif who not in WHO:
            line = f"no {who!r} to read from: one of {', '.join(WHO)}"
        else:
            line = str(getattr(self.prober, who.lower())(address))
        self.results.append(line)
        self.view.value = "<pre>" + html.escape("\n".join(self.results[-12:])) + "</pre>"
        return line
