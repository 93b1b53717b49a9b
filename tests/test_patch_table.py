"""The patch table is a record in memory (patches.py): what `get` answers is what its
bytes say, entry by entry, whatever other bytes of the table happen to hold."""
from vmkit.hw.memory import PhysicalMemory
from vmkit.kernel.patches import PatchTable

AT = 0x1000


def table(*entries):
    t = PatchTable(PhysicalMemory(0x10000), AT, capacity=16)
    t.memory.write_u32(AT, 0, code=False)
    for address, original, mnemonic in entries:
        t.add(address, original, mnemonic)
    return t


def test_get_answers_each_entry_and_nothing_else():
    t = table((0x2000, 0x9C, "pushfd"), (0x2001, 0x9D, "popfd"), (0x3000, 0xCF, "iretd"))
    assert [t.get(a) for a in (0x2000, 0x2001, 0x3000)] == ["pushfd", "popfd", "iretd"]
    assert t.get(0x2002) is None and t.get(0x2002, "none") == "none"
    assert t.get(-1) is None and t.get(1 << 32) is None          # never an address in the table
    assert 0x3000 in t and 0x3001 not in t and t[0x2001] == "popfd"


def test_bytes_across_two_entries_are_not_an_address():
    # entry 0 ends with its original byte, mnemonic and padding (9C 00 00 00 for pushfd);
    # entry 1's address is 0x00000001: the bytes 9C 00 00 00 01 ... hold 0x0000009C at +4
    t = table((0x5000, 0x9C, "pushfd"), (0x1, 0x9D, "popfd"))
    assert t.memory.read(AT + 4 + 4, 4) == bytes([0x9C, 0, 0, 0])
    assert t.get(0x9C) is None
    assert t.get(0x1) == "popfd"


def test_the_first_entry_for_an_address_answers():
    t = table((0x4000, 0x9C, "pushfd"), (0x4000, 0xCF, "iretd"))
    assert t.get(0x4000) == "pushfd"


def test_a_count_that_runs_past_memory_is_a_bus_error_and_an_entry_added_is_found():
    import pytest
    from vmkit.hw.memory import BusError
    t = table((0x6000, 0xCF, "iretd"))
    assert t.get(0x7000) is None
    t.add(0x7000, 0x9D, "popfd")                                    # the table's bytes, read again
    assert t.get(0x7000) == "popfd"
    t.memory.write_u32(AT, 0x10000, code=False)                     # entries past the end of memory
    with pytest.raises(BusError):
        t.get(0x6000)
