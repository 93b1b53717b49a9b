"""Step through the load sequence of claims 2-4, one trace event at a time.

The sequence ran on the machine already; this widget replays the events it
left in the board's trace (which carry the registers each step changed),
so what it shows is what the CPU did, in order.
"""
import html

from .slider_stepper import SliderStepper

STEPS = {
    "serial": "the COS prints",
    "load.called": "the load-call module's init calls the loading module (EAX = the block the COS gave, ECX = pages)",
    "load.copied": "the loading module checks the vmkernel image and copies it into that block",
    "load.idt": "it builds the kernel's IDT in kernel memory: 256 gates, each into a kernel stub",
    "load.switched": "it sets EIP to the kernel's first instruction, whose lgdt, lidt, ltr and far jump switch the CPU: "
                     "GDTR, TR and IDTR name the kernel's tables, CS:EIP the kernel's entry",
    "kernel.init": "the kernel initialises: the COS's pushfd/popfd/iretd become int3",
    "kernel.displaced": "the kernel returns to the COS where it called the loader — at CPL 1",
}


def load_events(trace):
    """The load sequence's events: from the COS's `insmod` line to the displacement."""
    events = trace.of(*STEPS)
    start = next((i for i, e in enumerate(events) if e.kind == "serial" and "insmod" in e["line"]), 0)
    end = next((i for i, e in enumerate(events) if e.kind == "kernel.displaced"), len(events) - 1)
    return events[start:end + 1]


class LoadStepper(SliderStepper):
    def __init__(self, board):
        self.events = load_events(board.trace)
        super().__init__(len(self.events), continuous_update=True)

    def show(self, upto):
        rows = []
        for i, e in enumerate(self.events[:upto + 1]):
            what = STEPS[e.kind] + (f": <code>{html.escape(e['line'])}</code>" if e.kind == "serial" else "")
            data = " ".join(f"{k}=<code>{html.escape(str(v) if not isinstance(v, int) else hex(v))}</code>"
                            for k, v in e.data.items() if k != "line")
            style = " style='background:#fdf2d0'" if i == upto else ""
            rows.append(f"<tr{style}><td>{e.time}</td><td>{what}</td><td>{data}</td></tr>")
        return ("<table><tr><th>time</th><th>step</th><th>what changed</th></tr>"
                + "".join(rows) + "</table>")
