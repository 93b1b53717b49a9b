"""Pick a guest's sector; see its walk to the disk: descriptor -> pointer block -> file block.

The diagram is vmfs_diagrams.file_graph drawn from the volume's bytes now,
with the picked sector's block highlighted; the text is lessons.vmfs.guest_sector.
"""
import html
import shutil

import ipywidgets as widgets

from vmkit.lessons import vmfs as lesson
from .vmfs_diagrams import file_graph


class SectorPicker(widgets.VBox):
    def __init__(self, vol, name, sector=0):
        self.vol, self.name = vol, name
        sectors = vol.stat(name).length // 512
        self.slider = widgets.IntSlider(value=sector, min=0, max=sectors - 1, description="sector",
                                        continuous_update=False, layout=widgets.Layout(width="60%"))
        self.slider.observe(lambda change: self.go(change["new"]), names="value")
        self.view = widgets.HTML()
        super().__init__([self.slider, self.view])
        self.go(sector)

    def go(self, sector):
        """Show `sector`'s walk; returns it as text."""
        self.sector = max(0, min(self.slider.max, sector))
        if self.slider.value != self.sector:
            self.slider.value = self.sector
        text = "\n".join(lesson.guest_sector(self.vol, self.name, self.sector))
        block = self.sector * 512 // self.vol.bs
        graph = file_graph(self.vol, self.name, block)
        svg = graph.pipe(format="svg").decode() if shutil.which("dot") else ""
        self.view.value = f"<pre>{html.escape(text)}</pre>{svg}"
        return text
