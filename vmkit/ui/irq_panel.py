"""Raise an IRQ line and watch it vectored through whichever IDT is loaded.

The IDT buttons only ask the idle loop to run `lidt` (through a mailbox in
memory); IDTR shown here is read back from the CPU.
"""
import ipywidgets as widgets

from vmkit.lessons import machine
from .render import events_html

SHOWN = ("irq.raise", "pic.ack", "cpu.deliver", "pic.eoi", "cpu.fault")


class IrqPanel(widgets.VBox):
    def __init__(self, board):
        self.board = board
        self.line = widgets.Dropdown(options=list(range(16)), value=1, description="IRQ line")
        self.raise_button = widgets.Button(description="Raise IRQ")
        self.idt = widgets.ToggleButtons(options=["A", "B"], value="A", description="load IDT")
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.events = widgets.HTML()
        self.raise_button.on_click(lambda _: self.raise_irq())
        self.idt.observe(lambda change: self.load_idt(change["new"]), names="value")
        self._loading = False
        self._mark = board.trace.mark()
        super().__init__([widgets.HBox([self.line, self.raise_button]), self.idt, self.status,
                          self.table, self.events])
        self.refresh()

    def raise_irq(self, line=None):
        self._mark = self.board.trace.mark()
        machine.raise_irq(self.board, self.line.value if line is None else line)
        self.refresh()

    def load_idt(self, which):
        if self._loading:
            return
        self._loading = True
        try:
            self.idt.value = which             # the buttons show what was asked for, however asked
            self._mark = self.board.trace.mark()
            machine.request_idt(self.board, which)
            self.refresh()
        finally:
            self._loading = False

    def refresh(self):
        _, base, limit, _ = self.board.cpu["idtr"]
        owner = {machine.IDT_A: "A", machine.IDT_B: "B"}.get(base, "?")
        self.status.value = f"IDTR (read from the CPU): base={base:#x} limit={limit:#x} → IDT {owner}"
        rows = "".join(f"<tr><td>{line}</td><td>{machine.IRQ_BASE + line:#x}</td><td>{a}</td><td>{b}</td></tr>"
                       for line, (a, b) in machine.counts(self.board).items() if a or b)
        self.table.value = ("<table><tr><th>IRQ</th><th>vector</th><th>handler A ran</th>"
                            f"<th>handler B ran</th></tr>{rows}</table>")
        self.events.value = events_html(self.board.trace.since(self._mark, *SHOWN))
