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
    with pytest.raises(AttributeError, match="no attribute 'foo'"):
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


def test_a_push_or_pop_past_the_stack_limit_is_refused_as_check_stack_refuses_it():
    from vmkit.kernel.frame import StackPastLimit
    memory = PhysicalMemory(0x3000)
    frame = Frame(memory, 0x2000, stack_limit=0x0FFF)
    frame.esp = 0x1000                                  # a push: 0xFFC..0xFFF, inside
    frame.push(0x11223344)
    assert (frame.esp, memory.read_u32(0xFFC)) == (0xFFC, 0x11223344)
    assert frame.pop() == 0x11223344 and frame.esp == 0x1000
    with pytest.raises(StackPastLimit) as popped:       # a pop at 0x1000: past the limit
        frame.pop()
    with pytest.raises(StackPastLimit) as checked:
        frame.check_stack(above=4)
    assert (popped.value.address, popped.value.size) == (checked.value.address, 4) == (0x1000, 4)
    frame.esp = 0x1004                                  # a push would store at 0x1000..0x1003
    with pytest.raises(StackPastLimit, match=r"4 bytes at 0x1000 on the COS's stack, past its limit 0xfff"):
        frame.push(1)
    frame.esp = 2                                       # below 0
    with pytest.raises(StackPastLimit, match="at 0xfffffffe"):
        frame.push(1)
    assert frame.esp == 2 and memory.read_u32(0xFFC) == 0x11223344


def test_pushing_words_at_once_stores_what_as_many_pushes_store_and_refuses_the_same():
    from vmkit.kernel.frame import StackPastLimit
    memory = PhysicalMemory(0x3000)
    one, many = Frame(memory, 0x2000, stack_limit=0x0FFF), Frame(memory, 0x2100, stack_limit=0x0FFF)
    one.esp, many.esp = 0x0800, 0x0400
    for value in (0x202, 0x9, -1, 0xAB):                # EFLAGS, CS, EIP, an error code
        one.push(value)
    many.push_words(0x202, 0x9, -1, 0xAB)
    assert one.esp == 0x07F0 and many.esp == 0x03F0
    assert memory.read(0x07F0, 16) == memory.read(0x03F0, 16)
    assert memory.read_u32(0x03F0) == 0xAB and memory.read_u32(0x03FC) == 0x202
    many.esp = 0x1002                                   # its first push would end past the limit
    with pytest.raises(StackPastLimit):
        many.push_words(1, 2, 3)
    many.esp = 8                                        # its last would go below 0
    before = memory.read(0, 16)
    with pytest.raises(StackPastLimit):
        many.push_words(1, 2, 3)
    assert many.esp == 8 and memory.read(0, 16) == before   # nothing changed


def test_popping_words_at_once_gives_what_as_many_pops_give_and_refuses_the_same():
    from vmkit.kernel.frame import StackPastLimit
    memory = PhysicalMemory(0x3000)
    frame = Frame(memory, 0x2000, stack_limit=0x0FFF)
    for at, value in ((0x0800, 0x1234), (0x0804, 0x9), (0x0808, 0x202)):   # EIP, CS, EFLAGS
        memory.write_u32(at, value, code=False)
    frame.esp = 0x0800
    assert tuple(frame.pop_words(3)) == (0x1234, 0x9, 0x202) and frame.esp == 0x080C
    frame.esp = 0x0FF8                                  # the third word would be past the limit
    with pytest.raises(StackPastLimit) as popped:
        frame.pop_words(3)
    with pytest.raises(StackPastLimit) as checked:
        frame.check_stack(above=12)
    assert (popped.value.address, popped.value.size) == (checked.value.address, checked.value.size)
    assert frame.esp == 0x0FF8                          # nothing popped
    past_end = Frame(PhysicalMemory(0x1000), 0x100, stack_limit=0xFFFFFFFF)
    past_end.esp = 0x1000 - 8                           # the third word past memory: a bus error
    with pytest.raises(BusError):
        past_end.pop_words(3)
    assert past_end.esp == 0x1000 - 8


def test_a_record_inside_memory_and_one_past_its_end_have_the_same_words_and_methods():
    """Inside the buffer a record's words are C-level fields over memory itself (words.py),
    past its end each is checked: the same names, offsets, methods and wrap mod 2**32."""
    from vmkit.kernel.cos_vcpu import CosVcpu
    memory = PhysicalMemory(0x2000)
    inside, edge = Frame(memory, 0x1000, stack_limit=0x1FFF), Frame(memory, 0x2000 - 8, stack_limit=0x1FFF)
    assert type(inside).__name__ == type(edge).__name__ == "Frame" and inside.stack_limit == 0x1FFF
    assert type(inside).OFFSET == Frame.OFFSET and Frame(memory, 0x1000).stack_limit == 0xFFFFFFFF
    for frame in (inside, edge):
        frame.edi, frame.esi = -1, 1 << 32 | 7
        assert (frame.edi, frame.esi) == (0xFFFFFFFF, 7)
        assert memory.read_u32(frame.address) == 0xFFFFFFFF and memory.read_u32(frame.address + 4) == 7
    inside.esp = 0x1800
    inside.push_words(1, 2)
    assert (inside.esp, inside.pop(), inside.pop(), inside.esp) == (0x17F8, 2, 1, 0x1800)
    vcpu = CosVcpu(memory, 0x100)
    vcpu.delivered(3)
    assert vcpu.in_service == 8 == memory.read_u32(0x100 + CosVcpu.OFFSET["in_service"])
    assert vcpu.as_dict()["in_service"] == 8 and vcpu.eoi() == 3 and vcpu.in_service == 0
    with pytest.raises(AttributeError, match="no attribute 'pendng'"):
        vcpu.pendng = 1


def test_a_record_in_memory_is_an_instance_of_its_class_as_one_elsewhere_is():
    """The twin a record inside the buffer is made as (words.py) answers isinstance as its
    class does: a learner's or a widget's `isinstance(frame, Frame)` holds either way."""
    from vmkit.kernel.cos_vcpu import CosVcpu
    from vmkit.kernel.words import Words
    memory = PhysicalMemory(0x2000)
    inside, edge = Frame(memory, 0x1000), Frame(memory, 0x2000 - 8)
    assert type(inside) is not Frame and type(edge) is Frame        # (the two kinds of record)
    for frame in (inside, edge):
        assert isinstance(frame, Frame) and isinstance(frame, Words) and not isinstance(frame, CosVcpu)
    assert isinstance(CosVcpu(memory, 0x100), CosVcpu) and not isinstance(CosVcpu(memory, 0x100), Frame)
    assert not isinstance(memory, Words)
