"""Notebook 08's pictures: the shared region drawn from its live layout (the addresses are
the port's, the parts net_ring.py's), and a step-through of one packet's life
(lessons/net.packet_life recorded the regions' bytes at each step)."""
import html

import graphviz

from vmkit.lessons.net import region_parts, step_text
from .render import show
from .slider_stepper import SliderStepper

KERNEL, GUEST, NIC = "#5dade2", "#f5b041", "#58d68d"


def region_graph(port, name):
    """The VM's region as one record, arrows from who writes each part to it."""
    g = graphviz.Digraph("region", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                         node_attr={"fontname": "Helvetica", "fontsize": "10"})
    parts = region_parts(port)
    rows = "|".join(f"<p{i}> {n} @ {at:#x} ({size:#x} bytes)\\n{what}"
                    for i, (n, at, size, what) in enumerate(parts))
    g.node("region", f"{{shared region of {name} (in {name}'s memory)|{rows}}}", shape="record")
    g.node("driver", f"{name}'s driver\\n(x86, CPL 3)", shape="box", style="filled", fillcolor=GUEST)
    g.node("kernel", "the kernel\\n(vm_net.py)", shape="box", style="filled", fillcolor=KERNEL)
    g.node("nic", f"{port.front.device.name}\\n(shared NIC, claim 8)", shape="box", style="filled",
           fillcolor=NIC)
    for i, who in ((0, "driver"), (1, "driver"), (3, "driver"), (0, "kernel"), (2, "kernel"),
                   (4, "kernel"), (5, "kernel")):
        g.edge(who, f"region:p{i}", color=GUEST if who == "driver" else KERNEL)
    g.edge("region:p4", "nic", label="DMA reads", color=NIC)
    g.edge("nic", "kernel", label="IRQ: a frame", color=NIC)
    g.edge("kernel", "driver", label="raise line 10 (VMM injects 0x2A)", style="dashed")
    g.edge("driver", "kernel", label="one out: the request", style="dashed")
    return g


def region_diagram(port, name):
    return show(region_graph(port, name))


class PacketStepper(SliderStepper):
    def __init__(self, steps):
        self.steps = steps
        super().__init__(len(steps))

    def show(self, upto):
        return f"<pre>{html.escape(step_text(self.steps[upto]))}</pre>"
