"""Classify the devices the COS handed over, and watch what the machine does.

One dropdown per device; Apply hands the policy to `kernel.apply_policy`,
which validates it (exercise 03's classify) and enforces it. What the panel
shows afterwards is read back from the machine: the I/O permission bitmap in
the kernel's TSS (one bit per port), the kernel's IRQ routes, the COS's
console. A refused policy changes nothing, and the panel says so.
"""
import html

import ipywidgets as widgets

from vmkit.kernel.devices import CLASSES
from vmkit.lessons import devices as lesson
from .device_diagrams import device_diagram_html

RUN = 300_000
COLOURS = {lesson.DIRECT: "#1e8449", lesson.REFUSED: "#c0392b", lesson.SERVED: "#b9770e"}


class DevicePanel(widgets.VBox):
    def __init__(self, board, cos, kernel):
        self.board, self.cos, self.kernel = board, cos, kernel
        self.dropdowns = {d.name: widgets.Dropdown(options=list(CLASSES), value=kernel.classes[d.name],
                                                   description=d.name, layout=widgets.Layout(width="260px"))
                          for d in kernel.devices}
        self.apply_button = widgets.Button(description="Apply", button_style="primary")
        self.run_button = widgets.Button(description=f"Run {RUN // 1000}k instructions",
                                         layout=widgets.Layout(width="200px"))
        self.message = widgets.HTML()
        self.table = widgets.HTML()
        self.console = widgets.HTML()
        self.diagram = widgets.HTML()
        self.apply_button.on_click(lambda _: self.apply())
        self.run_button.on_click(lambda _: self.run())
        self.last = ""                    # the last message, as plain text
        self.last_run = ""
        boxes = list(self.dropdowns.values())
        grid = widgets.GridBox(boxes, layout=widgets.Layout(grid_template_columns="repeat(3, 270px)"))
        super().__init__([grid, widgets.HBox([self.apply_button, self.run_button]), self.message,
                          self.table, self.console, self.diagram])
        self.refresh()

    # ---- what the learner (or a notebook cell) does -------------------------------------
    def choose(self, name, cls):
        """Set one device's dropdown (nothing changes on the machine until apply)."""
        self.dropdowns[name].value = cls

    def policy(self):
        """The policy the dropdowns describe: {class: [device names]}."""
        return {cls: [n for n, dd in self.dropdowns.items() if dd.value == cls] for cls in CLASSES}

    def apply(self, policy=None):
        """Hand `policy` (default: the dropdowns') to the kernel. True if it was applied."""
        before = lesson.policy_of(self.kernel)
        ok, result = lesson.try_policy(self.kernel, self.policy() if policy is None else policy)
        if ok:
            changed = [n for n in self.dropdowns if n not in before[self.kernel.classes[n]]]
            self.last = ("applied: " + (", ".join(f"{n} is now {self.kernel.classes[n]}" for n in changed)
                                        if changed else "no device changed class"))
        else:
            self.last = (f"refused by the kernel: {result}\n"
                         "nothing changed: the classification in force is still the previous one")
        self.last_run = ""                            # what a run showed was under the old classes
        for name, dd in self.dropdowns.items():      # the dropdowns show what is in force
            dd.value = self.kernel.classes[name]
        self.refresh()
        return ok

    def run(self, instructions=RUN):
        """Run the board; show the COS's console tail and what the kernel refused meanwhile."""
        printed, refused = lesson.run_and_watch(self.board, self.cos, instructions)
        self.last_run = (f"ran {instructions:,} instructions: the COS printed {printed} characters; "
                         f"COS port accesses refused: {lesson.refused_summary(refused)}\n"
                         + lesson.console_tail(self.cos))
        self.refresh()
        return printed, refused

    # ---- what it shows --------------------------------------------------------------------
    def text(self):
        """Everything the panel shows, as plain text."""
        parts = [self.last] if self.last else []
        parts.append(lesson.consequences_text(self.kernel))
        if self.last_run:
            parts.append(self.last_run)
        return "\n".join(parts)

    def table_html(self):
        rows = []
        for d, cls, access, irq in lesson.consequences(self.kernel):
            colour = COLOURS.get(access, "#555")
            rows.append(f"<tr><td><code>{d.name}</code></td><td>{cls}</td>"
                        f"<td><code>{d.base:#x}-{d.base + d.count - 1:#x}</code></td>"
                        f"<td style='color:{colour}'>{html.escape(access)}</td><td>{html.escape(irq)}</td></tr>")
        return ("<table><tr><th>device</th><th>class</th><th>ports</th>"
                "<th>COS reaches its ports (TSS I/O bitmap, read from kernel memory)</th>"
                "<th>its IRQ goes to (the kernel's routes)</th></tr>" + "".join(rows) + "</table>")

    def refresh(self):
        colour = "#c0392b" if self.last.startswith("refused") else "#1e8449"
        self.message.value = (f"<pre style='color:{colour};margin:0'>{html.escape(self.last)}</pre>"
                              if self.last else "")
        self.table.value = self.table_html()
        self.console.value = (f"<pre style='background:#111;color:#ddd;padding:4px'>{html.escape(self.last_run)}</pre>"
                              if self.last_run else "")
        self.diagram.value = f"<div style='overflow-x:auto'>{device_diagram_html(self.kernel)}</div>"
