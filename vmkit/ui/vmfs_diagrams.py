"""One VMFS file as the disk holds it: descriptor -> pointer blocks -> file blocks (claim 23).

Drawn from lessons.vmfs.file_map (the disk's bytes); `block` highlights the
path of one VDISK block, the walk the kernel makes for a guest's sector.
"""
import graphviz

from vmkit.kernel import vmfs_address as A
from vmkit.lessons import vmfs as lesson
from .render import show

HOT, COLD = "#c0392b", "#7f8c8d"


def file_graph(vol, name, block=None):
    m = lesson.file_map(vol, name, also=() if block is None else (block,))
    fd = m["fd"]
    g = graphviz.Digraph("vmfs", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                         node_attr={"shape": "record", "fontname": "Helvetica", "fontsize": "10"},
                         edge_attr={"color": COLD})
    hot_pb = None if block is None or not fd.pointer_blocks else block // 1024
    entries = ([f"<a{i}> [{i}] {A.describe(a)}" for i, a in enumerate(fd.addresses[:fd.pointer_blocks])]
               if fd.pointer_blocks else [f"<a{b}> [{b}] {A.describe(a)}" for b, a, _ in m["blocks"]])
    g.node("fd", f"file descriptor {m['descriptor']}|{fd.name.rstrip(bytes(1)).decode()}|"
           f"{fd.length} bytes, {fd.blocks} blocks|pointer_blocks {fd.pointer_blocks}|"
           + "|".join(entries))
    for i, p, shown in m["pointer_blocks"]:
        rows = "|".join(f"<e{j}> [{j}] {A.describe(a)}" for j, a in shown)
        g.node(f"pb{p}", f"pointer block {p}|{rows}")
        hot = i == hot_pb
        g.edge(f"fd:a{i}:e", f"pb{p}:w", color=HOT if hot else COLD, penwidth="2" if hot else "1")
    for b, address, sector in m["blocks"]:
        hot = b == block
        g.node(f"fb{b}", f"VDISK block {b}|FB {A.number(address)}|sector {sector}"
               + ("|TBZ" if A.tbz(address) else ""), color=HOT if hot else "black")
        if fd.pointer_blocks:
            p = A.number(fd.addresses[b // 1024])
            g.edge(f"pb{p}:e{b % 1024}", f"fb{b}", color=HOT if hot else COLD, penwidth="2" if hot else "1")
        else:
            g.edge(f"fd:a{b}", f"fb{b}", color=HOT if hot else COLD, penwidth="2" if hot else "1")
    if m["hidden"]:
        g.node("more", f"... {m['hidden']} more blocks", shape="plaintext")
    return g


def file_diagram(vol, name, block=None):
    return show(file_graph(vol, name, block))
