"""Two VMs and the COS running, their consoles side by side, with per-world
accounting read from the world blocks in kernel memory (claims 12-13, 33-34);
and the scheduling timeline as an HTML strip, from the switch.* trace events."""
import html
import math

import ipywidgets as widgets

from vmkit.lessons import worlds as lesson
from vmkit.hw.x86 import EFLAGS_IF
from vmkit.kernel import save_area
from .render import bytes_html, labelled_bytes_text

RUN = 200_000
STRIP = {"cos": "#5dade2", "vm1": "#58d68d", "vm2": "#f5b041", "vm3": "#af7ac5", "vm4": "#ec7063",
         "system0": "#d5dbdb", "system1": "#d5dbdb"}


MIN_TURN_PX = 3     # a turn of one instruction still shows as a sliver of its world's colour


def strip_widths(turns, width=720, minimum=MIN_TURN_PX):
    """Each turn's width in pixels: proportional to its length in virtual time, but never below
    `minimum`, so that a VM's 137-instruction turn between two of the COS's 15,000 is seen.
    When the turns at `minimum` would take more than half of one row, the strip gets more rows
    of `width` (it wraps) rather than squeezing the long turns to nothing."""
    if not turns:
        return []
    lengths = [max(0, t.end - t.start) for t in turns]
    room = width * max(1, math.ceil(2 * minimum * len(turns) / width))
    # The scale s (pixels per instruction) that fills `room`: sum(max(minimum, s * n)) is
    # increasing in s, so bisect it.
    lo, hi = 0.0, room / min((n for n in lengths if n), default=1)
    for _ in range(60):
        s = (lo + hi) / 2
        if sum(max(minimum, s * n) for n in lengths) > room:
            hi = s
        else:
            lo = s
    return [max(minimum, math.floor(lo * n)) for n in lengths]


def timeline_html(turns, width=720):
    """The turns as coloured cells in the order they ran (hover one for its world and times)."""
    if not turns:
        return "<i>(no switch yet)</i>"
    start, end = turns[0].start, turns[-1].end
    cells = []
    for t, w in zip(turns, strip_widths(turns, width)):
        cells.append(f"<div title='{html.escape(t.world)} {t.start}..{t.end}' style='flex:none;"
                     f"width:{w}px;height:18px;background:{STRIP.get(t.world, '#bbb')}'></div>")
    present = {t.world for t in turns}
    legend = " ".join(f"<span style='background:{c};padding:0 6px'>{n}</span>"
                      for n, c in STRIP.items() if n in present)
    return (f"<div style='display:flex;flex-wrap:wrap;row-gap:3px;width:{width}px'>{''.join(cells)}</div>"
            f"<div>{legend} &nbsp; virtual time {start:,} .. {end:,} &nbsp; {len(turns)} turns"
            f" (each at least {MIN_TURN_PX} px wide)</div>")


def timeline_text(turns, limit=12):
    rows = [f"{'world':6} {'from':>9} {'to':>9} {'instructions':>12}"]
    rows += [f"{t.world:6} {t.start:>9} {t.end:>9} {t.end - t.start:>12}" for t in turns[:limit]]
    if len(turns) > limit:
        rows.append(f"... {len(turns) - limit} more turns")
    return "\n".join(rows)


def accounting_text(kernel):
    rows = [f"{'world':6} {'state':8} {'instructions':>12} {'switches in':>11} {'ticks':>6}"]
    rows += [f"{a['world']:6} {a['state']:8} {a['instructions']:>12} {a['switches in']:>11} {a['ticks']:>6}"
             for a in lesson.accounting(kernel)]
    return "\n".join(rows)


class WorldsPanel(widgets.VBox):
    """A "Run N instructions" button, one console per world, the accounting, the timeline."""
    def __init__(self, board, cos, kernel, instructions=RUN, tail=8):
        self.board, self.cos, self.kernel, self.tail = board, cos, kernel, tail
        self.count = widgets.IntText(value=instructions, description="N", layout=widgets.Layout(width="180px"))
        self.button = widgets.Button(description="Run N instructions")
        self.button.on_click(lambda _: self.run())
        self.consoles = {w.name: widgets.HTML() for w in kernel.worlds.all}
        self.table, self.strip = widgets.HTML(), widgets.HTML()
        self.turns = []
        boxes = [widgets.VBox([widgets.HTML(f"<b>{n}</b>"), c], layout=widgets.Layout(width="33%"))
                 for n, c in self.consoles.items()]
        super().__init__([widgets.HBox([self.count, self.button]), widgets.HBox(boxes),
                          self.table, self.strip])
        self.refresh()

    def run(self, instructions=None):
        n = self.count.value if instructions is None else instructions
        mark = self.board.trace.mark()
        self.board.run(n)
        self.turns = lesson.timeline(self.board.trace, mark)
        self.refresh()
        return self.turns

    def console_tail(self, world):
        return "\n".join(lesson.console_of(world, self.cos).splitlines()[-self.tail:])

    def text(self):
        parts = [f"--- {w.name} ---\n{self.console_tail(w)}" for w in self.kernel.worlds.all]
        return "\n".join(parts) + "\n\n" + accounting_text(self.kernel)

    def refresh(self):
        for w in self.kernel.worlds.all:
            self.consoles[w.name].value = (f"<pre style='height:9em;overflow:auto;margin:0;"
                                           f"background:#f4f4f4'>{html.escape(self.console_tail(w))}</pre>")
        self.table.value = f"<pre>{html.escape(accounting_text(self.kernel))}</pre>"
        self.strip.value = timeline_html(self.turns)


# ---- one world switch, step by step (notebook 06) ----------------------------------------
EXPLAIN = {
    "switch.begin": "the scheduler picked the next world; the stub goes to the switch's x86",
    "switch.save": "claim 14: the x86 stored the current world's state in kernel memory (its save area)",
    "switch.cli": "claim 14: exceptions disabled (the x86's cli; IF read back from the CPU)",
    "switch.check": "the next world's save area checked (CRC-32) before it is loaded",
    "switch.load": "claim 14/15: the x86 loaded the next world (lgdt, lldt, ltr, CR3, segments, lidt; "
                   "the frame for popad/iretd); every register read back",
    "switch.start": "claim 14: the stub's iretd starts it at the loaded CS:EIP",
    "switch.sti": "claim 14: the same iretd loads its EFLAGS, IF set: exceptions enabled",
}
SHOWN = ("eip", "eflags", "cs", "ss", "ds", "esp", "eax", "ebx", "cr3", "ldtr.sel", "tr.sel",
         "gdtr.base", "idtr.base")
AFTER_IRETD = ("switch.start", "switch.sti")


def _if(eflags):
    return "IF set" if eflags & EFLAGS_IF else "IF clear"


def step_text(steps, i, frm, to):
    s = steps[i]
    cpu, world = s.registers, s.world_state
    lines = [f"step {i + 1}/{len(steps)}: {s.kind} at {s.event.time}: {EXPLAIN[s.kind]}",
             f"CPU now: EIP {cpu['eip']:#x} CS {cpu['cs']:#x} EFLAGS {cpu['eflags']:#x} "
             f"({_if(cpu['eflags'])}) CPL {cpu['cpl']}"]
    if s.kind in AFTER_IRETD:
        lines.append(f"after the stub's iretd: EIP {world['eip']:#x} CS {world['cs']:#x} EFLAGS "
                     f"{world['eflags']:#x} ({_if(world['eflags'])}) CPL {world['cs'] & 3}")
    lines.append("resumes with: " + " ".join(f"{n}={world[n]:#x}" for n in SHOWN))
    for n in (frm, to):
        changed = i > 0 and steps[i - 1].areas[n] != s.areas[n]
        lines.append(f"save area of {n}:" + ("  (changed)" if changed else ""))
        lines.append(labelled_bytes_text(s.areas[n], save_area.FIELDS, per_line=8))
    return "\n".join(lines)


class SwitchStepper(widgets.VBox):
    """Prev/next through the steps of one recorded switch: the registers and both save areas."""
    def __init__(self, kernel, steps):
        self.kernel, self.steps, self.at = kernel, steps, 0
        self.frm, self.to = steps[0].event["frm"], steps[0].event["to"]
        self.areas = {w.name: w.area for w in kernel.worlds.all}
        self.prev = widgets.Button(description="◀ previous step")
        self.next = widgets.Button(description="next step ▶")
        self.prev.on_click(lambda _: self.go(self.at - 1))
        self.next.on_click(lambda _: self.go(self.at + 1))
        self.view = widgets.HTML()
        super().__init__([widgets.HBox([self.prev, self.next]), self.view])
        self.go(0)

    def go(self, i):
        self.at = max(0, min(len(self.steps) - 1, i))
        self.refresh()
        return self.text()

    def text(self):
        return step_text(self.steps, self.at, self.frm, self.to)

    def refresh(self):
        s, i = self.steps[self.at], self.at
        before = self.steps[i - 1] if i else None
        regs = "".join(f"<tr><td><code>{n}</code></td><td><code>{s.world_state[n]:#010x}</code></td></tr>"
                       for n in SHOWN)
        dumps = "".join(f"<div><b>save area of {n}</b> at {self.areas[n]:#x}"
                        f"{bytes_html(s.areas[n], self.areas[n], before.areas[n] if before else None, save_area.FIELDS)}</div>"
                        for n in (self.frm, self.to))
        head = self.text().splitlines()[:3 if s.kind in AFTER_IRETD else 2]
        self.view.value = (f"<pre>{html.escape(chr(10).join(head))}</pre>"
                           f"<div style='display:flex;gap:16px'><table>{regs}</table><div>{dumps}</div></div>")


def before_after_text(rows):
    out = [f"{'claim 15 item':28} {'register':11} {'before':>10} {'save area':>10} {'after':>10}  restored"]
    for label, n, before, stored, after, ok in rows:
        out.append(f"{label:28} {n:11} {before:#10x} {stored:#10x} {after:#10x}  {'yes' if ok else 'NO'}")
    return "\n".join(out)


def before_after_html(rows):
    head = "<tr><th>claim 15 item</th><th>register</th><th>before</th><th>save area</th><th>after</th><th>restored</th></tr>"
    body = "".join(f"<tr><td>{html.escape(l)}</td><td><code>{n}</code></td><td><code>{b:#x}</code></td>"
                   f"<td><code>{s:#x}</code></td><td><code>{a:#x}</code></td><td>{'✔' if ok else '✘'}</td></tr>"
                   for l, n, b, s, a, ok in rows)
    return f"<table>{head}{body}</table>"


def listing_text(listing, marks=None):
    """The switch's x86 as the CPU runs it, one instruction a line; `marks`:
    {instruction prefix: note} printed beside the first instruction that starts so."""
    marks, out = dict(marks or {}), []
    for address, text in listing:
        key = next((k for k in marks if text.startswith(k)), None)
        note = marks.pop(key) if key else ""           # its first occurrence: the save's, the load's
        out.append(f"{address:08x}  {text:40} {('; ' + note) if note else ''}".rstrip())
    return "\n".join(out)
