"""A trace event: its four fields, immutable, printed as the fixtures hold it."""
import pytest

from vmkit.hw.trace import Event, Trace


def test_an_event_reads_prints_and_compares_by_its_fields():
    trace = Trace(lambda: 137785)
    e = trace.emit("switch.save", 0, world="vm1", area=0x1000, eip=7, ok=True)
    assert (e.time, e.cpu, e.kind, e.data) == (137785, 0, "switch.save", {"world": "vm1", "area": 0x1000,
                                                                          "eip": 7, "ok": True})
    assert e["area"] == 0x1000 and trace.events == [e]
    assert str(e) == "    137785 cpu0  switch.save    world=vm1 area=0x1000 eip=7 ok=True"
    assert str(trace.emit("irq.raise", line=12)) == "    137785 board irq.raise      line=0xc"
    assert e == Event(137785, 0, "switch.save", dict(e.data)) and e != Event(137786, 0, "switch.save", e.data)


def test_an_event_cannot_be_changed():
    e = Trace(lambda: 1).emit("switch.cli", 0, IF=0)
    with pytest.raises(AttributeError):
        e.time = 2
    with pytest.raises(KeyError):
        e["IF "]


def test_in_asks_an_events_data_as_indexing_does():
    """`event[key]` is its data's; so is `key in event` (a named tuple's own `in` would look
    among its four fields and answer False for every key, silently)."""
    e = Trace(lambda: 1).emit("cpu.deliver", 0, vector=3, kind="int")
    assert "vector" in e and e["vector"] == 3
    assert "vm" not in e and 1 not in e
