"""A slider and a "Next step" button over a list of steps recorded already.

The load (load_stepper.py), one packet's life (net_panel.py) and the unload
(unload_stepper.py) are each recorded from the machine first (trace events,
or CPU states at breakpoints); a widget then walks through them. Only what a
step shows differs: a subclass gives `show(upto)`, the HTML for steps 0..upto.
"""
import ipywidgets as widgets


class SliderStepper(widgets.VBox):
    def __init__(self, count, **slider):
        self.slider = widgets.IntSlider(min=0, max=max(0, count - 1), value=0, description="step",
                                        **slider)
        self.next_button = widgets.Button(description="Next step")
        self.view = widgets.HTML()
        self.slider.observe(lambda _: self.refresh(), names="value")
        self.next_button.on_click(lambda _: self.next())
        super().__init__([widgets.HBox([self.slider, self.next_button]), self.view])
        self.refresh()

    def next(self):
        self.slider.value = min(self.slider.value + 1, self.slider.max)

    def refresh(self):
        self.view.value = self.show(self.slider.value)

    def show(self, upto):
        raise NotImplementedError
