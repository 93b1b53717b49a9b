"""A record of words in memory (a trap frame, a virtual CPU) reads and writes where it lives."""
import pytest

from vmkit.hw.memory import BusError, PhysicalMemory
from vmkit.kernel.frame import Frame


def test_a_frame_reads_and_writes_the_words_in_memory():
    memory = PhysicalMemory(0x2000)
    frame = Frame(memory, 0x1000)
    memory.write_u32(0x1000 + Frame.OFFSET["cs"], 0x1B, code=False)
    assert frame.cs == 0x1B
    frame.eip = -4                                      # stored as the CPU would load it: mod 2**32
    assert memory.read_u32(0x1000 + Frame.OFFSET["eip"]) == 0xFFFFFFFC == frame.eip
    with pytest.raises(AttributeError, match="no word 'foo'"):
        frame.foo = 1


def test_a_frame_running_past_the_end_of_memory_is_a_bus_error_on_the_word_past_it():
    memory = PhysicalMemory(0x1000)
    frame = Frame(memory, 0x1000 - 8)                   # edi and esi fit, the rest does not
    frame.esi = 7
    assert (frame.edi, frame.esi) == (0, 7)
    with pytest.raises(BusError, match="outside the machine's 0x1000 bytes"):
        frame.cs
    with pytest.raises(BusError):
        frame.eip = 1
