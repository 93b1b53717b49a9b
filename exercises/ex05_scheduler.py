"""Exercise 05 — the scheduler's pick (claims 13, 27, 34).

The kernel schedules the COS and each VM as separate worlds. When the
running world's turn is used up (its quantum, counted in timer ticks:
`world.quantum`, or the kernel's default), when the COS would idle, or when
a VM halts or crashes, the kernel asks the scheduler which world runs next:
it calls this function.

    worlds      every world, in the order they were installed (the COS first)
    current     the world that is running now (one of `worlds`)
    runnable    runnable(w) is True if world w can run now (not crashed; a
                halted VM only once an interrupt it accepts is pending)

Return the next world to run, round-robin: the first runnable world AFTER
`current` in `worlds`, wrapping around to the start of the list, never
`current` itself; None if no other world can run (then `current` goes on).

Proportional shares come from the quanta: a world with quantum 3 holds the
CPU three times as long per turn as a world with quantum 1 — as long as your
pick gives every runnable world its turn.
"""


def pick_next(worlds, current, runnable):
    """The next world to run after `current`, or None."""
    raise NotImplementedError("not attempted: write this (see the docstring)")
