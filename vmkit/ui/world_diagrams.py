"""The worlds as the kernel keeps them (claims 13, 27, 34): for each world its
memory region, its address space and its control thread (the saved CPU state
in its save area in kernel memory), all read from `kernel.worlds` and memory."""
import graphviz

from vmkit.lessons import worlds as lesson
from .render import show

COLOURS = {"cos": "#d6eaf8", "vm": "#d5f5e3"}


def worlds_diagram(kernel):
    g = graphviz.Digraph("worlds", graph_attr={"rankdir": "LR", "fontsize": "11"},
                         node_attr={"shape": "box", "fontname": "monospace", "fontsize": "10"})
    g.node("kernel", f"vmkernel at {kernel.base:#x}\nscheduler: {kernel.worlds.chooser.__name__}, "
                     f"quantum {kernel.worlds.quantum} ticks\ncurrent: {kernel.worlds.current.name}",
           style="filled", fillcolor="#fdebd0")
    for row in lesson.world_rows(kernel):
        base, size = row["region"]
        name = row["world"]
        space = "flat segments, CR3 %#x" % row["cr3"] + (", CPL %d" % (row["cs"] & 3))
        label = (f"world {name} ({row['kind']}, {row['state']})\n"
                 f"memory region {base:#x}..{base + size:#x}\n"
                 f"address space: {space}\n"
                 f"control thread: save area {row['save area']:#x}\n"
                 + ("  running now: its state is in the CPU" if name == kernel.worlds.current.name else
                    f"  saved EIP {row['eip']:#x} ESP {row['esp']:#x}"))
        g.node(name, label, style="filled", fillcolor=COLOURS[row["kind"]])
        g.edge("kernel", name, label="schedules")
    return show(g)
