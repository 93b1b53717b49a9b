"""Two CPUs (claims 16-17, 37-38): each CPU's registers and system world, the
worlds placed on it, its mapping cache's counters, and a strip per CPU of the
turns it gave its worlds; a diagram of the same, all read from the machine."""
import html

import graphviz
import ipywidgets as widgets

from vmkit.lessons import smp as lesson
from .render import show
from .worlds_panel import timeline_html

RUN = 200_000
COLOURS = {"cos": "#d6eaf8", "vm": "#d5f5e3", "system": "#fdebd0"}


def processors_text(board, kernel):
    rows = [f"{'CPU':4} {'system world':13} {'running':8} {'TR':>5} {'TSS':>10} {'ESP0':>10} "
            f"{'CR3':>10} {'CPL':>3} {'APIC ticks':>10}"]
    rows += [f"{r['cpu']:<4} {r['system world']:13} {r['running']:8} {r['TR']:#5x} {r['TSS']:#10x} "
             f"{r['ESP0']:#10x} {r['CR3']:#10x} {r['CPL']:>3} {r['APIC ticks']:>10}"
             for r in lesson.processors(board, kernel)]
    return "\n".join(rows)


def placement_text(kernel):
    rows = [f"{'world':8} {'kind':7} {'CPU':>3} {'state':10} {'instructions':>12} {'switches in':>11} {'ticks':>6}"]
    rows += [f"{r['world']:8} {r['kind']:7} {r['cpu']:>3} {r['state']:10} {r['instructions']:>12,} "
             f"{r['switches in']:>11} {r['ticks']:>6}" for r in lesson.placement(kernel)]
    return "\n".join(rows)


def cache_text(kernel):
    rows = [f"{'CPU':4} {'hits':>6} {'misses':>6} {'evictions':>9} {'local flushes':>13} {'IPIs sent':>9} "
            f"{'shootdowns taken':>16}  slots (pages)"]
    rows += [f"{r['cpu']:<4} {r['hits']:>6} {r['misses']:>6} {r['evictions']:>9} {r['local_flushes']:>13} "
             f"{r['ipis_sent']:>9} {r['shootdowns_taken']:>16}  "
             + " ".join("-" if s is None else f"{s:#x}" for s in r["slots"])
             for r in lesson.cache_counters(kernel)]
    return "\n".join(rows)


def window_text(board, kernel, cpu):
    """A CPU's window as its MMU translates it, and what it reads there."""
    rows = [f"{'slot':4} {'window address':>14} {'PTE maps':>10} {'CPU translates to':>17}  CPU reads"]
    rows += [f"{r['slot']:<4} {r['window address']:#14x} " +
             (f"{'-':>10} {'-':>17}" if r["PTE maps"] is None else
              f"{r['PTE maps']:#10x} {r['CPU translates to']:#17x}  {r['CPU reads'].hex(' ')}")
             for r in lesson.window(board, kernel, cpu)]
    return "\n".join(rows)


def code_text(listing):
    return "\n".join(f"{address:#010x}  {text}" for address, text in listing)


def stale_text(results):
    """{design: stale_window result}, side by side."""
    names = ("slot", "PTE maps", "CPU 1 translates to", "read gives", "IPIs sent", "shootdowns CPU 1 took")
    fmt = lambda v: f"{v:#x}" if isinstance(v, int) and v > 0xFFFF else str(v)
    rows = [f"{'':22}" + "".join(f"{d:>22}" for d in results)]
    rows += [f"{n:22}" + "".join(f"{fmt(results[d][n]):>22}" for d in results) for n in names]
    return "\n".join(rows)


def compare_text(figures):
    names = list(next(iter(figures.values())))
    rows = [f"{'':22}" + "".join(f"{d:>22}" for d in figures)]
    rows += [f"{n:22}" + "".join(f"{figures[d][n]:>22,}" for d in figures) for n in names]
    return "\n".join(rows)


def smp_diagram(board, kernel):
    g = graphviz.Digraph("smp", graph_attr={"rankdir": "LR", "fontsize": "11"},
                         node_attr={"shape": "box", "fontname": "monospace", "fontsize": "10"})
    g.node("memory", f"shared memory\nvmkernel at {kernel.base:#x}\n(one GDT, one IDT)", shape="cylinder")
    for r in lesson.processors(board, kernel):
        cpu, p = r["cpu"], kernel.worlds.cpus[r["cpu"]]
        with g.subgraph(name=f"cluster_{cpu}", graph_attr={"label": f"CPU {cpu}", "style": "rounded"}) as c:
            c.node(f"cpu{cpu}", f"CPU {cpu}: running {r['running']}\nTR {r['TR']:#x}  TSS {r['TSS']:#x}\n"
                                f"ESP0 {r['ESP0']:#x} (its own stack)\nCR3 {r['CR3']:#x}\n"
                                f"local APIC timer: {r['APIC ticks']} ticks", style="filled", fillcolor="#eaecee")
            thread = ("the idle loop, CPL 0" if cpu else
                      "(CPU 0 idles and works in the\nkernel stub, on the COS's frame)")
            c.node(f"sys{cpu}", f"system world {p.system.name}\naddress space CR3 {p.system.cr3:#x}\n"
                                f"thread: {thread}", style="filled", fillcolor=COLOURS["system"])
            c.node(f"cache{cpu}", f"mapping cache: {len(p.cache.slots)} slots\nwindow table {p.cache.table:#x}",
                   shape="note")
            c.edge(f"cpu{cpu}", f"sys{cpu}", label="represented by")
            c.edge(f"cpu{cpu}", f"cache{cpu}", label="its own")
            for w in kernel.worlds.all:
                if w.cpu == cpu:
                    c.node(w.name, f"world {w.name} ({w.kind})", style="filled", fillcolor=COLOURS[w.kind])
                    c.edge(f"cpu{cpu}", w.name, label="schedules")
        g.edge(f"cpu{cpu}", "memory", style="dashed", arrowhead="none")
    return show(g)


class SMPPanel(widgets.VBox):
    """A "Run N instructions" button; per CPU its state, its worlds' turns and its cache."""
    def __init__(self, board, cos, kernel, instructions=RUN):
        self.board, self.cos, self.kernel = board, cos, kernel
        self.count = widgets.IntText(value=instructions, description="N", layout=widgets.Layout(width="180px"))
        self.button = widgets.Button(description="Run N instructions")
        self.button.on_click(lambda _: self.run())
        self.state = widgets.HTML()
        self.strips = [widgets.HTML() for _ in board.cpus]
        self.turns = [[] for _ in board.cpus]
        super().__init__([widgets.HBox([self.count, self.button]), self.state, *self.strips])
        self.refresh()

    def run(self, instructions=None):
        n = self.count.value if instructions is None else instructions
        mark = len(self.board.trace)
        first = [p.current.name for p in self.kernel.worlds.cpus]
        self.board.run(n)
        since = self.board.trace.events[mark:]
        self.turns = [lesson.timeline(since, p.index, first[p.index]) for p in self.kernel.worlds.cpus]
        self.refresh()
        return self.turns

    def text(self):
        return "\n\n".join([processors_text(self.board, self.kernel), placement_text(self.kernel),
                            cache_text(self.kernel)])

    def refresh(self):
        self.state.value = f"<pre>{html.escape(self.text())}</pre>"
        for i, strip in enumerate(self.strips):
            strip.value = f"<b>CPU {i}</b>" + timeline_html(self.turns[i])

