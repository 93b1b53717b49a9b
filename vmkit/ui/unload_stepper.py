"""Step through the unload of claims 24-25: the CPU as it was at each point
(lessons/unload.unload_steps recorded it with breakpoints while `rmmod` ran),
with the IDT's gates read through the IDTR of that moment and the trace
events that happened since the previous point."""
import html

import ipywidgets as widgets

from vmkit.lessons.unload import step_text


class UnloadStepper(widgets.VBox):
    def __init__(self, steps):
        self.steps = steps
        self.slider = widgets.IntSlider(min=0, max=max(0, len(steps) - 1), value=0, description="step")
        self.next_button = widgets.Button(description="Next step")
        self.view = widgets.HTML()
        self.slider.observe(lambda _: self.refresh(), names="value")
        self.next_button.on_click(lambda _: self.next())
        super().__init__([widgets.HBox([self.slider, self.next_button]), self.view])
        self.refresh()

    def next(self):
        self.slider.value = min(self.slider.value + 1, self.slider.max)

    def refresh(self):
        shown = self.steps[:self.slider.value + 1]
        text = "\n\n".join(step_text(s) for s in shown)
        self.view.value = f"<pre>{html.escape(text)}</pre>"
