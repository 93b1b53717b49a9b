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
