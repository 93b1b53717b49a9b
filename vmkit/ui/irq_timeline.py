"""One host-managed IRQ from the device to the COS's handler, on a time line
(claims 9-11, 26); the path it takes, as a diagram; and the jammed sensor.

The steps come from the trace (vmkit.lessons.interrupts.irq_steps), each
with its virtual time, so the delay of claim 10 shows as a long bar. The
diagram's addresses are read from the CPU's IDTR, the kernel's IDT and the
COS's IDT (through its virtual IDTR) in emulated memory.
"""
import html

import graphviz
import ipywidgets as widgets

from vmkit.hw.x86 import decode_gate
from vmkit.lessons import interrupts
from .render import show

RUN = 30_000                  # instructions run after each trigger: ample for one IRQ's trip
BAR = 40                      # characters of a full bar in the text version
SCALE = 6000                  # instructions a full bar stands for (about one piece of kernel work):
                              # one fixed scale, so a prompt IRQ and a delayed one compare at a glance
EXPLAIN = {
    "raised": "the device raises its line at the PIC",
    "into the kernel": "the CPU takes it through the kernel's IDT",
    "masked": "the kernel masks the line at the PIC (claim 11)",
    "queued": "pending for the COS (claim 10: not delivered yet)",
    "the COS runs": "the kernel returns to the COS",
    "delivered": "injected through the COS's own IDT, to its handler (claim 9)",
    "the COS's EOI": "the COS's handler sends EOI to its virtual PIC",
    "unmasked": "the kernel unmasks the real line",
}


def _detail(step, kernel):
    e = step.event
    if e.kind in ("cpu.deliver", "kernel.inject"):
        whose = "kernel" if kernel.contains(e["handler"]) else "COS"
        extra = f", CPL {e['cpl'].replace('->', '→')}" if e.kind == "cpu.deliver" else ""
        return f"vector {e['vector']:#x} → handler {e['handler']:#x} ({whose} memory{extra})"
    if e.kind == "kernel.cos_runs":
        return f"COS pending lines {e['pending']:#06b}"
    return ""


def steps_text(steps, kernel):
    """The steps as text: virtual time, offset from `raised`, a bar, what happened."""
    if not steps:
        return "(no IRQ seen)"
    start = steps[0].time
    rows = [f"{'step':16} {'time':>8} {'+':>6}  {'(full bar: ' + format(SCALE, ',') + ' instructions)':{BAR + 1}} what"]
    for s in steps:
        offset = s.time - start
        bar = "#" * min(BAR, round(BAR * offset / SCALE)) + ("…" if offset > SCALE else "")
        detail = _detail(s, kernel)
        rows.append(f"{s.name:16} {s.time:>8} {offset:>6}  {bar:{BAR + 1}} {EXPLAIN[s.name]}"
                    + (f"; {detail}" if detail else ""))
    waited = interrupts.waited(steps)
    if waited is not None:
        rows.append(f"queued → delivered: {waited} instructions")
    return "\n".join(rows)


def steps_html(steps, kernel):
    if not steps:
        return "<i>(no IRQ seen)</i>"
    start = steps[0].time
    rows = []
    for s in steps:
        offset = s.time - start
        width = max(2, min(300, round(300 * offset / SCALE)))
        colour = "#c0392b" if s.name in ("queued", "the COS runs") else "#2980b9"
        rows.append(f"<tr><td><b>{s.name}</b></td><td>{s.time}</td><td>+{offset}</td>"
                    f"<td><div style='width:{width}px;height:10px;background:{colour}'></div></td>"
                    f"<td>{html.escape(EXPLAIN[s.name])}<br><code>{html.escape(_detail(s, kernel))}</code></td></tr>")
    waited = interrupts.waited(steps)
    foot = (f"<div>queued → delivered: <b>{waited}</b> instructions of virtual time</div>"
            if waited is not None else "")
    return ("<table><tr><th>step</th><th>time</th><th>offset</th>"
            f"<th style='width:310px'>since raised (full width: {SCALE:,} instructions)</th>"
            "<th>what</th></tr>" + "".join(rows) + "</table>" + foot)


class IrqTimeline(widgets.VBox):
    """Buttons that make a device interrupt; the IRQ's steps, from the trace."""
    def __init__(self, board, cos, kernel, instructions=RUN):
        self.board, self.cos, self.kernel, self.instructions = board, cos, kernel, instructions
        self.buttons = []
        for source, (line, label) in interrupts.SOURCES.items():
            button = widgets.Button(description=label, tooltip=f"IRQ {line}",
                                    layout=widgets.Layout(width="180px"))
            button.on_click(lambda _, source=source: self.trigger(source))
            self.buttons.append(button)
        self.during_work = widgets.Checkbox(value=False, indent=False,
                                            description="first wait until the kernel is at its own work")
        self.status = widgets.HTML()
        self.view = widgets.HTML()
        self.steps, self.source, self.waited_for_work = [], None, None
        super().__init__([widgets.HBox(self.buttons), self.during_work, self.status, self.view])
        self.refresh()

    def trigger(self, source, during_work=None):
        """Make `source` interrupt, run, and show the steps its IRQ took."""
        during_work = self.during_work.value if during_work is None else during_work
        self.during_work.value = during_work
        self.waited_for_work = (interrupts.until_kernel_works(self.board, self.kernel)
                                if during_work else None)
        self.source = source
        mark = self.board.trace.mark()
        line = interrupts.trigger(self.board, self.cos, source)
        self.board.run(self.instructions)
        self.steps = interrupts.irq_steps(self.board.trace, mark, line)
        self.refresh()
        return self.steps

    def headline(self):
        if self.source is None:
            return "press a button"
        line, label = interrupts.SOURCES[self.source]
        head = f"{label}: IRQ {line}, then {self.instructions:,} instructions run"
        if self.waited_for_work is not None:
            head += " (raised while the kernel was at its own work"
            head += f", reached after {self.waited_for_work:,} more instructions)" if self.waited_for_work else ")"
        return head

    def text(self):
        return self.headline() + "\n" + steps_text(self.steps, self.kernel)

    def refresh(self):
        self.status.value = html.escape(self.headline())
        self.view.value = steps_html(self.steps, self.kernel) if self.source else ""


# ---- the path, as a diagram -------------------------------------------------------------
def irq_path(board, kernel, line=interrupts.SERIAL):
    """Device → PIC → CPU (IDTR) → the kernel's handler → queue → the COS's IDT → its
    handler → EOI to the virtual PIC → unmask: addresses read from the machine."""
    vector = interrupts.IRQ_BASE + line
    _, idt, _, _ = board.cpu["idtr"]
    kernel_gate = decode_gate(board.memory.read(idt + vector * 8, 8))
    v = kernel.vcpu
    cos_gate = decode_gate(board.memory.read(v.idt_base + vector * 8, 8))
    g = graphviz.Digraph("irqpath", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                         node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica", "fontsize": "11"},
                         edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    name = {interrupts.SERIAL: "serial0 (COM1)", interrupts.KEYBOARD: "kbd0", interrupts.SENSOR: "sensor0"}
    g.node("dev", f"{name.get(line, f'line {line}')}\nhost-managed", color="#2980b9")
    g.node("pic", f"8259A PIC\nline {line} → vector {vector:#x}")
    g.node("cpu", f"CPU\nIDTR {idt:#x}\n(the kernel's IDT)")
    with g.subgraph(name="cluster_kernel") as k:
        k.attr(label="vmkernel (kernel memory)", color="#c0392b", fontname="Helvetica")
        k.node("khandler", f"gate {vector:#x} → {kernel_gate.offset:#x}\nmask line {line}, EOI,\nqueue for the COS")
        k.node("queue", "COS pending lines\n(its virtual CPU)")
        k.node("inject", "when the COS next runs\nand its virtual IF = 1:\ninject through its IDT")
        k.node("unmask", f"unmask line {line}")
    with g.subgraph(name="cluster_cos") as c:
        c.attr(label="COS (CPL 1, COS memory)", color="#2980b9", fontname="Helvetica")
        c.node("cosidt", f"its IDT at {v.idt_base:#x}\n(virtual IDTR)\ngate {vector:#x} → {cos_gate.offset:#x}")
        c.node("coshandler", "its own handler\nreads the device,\nEOI to its (virtual) PIC")
    g.edge("dev", "pic", label=f"IRQ {line}")
    g.edge("pic", "cpu", label="INTR")
    g.edge("cpu", "khandler", label="vector through IDTR")
    g.edge("khandler", "queue")
    g.edge("queue", "inject", label="delayed (claim 10)", color="#c0392b", fontcolor="#c0392b")
    g.edge("inject", "cosidt")
    g.edge("cosidt", "coshandler")
    g.edge("coshandler", "unmask", label="out 0x20 traps", style="dashed")
    g.edge("unmask", "pic", style="dashed", constraint="false")
    return show(g)


# ---- the jammed sensor (claim 11) ---------------------------------------------------------
STORM_RUN = 100_000


class StormPanel(widgets.VBox):
    """A fresh machine per run: jam the sensor's level-triggered line, run, count."""
    def __init__(self, instructions=STORM_RUN):
        self.instructions = instructions
        self.masking = widgets.ToggleButton(value=True, description="kernel masks the line",
                                            tooltip="claim 11: mask from the kernel's first sight until the COS's EOI",
                                            layout=widgets.Layout(width="200px"))
        self.masking.observe(lambda change: self._label(), names="value")
        self.run_button = widgets.Button(description="jam the sensor and run", button_style="warning",
                                         layout=widgets.Layout(width="200px"))
        self.run_button.on_click(lambda _: self.run())
        self.view = widgets.HTML()
        self.results = {}                       # masking -> storm() counts
        super().__init__([widgets.HBox([self.masking, self.run_button]), self.view])
        self._label()
        self.refresh()

    def _label(self):
        self.masking.description = "kernel masks the line" if self.masking.value else "masking OFF"

    def run(self, masking=None):
        masking = self.masking.value if masking is None else masking
        self.masking.value = masking
        self.results[masking] = interrupts.storm(masking=masking, instructions=self.instructions)
        self.refresh()
        return self.results[masking]

    def text(self):
        if not self.results:
            return "(not run yet)"
        shown = [m for m in (True, False) if m in self.results]
        head = [f"masking {'on' if m else 'off'}" for m in shown]
        rows = [f"{'jammed sensor, ' + format(self.instructions, ',') + ' instructions':36}"
                + "".join(f"{h:>16}" for h in head)]
        for key in self.results[shown[0]]:
            rows.append(f"{key:36}" + "".join(f"{str(self.results[m][key]):>16}" for m in shown))
        return "\n".join(rows)

    def refresh(self):
        self.view.value = f"<pre>{html.escape(self.text())}</pre>"
