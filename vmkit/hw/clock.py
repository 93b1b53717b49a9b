"""The virtual clock, named once.

Virtual time is retired instructions (the board's clock), never the wall
clock. A "virtual second" is this many of them: a 100 MIPS CPU, the rate a
real kernel's 100 Hz tick is stated against (a tick every 1,000,000
instructions). Whatever prints time for a learner prints it in these
seconds, and whatever takes seconds converts with them.
"""
VIRTUAL_HZ = 100_000_000        # instructions per virtual second


def seconds(instructions):
    """Virtual seconds in `instructions` of virtual time."""
    return instructions / VIRTUAL_HZ


def instructions(seconds):
    """Instructions of virtual time in `seconds` virtual seconds."""
    return round(seconds * VIRTUAL_HZ)


def hz(rate):
    """The period, in instructions, of something happening `rate` times a virtual second."""
    return VIRTUAL_HZ // rate
