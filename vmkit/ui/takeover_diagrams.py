"""Who the interrupts belong to: IDTR -> table -> handlers -> whose memory."""
import graphviz

from vmkit.hw.x86 import decode_gate
from .render import show

SHOWN = {0x00: "#DE", 0x03: "int3", 0x0D: "#GP", 0x20: "timer IRQ 0", 0x24: "serial IRQ 4", 0x90: "int 0x90"}


def idt_ownership(board, kernel=None):
    """Read IDTR from the CPU and follow a few gates to where they lead."""
    cpu = board.cpu
    _, base, limit, _ = cpu["idtr"]
    owner = lambda a: "kernel memory" if kernel is not None and kernel.contains(a) else "COS memory"
    g = graphviz.Digraph("idt", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                         node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica"})
    g.node("idtr", f"IDTR (CPU)\nbase {base:#x}", shape="cds")
    g.node("table", f"IDT in {owner(base)}\n{base:#x}, {(limit + 1) // 8} gates")
    g.edge("idtr", "table")
    for region in ("COS memory", "kernel memory"):
        g.node(region, region, shape="folder", color="#2980b9" if region == "COS memory" else "#c0392b")
    for vector, name in SHOWN.items():
        if vector * 8 + 7 > limit:
            continue
        gate = decode_gate(board.memory.read(base + vector * 8, 8))
        node = f"v{vector}"
        g.node(node, f"{vector:#04x} {name}\n→ {gate.offset:#x}  DPL {gate.dpl}")
        g.edge("table", node)
        g.edge(node, owner(gate.offset), style="dashed")
    return show(g)
