"""The console OS (COS): the machine's first operating system (claims 1, 28).

A ring-0 x86 program (source.py) at fixed addresses (layout.py); cos.py
boots it on a board and reads its state back from emulated memory.
"""
from . import layout
from .cos import COS, CosDevice

__all__ = ["COS", "CosDevice", "layout"]
