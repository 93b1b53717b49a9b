"""Single-step a program: registers, flags, the next instruction, memory.

Everything shown is read back from the emulated CPU and memory after each
step; the events list is the board's trace since the last step.
"""
import ipywidgets as widgets

from .render import registers_html, next_instruction_html, hexdump_html, events_html


class Stepper(widgets.VBox):
    def __init__(self, board, watch=0x5000, watch_length=64):
        self.board, self.cpu = board, board.cpu
        self.watch, self.watch_length = watch, watch_length
        self.step_button = widgets.Button(description="Step", tooltip="execute one instruction")
        self.step10_button = widgets.Button(description="Step ×10")
        self.registers = widgets.HTML()
        self.next = widgets.HTML()
        self.memory = widgets.HTML()
        self.events = widgets.HTML()
        self.step_button.on_click(lambda _: self.step(1))
        self.step10_button.on_click(lambda _: self.step(10))
        self._state = self.cpu.state()
        self._bytes = board.memory.read(watch, watch_length)
        self._mark = board.trace.mark()
        super().__init__([widgets.HBox([self.step_button, self.step10_button]), self.next,
                          self.registers, widgets.HTML(f"memory at {watch:#x}:"), self.memory,
                          self.events])
        self.refresh()

    def step(self, count=1):
        self._state = self.cpu.state()
        self._bytes = self.board.memory.read(self.watch, self.watch_length)
        self._mark = self.board.trace.mark()
        for _ in range(count):
            self.board.step()
        self.refresh()

    def refresh(self):
        self.registers.value = registers_html(self.cpu.state(), self._state)
        halted = " (halted)" if self.cpu.halted else ""
        self.next.value = next_instruction_html(self.board, self.cpu) + halted
        self.memory.value = hexdump_html(self.board, self.watch, self.watch_length, self._bytes)
        self.events.value = events_html(self.board.trace.since(self._mark))
