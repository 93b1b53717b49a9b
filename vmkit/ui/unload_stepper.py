"""Step through the unload of claims 24-25: the CPU as it was at each point
(lessons/unload.unload_steps recorded it with breakpoints while `rmmod` ran),
with the IDT's gates read through the IDTR of that moment and the trace
events that happened since the previous point."""
import html


from vmkit.lessons.unload import step_text
from .slider_stepper import SliderStepper


class UnloadStepper(SliderStepper):
    def __init__(self, steps):
        self.steps = steps
        super().__init__(len(steps))

    def show(self, upto):
        text = "\n\n".join(step_text(s) for s in self.steps[:upto + 1])
        return f"<pre>{html.escape(text)}</pre>"
