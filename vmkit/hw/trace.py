"""The one event trace.

Every transition worth teaching is appended here, stamped with virtual time
(retired instructions) and the CPU it happened on. Widgets, diagrams, tests
and benchmarks read this log; nothing keeps a second bookkeeping. Because
virtual time counts instructions, the same run gives the same trace.
"""
from typing import NamedTuple


class Event(NamedTuple):
    """One event: immutable, compared by its four fields. (A named tuple: the kernel
    emits ~7 per world switch, and a frozen dataclass's construction cost 3x a tuple's.)
    `event[key]` is its data's `key`, not a field by position; `key in event` asks its data."""
    time: int
    cpu: int | None
    kind: str
    data: dict

    def __getitem__(self, key):
        return self.data[key]

    def __contains__(self, key):            # as indexing: the data's (a tuple's own `in` would
        return key in self.data             # look among the four fields)

    def __str__(self):
        where = f"cpu{self.cpu}" if self.cpu is not None else "board"
        args = " ".join(f"{k}={_fmt(v)}" for k, v in self.data.items())
        return f"{self.time:>10} {where:5} {self.kind:14} {args}".rstrip()


_event = tuple.__new__         # an Event from its four fields, without NamedTuple's argument parsing


def _fmt(v):
    if isinstance(v, bool) or not isinstance(v, int):
        return str(v)
    return f"{v:#x}" if v > 9 else str(v)


_NONE_HELD = memoryview(bytes(8)).cast("Q")


class Trace:
    def __init__(self, clock):
        self._clock = clock          # callable: current virtual time
        self.events = []
        self._held, self._drain = _NONE_HELD, None

    def hold(self, count, drain):
        """Events recorded outside Python (switch_seal.py: in C, inside a run) wait in a
        buffer whose count is `count[0]`; `drain()` appends them. Every emit drains first,
        so they keep their place before any event Python emits after them."""
        self._held, self._drain = count, drain

    def emit(self, kind, /, cpu=None, **data):
        if self._held[0]:
            self._drain()
        ev = _event(Event, (self._clock(), cpu, kind, data))
        self.events.append(ev)
        return ev

    def emit_at(self, time, kind, cpu, data):
        """An event that happened at virtual time `time`, recorded now: what the C interrupt
        hook delivered during a run, told before anything later is (intr.py). The held
        events go first, as for `emit`: in one run a switch's sealing step (switch_seal.py)
        can come before a delivery intr.c notes (a fault in the load that follows it), never
        after one (a delivery enters the dispatcher with its own vector, where the step
        declines and the run stops)."""
        if self._held[0]:
            self._drain()
        ev = _event(Event, (time, cpu, kind, data))
        self.events.append(ev)
        return ev

    def mark(self):
        """A position to read `since` from: lets a widget show only what a step did."""
        return len(self.events)

    def since(self, mark, *kinds):
        return [e for e in self.events[mark:] if not kinds or e.kind in kinds]

    def of(self, *kinds):
        return self.since(0, *kinds)

    def text(self, mark=0, *kinds):
        return "\n".join(str(e) for e in self.since(mark, *kinds))

    def __len__(self):
        return len(self.events)
