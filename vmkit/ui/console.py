"""A serial console on the COS: type a command, let virtual time pass, read COM1.

The text shown is the UART's output (what the COS's x86 code wrote to
port 0x3F8); typing feeds the UART, whose IRQ 4 the COS's serial handler
takes. TICKS is read from COS memory.
"""
import html

import ipywidgets as widgets

RUN = 100_000


class CosConsole(widgets.VBox):
    def __init__(self, cos, lines=18):
        self.cos, self.lines = cos, lines
        self.command = widgets.Text(placeholder="help, ticks, devices, mem, insmod",
                                    description="command")
        self.send_button = widgets.Button(description="Send")
        self.run_button = widgets.Button(description=f"Run {RUN // 1000}k instructions")
        self.status = widgets.HTML()
        self.screen = widgets.HTML()
        self.send_button.on_click(lambda _: self.send())
        self.run_button.on_click(lambda _: self.run())
        super().__init__([widgets.HBox([self.command, self.send_button, self.run_button]),
                          self.status, self.screen])
        self.refresh()

    def send(self, line=None):
        """Type `line` (default: the text box) and run until the COS answered."""
        line = self.command.value if line is None else line
        try:
            self.cos.run_command(line)
            self.command.value = ""
            self.refresh()
        except (ValueError, RuntimeError, TimeoutError) as e:
            self.refresh(f"not sent: {e}")

    def run(self, instructions=RUN):
        self.cos.board.run(instructions)
        self.refresh()

    def text(self, lines=None):
        """The last `lines` lines of the console."""
        return "\n".join(self.cos.console().splitlines()[-(lines or self.lines):])

    def refresh(self, note=""):
        board = self.cos.board
        self.status.value = (f"virtual time {board.clock:,} · TICKS (COS memory) "
                             f"{self.cos.ticks()} · CPL {board.cpu.cpl}"
                             + (f" · <b>{html.escape(note)}</b>" if note else ""))
        self.screen.value = ("<pre style='margin:0;background:#111;color:#ddd;padding:6px'>"
                             + html.escape(self.text()) + "</pre>")
