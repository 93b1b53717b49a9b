"""Who controls which device: COS, kernel, and the three classes (claims 5-8).

Drawn from the kernel's own lists (`kernel.devices`, `kernel.classes`) and,
for what a COS port access does, from the I/O bitmap in kernel memory
(vmkit.lessons.devices.port_access): the diagram says what the machine
does now, not what a policy asked for.
"""
import html

import graphviz

from vmkit.lessons import devices as lesson
from .render import show

CLUSTERS = {
    "host-managed": ("host-managed:\ncontrolled by the COS", "#eaf2fb", "#2980b9"),
    "reserved": ("reserved:\ncontrolled by the kernel", "#fbeaea", "#c0392b"),
    "shared": ("shared:\nthe COS or the kernel", "#fdf2d0", "#b9770e"),
}
MAX_WIDTH_IN = 8.5      # 612 pt, 816 px: what a ~900 px notebook column shows whole
TRAP_COLOUR = {lesson.REFUSED: "#c0392b", lesson.SERVED: "#b9770e", lesson.VIRTUAL_PIC: "#7f8c8d",
               lesson.MIXED: "#8e44ad"}


def device_graph(kernel):
    """The graphviz.Digraph itself (also used by the device panel)."""
    # Left to right (COS, the classes stacked, kernel): more devices make it taller, not wider.
    # `size` scales a drawing wider than a notebook's column (about 900 px) down to fit it.
    g = graphviz.Digraph("devices", graph_attr={"rankdir": "LR", "fontname": "Helvetica", "nodesep": "0.25",
                                                "ranksep": "0.5", "size": f"{MAX_WIDTH_IN},100"},
                         node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica", "fontsize": "11"},
                         edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    g.node("cos", "COS (CPL 1)\nits own drivers", color="#2980b9", penwidth="2")
    g.node("kernel", "vmkernel (CPL 0)\nIDT, I/O bitmap,\nPIC", color="#c0392b", penwidth="2")
    bitmap = lesson.io_bitmap(kernel)
    forwarded, also = [], []
    for cls in ("host-managed", "shared", "reserved"):
        label, fill, colour = CLUSTERS[cls]
        with g.subgraph(name=f"cluster_{cls}") as c:
            c.attr(label=label, style="filled", color=colour, fillcolor=fill, fontname="Helvetica", fontsize="11")
            members = [d for d in kernel.devices if kernel.classes.get(d.name) == cls]
            if not members:
                c.node(f"empty_{cls}", "(empty)", shape="plaintext")
            for d in members:
                irq = "" if d.irq is None else f"\nIRQ {d.irq}"
                c.node(d.name, f"{d.name}\nports {d.base:#x}-{d.base + d.count - 1:#x}{irq}",
                       style="rounded,filled", fillcolor="white")
    for d in kernel.devices:
        access = lesson.port_access(kernel, d, bitmap)
        if access == lesson.DIRECT:
            g.edge("cos", d.name, label="ports: direct", color="#2980b9")
        else:
            outcome = access.split("→ ")[-1]
            g.edge("cos", d.name, label=f"ports: trap\n→ {outcome}", style="dashed",
                   color=TRAP_COLOUR.get(access, "#7f8c8d"), fontcolor=TRAP_COLOUR.get(access, "#7f8c8d"))
        if kernel.classes.get(d.name) != "host-managed":
            g.edge(d.name, "kernel", label="ports", color="#c0392b", dir="back")   # kernel -> device
        if d.irq is not None:
            g.edge(d.name, "kernel", label=f"IRQ {d.irq}", style="dotted")
            route = kernel.irqs.routes.get(d.irq, "host-managed")
            if route == "host-managed":
                forwarded.append(d.irq)
            elif route == "shared" or d.irq == 0:
                also.append(d.irq)
    if forwarded or also:
        lines = lambda ls: ", ".join(map(str, sorted(ls)))
        label = "IRQ → kernel → COS"
        label += f"\nlines {lines(forwarded)}: masked until the COS's EOI" if forwarded else ""
        label += f"\nlines {lines(also)}: the timer's virtual tick, shared devices" if also else ""
        g.edge("kernel", "cos", label=label, style="bold", color="#2980b9", constraint="false")
    return g


def device_diagram(kernel):
    """COS, kernel and the devices in their classes, as the machine has them now."""
    return show(device_graph(kernel))


def device_diagram_html(kernel):
    """The same diagram as inline SVG (for a widget), or its DOT source without `dot`."""
    shown = device_diagram(kernel)
    if isinstance(shown, graphviz.Digraph):
        return shown.pipe(format="svg").decode("utf-8")
    return "<pre>" + html.escape(repr(shown)) + "</pre>"
