"""The console OS (COS): the machine's first operating system (claims 1, 28).

A ring-0 x86 program at fixed addresses (layout.py), written as assembly
text split by concern (boot, commands, handlers, drivers, library, data;
source.py puts them together and assembles them); cos.py boots it on a
board and reads its state back from emulated memory.
"""
from . import layout
from .cos import COS, CosDevice

__all__ = ["COS", "CosDevice", "layout"]
