"""Graphviz diagrams of the console OS: its boot steps, and its IDT read live."""
import graphviz

from vmkit.cos import layout as L
from vmkit.lessons import cos_boots
from .render import show

FONT = {"fontname": "Helvetica"}
BOOT_STEPS = (
    ("firmware", "firmware (board.boot)\nCPL 0, flat GDT at 0x500,\nno IDT, EIP = 0x10000"),
    ("tables", "lgdt · far jmp · ltr\nthe COS's own GDT and TSS"),
    ("idt", "build 256 gates, lidt\nthe COS's IDT at 0x20800"),
    ("devices", "program PIC, PIT, UART;\nenumerate the device table\nat 0x600, claim each device;\n"
                "attach keyboard and sensor"),
    ("banner", "print the banner\non COM1"),
    ("loop", "sti; main loop:\nsti; hlt until an IRQ,\nprint ticks, run commands"),
)


def boot_diagram():
    """The steps the COS's x86 code takes from the firmware's hand-off to its main loop."""
    g = graphviz.Digraph("cos_boot", graph_attr={"rankdir": "LR", **FONT},
                         node_attr={"shape": "box", "style": "rounded", **FONT}, edge_attr=FONT)
    for name, label in BOOT_STEPS:
        g.node(name, label)
    for (a, _), (b, _) in zip(BOOT_STEPS, BOOT_STEPS[1:]):
        g.edge(a, b)
    g.node("irqs", "timer IRQ 0 → vector 0x20\nkeyboard IRQ 1 → vector 0x21\n"
                   "serial IRQ 4 → vector 0x24\nsensor IRQ 5 → vector 0x25", shape="ellipse")
    g.edge("irqs", "loop", label="wake hlt", style="dashed")
    return show(g)


def idt_diagram(cos):
    """IDTR (read from the CPU) → the COS's IDT → each group of vectors → its handler in COS code."""
    board = cos.board
    _, base, limit, _ = board.cpu["idtr"]
    g = graphviz.Digraph("cos_idt", graph_attr={"rankdir": "LR", **FONT},
                         node_attr={"shape": "box", "style": "rounded", **FONT},
                         edge_attr=FONT)
    g.node("idtr", f"IDTR (CPU 0)\nbase {base:#x}\nlimit {limit:#x}", shape="cds")
    with g.subgraph(name="cluster_data") as data:
        data.attr(label=f"COS data {L.COS_DATA:#x}–{L.COS_DATA + L.COS_DATA_SIZE - 1:#x}",
                  style="dashed")
        data.node("idt", f"the COS's IDT\n{(limit + 1) // 8} gates at {base:#x}")
    g.edge("idtr", "idt")
    end = cos.symbols["cos_code_end"]
    with g.subgraph(name="cluster_code") as code:
        code.attr(label=f"COS code {L.COS_CODE:#x}–{end - 1:#x}", style="dashed")
        for i, (kind, ranges, n, low, high, sels, region) in enumerate(cos_boots.idt_groups(cos)):
            where = f"{low:#x}" if low == high else f"{low:#x}–{high:#x}"
            g.node(f"v{i}", f"{cos_boots.ROLES.get(kind, kind)}\nvector{'s' if n > 1 else ''} {ranges}\n"
                            f"{n} gate{'s' if n > 1 else ''}, "
                            f"selector {'/'.join(f'{s:#x}' for s in sels)}", shape="note")
            code.node(f"h{i}", f"{kind}\n{where}\n({region})")
            g.edge("idt", f"v{i}")
            g.edge(f"v{i}", f"h{i}")
    return show(g)
