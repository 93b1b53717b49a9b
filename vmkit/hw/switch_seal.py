"""A world switch's sealing step done in C at the counter's breakpoint (switch_seal.c),
so the run does not stop for it.

A world switch returns to the dispatcher at three points: the scheduler's decision, the
save's end (SAVED: seal the area, check the next, tell the limit filter, leave GO_SWITCH),
the load's end (LOADED: verify). Each is a stop at the dispatcher's breakpoint, an emu_start
round trip and the handler's Python around it; the SAVED step is small and ordinary, so C
can do it inside the counter's hook and let the run go on. The kernel arms a CPU for one
switch (`arm`: the two save areas, and the step's events); the layout the C needs (the
area's size, where its CRC, GDTR and EIP are, the frame's vector slot, the values SAVED and
GO_SWITCH, the kernel's block the stack lies in) is the kernel's, given once (`Sealing`).

The step's trace events are recorded in C with the count the handler would have seen
(the breakpoint's: the instruction counted), and appended to the trace before any other
event (Trace.emit drains first) and at the end of the run they happened in (Counter.run,
before the CPU adds the run's count to its total): the same events, in the same order, at
the same virtual time as the Python step's. Without the C library (counter.py: no
compiler) nothing is armed and the Python step runs, as it does whenever C declines.
"""
import ctypes
import struct

from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc

from .trace import Event

RECORDS = 4                            # as SEAL_EVENTS in switch_seal.c
_IDS = ("ESP", "ESI", "EDI", "EFLAGS", "CR0", "CR3")      # as S_* in switch_seal.c
_REG_READ_BATCH = ctypes.cast(_uc.uclib.uc_reg_read_batch, ctypes.c_void_p).value
_REG_WRITE = ctypes.cast(_uc.uclib.uc_reg_write, ctypes.c_void_p).value
_event = tuple.__new__
_RECORD = struct.Struct("<6Q")        # a record: count, cpu, save, eip, IF, load


class _Events(ctypes.Structure):
    """struct vmkit_seal_events in switch_seal.c."""
    _fields_ = [("count", ctypes.c_uint64), ("rec", (ctypes.c_uint64 * 6) * RECORDS)]


class _Seal(ctypes.Structure):
    """struct vmkit_seal in switch_seal.c, field for field."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "armed", "at", "save", "load", "size", "slot", "frame", "saved", "go", "gdtr_at", "eip_at",
        "low", "high", "cpu")] + [
        ("ram", ctypes.c_void_p), ("ram_size", ctypes.c_uint64), ("reg_read_batch", ctypes.c_void_p),
        ("reg_write", ctypes.c_void_p), ("ids", ctypes.c_int64 * len(_IDS)), ("limits", ctypes.c_void_p),
        ("events", ctypes.c_void_p), ("done", ctypes.c_uint64), ("declined", ctypes.c_uint64)]


class Sealing:
    """A board's sealing steps: one arming per CPU whose counter is the C one, one record
    buffer shared by them (the trace is the board's). `layout`: the kernel's numbers (at,
    size, slot, frame, saved, go, gdtr_at, eip_at, low, high)."""

    def __init__(self, board, layout):
        self.board = board
        self._events = {}                  # per CPU: the armed step's (save, load, events)
        self.events = _Events()
        self._view = memoryview(self.events).cast("B").cast("Q")      # [0]: the count
        self.seals = {}
        for cpu in board.cpus:
            if not cpu.counter.compiled or cpu.limits.state is None:
                continue
            s = _Seal(**layout, cpu=cpu.index)
            s.ram, s.ram_size = cpu.memory.address, cpu.memory.size
            s.reg_read_batch, s.reg_write = _REG_READ_BATCH, _REG_WRITE
            s.ids[:] = [getattr(X, "UC_X86_REG_" + r) for r in _IDS]
            s.limits = ctypes.addressof(cpu.limits.state)
            s.events = ctypes.addressof(self.events)
            self.seals[cpu.index] = s
            cpu.counter.seal(s, self._view, self.drain)
        board.trace.hold(self._view, self.drain)

    def arm(self, cpu, save, load, events):
        """The next hit of the dispatcher's breakpoint on `cpu` may do the step for these
        areas (ESI, EDI: as the switch's x86 has them there). `events(eip, IF)`: its trace
        events, ((kind, data), ...), from the EIP it saved and IF. False: this CPU cannot."""
        s = self.seals.get(cpu.index)
        if s is None or len(cpu._stubs.get(s.at, ())) != 1:     # (it stands for one handler)
            return False
        s.save, s.load, s.armed = save, load, 1
        self._events[cpu.index] = save, load, events
        return True

    def disarm(self, cpu):
        s = self.seals.get(cpu.index)
        if s is not None:
            s.armed = 0

    def counts(self, cpu):
        """(steps done in C, declined to the Python) on `cpu`."""
        s = self.seals.get(cpu.index)
        return (0, 0) if s is None else (s.done, s.declined)

    def drain(self):
        """The records into the trace, each event at the virtual time the handler would have
        read: the clock with the counter at the record's count (the run it happened in is
        the one running or just ended: drained before the CPU adds its count). (Read through
        the buffer's memoryview, the events made as Trace.emit makes them: a drain per switch.)"""
        view = self._view
        n, view[0] = view[0], 0
        trace, cpus = self.board.trace, self.board.cpus
        clock, append = trace._clock, trace.events.append
        for i in range(n):
            count, index, save, eip, IF, load = _RECORD.unpack_from(view, 8 + _RECORD.size * i)
            armed_save, armed_load, events = self._events[index]
            if (save, load) != (armed_save, armed_load):
                raise RuntimeError(f"CPU {index} sealed {save:#x}, armed for {armed_save:#x}")
            state = cpus[index].counter.state
            live, state.count = state.count, count
            try:
                time = clock()
            finally:
                state.count = live
            for kind, data in events(eip, IF):
                append(_event(Event, (time, index, kind, data)))
