"""Errors that cross the line between the kernel and the monitors it runs.

A VMM (vmkit/vmm/) raises GuestFault when its guest does something its VM
cannot survive; the kernel's scheduler (worlds.py) catches it and stops that
world only. Declared here, below both, so the kernel never imports the VMM
(as Qiling keeps its exceptions in one module every layer may import)."""


class GuestFault(Exception):
    """The guest did something its VM cannot survive; only its world stops."""
