"""Graphviz diagrams drawn from the board's own lists (devices, CPUs, IDTR)."""
import graphviz

from .render import show


def board_diagram(board):
    g = graphviz.Digraph("board", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                         node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica"})
    g.node("mem", f"physical memory\n{board.memory.size >> 20} MiB, shared")
    g.node("pic", "8259A PIC pair\nports 0x20, 0xA0")
    for cpu in board.cpus:
        _, idt, limit, _ = cpu["idtr"]
        g.node(f"cpu{cpu.index}", f"CPU {cpu.index}\n(Unicorn x86-32)\nIDTR {idt:#x}/{limit:#x}")
        g.edge(f"cpu{cpu.index}", "mem", label="load/store")
    g.edge("pic", "cpu0", label="INTR → vector\nthrough IDTR")
    for kind, base, count, irq in board.devices:
        if kind == "pic":
            continue
        name = f"{kind}@{base:#x}"
        g.node(name, f"{kind}\nports {base:#x}..{base + count - 1:#x}")
        g.edge("cpu0", name, label="in/out", style="dashed")
        if irq is not None:
            g.edge(name, "pic", label=f"IRQ {irq}")
        if kind in ("nic", "scsi"):
            g.edge(name, "mem", label="DMA", style="dotted")
    return show(g)
