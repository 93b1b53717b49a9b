"""`vmkit top` in a notebook: every world per CPU, like esxtop, refreshed as the
machine runs. The numbers are vmkit.lessons.top's, the same the command shows."""
import html

import ipywidgets as widgets

from vmkit.lessons import top as lesson

RUN = 100_000


class TopPanel(widgets.VBox):
    """"Run N instructions" (once, or `refreshes` times, showing each snapshot)."""

    def __init__(self, board, kernel, instructions=RUN, refreshes=5):
        self.board, self.top = board, lesson.Top(board, kernel)
        self.count = widgets.IntText(value=instructions, description="N", layout=widgets.Layout(width="180px"))
        self.times = widgets.IntText(value=refreshes, description="times", layout=widgets.Layout(width="150px"))
        self.button = widgets.Button(description="Run N instructions, times")
        self.button.on_click(lambda _: self.run())
        self.view = widgets.HTML()
        super().__init__([widgets.HBox([self.count, self.times, self.button]), self.view])
        self.rows = self.top.snapshot()
        self.refresh()

    def run(self, instructions=None, times=None):
        """Run and refresh after each N instructions; the last snapshot's rows."""
        n = self.count.value if instructions is None else instructions
        for _ in range(self.times.value if times is None else times):
            self.board.run(n)
            self.rows = self.top.snapshot()
            self.refresh()
        return self.rows

    def text(self):
        return f"virtual time {self.board.now():,}\n" + lesson.table(self.rows)

    def refresh(self):
        self.view.value = f"<pre>{html.escape(self.text())}</pre>"
