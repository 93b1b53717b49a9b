"""Known-wrong answers to exercise 08 (the kernel's transmit step) that the grader must fail,
each with the hint it must give. The grader runs them as the running kernel's transmit step:
two VMs ping and echo across the wire, a third queues slots it should not."""
import pytest

from vmkit.grading import ex08_net as grader
from vmkit.hw.nic import MAX_FRAME, MIN_FRAME
from vmkit.kernel.net_ring import BUFFER, FRAMES, PHYS_RX, PHYS_TX, SLOTS, Slot, tx_slot


def _slots(consumer, producer):
    i = consumer
    while i != producer:
        yield i
        i = (i + 1) % SLOTS


def _slot(port, i):
    return Slot.unpack(port.read(port.region + tx_slot(i), Slot.SIZE))


def _ok(port, slot):
    frames = port.region + FRAMES
    return (MIN_FRAME <= slot.length <= MAX_FRAME
            and frames <= slot.buffer <= frames + SLOTS * BUFFER - slot.length)


def _send(port, i, slot, portion=PHYS_TX, stride=BUFFER, hand=None, length=None):
    copy = port.region + portion + i * stride
    port.write(copy, port.read(slot.buffer, slot.length))
    port.hand_to_nic(i, copy if hand is None else hand, length or slot.length)


def no_validation(port, consumer, producer):          # a pointer into another VM is accepted
    for i in _slots(consumer, producer):
        _send(port, i, _slot(port, i))


def length_unchecked(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        frames = port.region + FRAMES
        if not frames <= slot.buffer < frames + SLOTS * BUFFER:
            port.refuse(i, "refused_pointer", "outside")
        else:
            _send(port, i, slot)


def copies_to_the_receive_portion(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        _send(port, i, slot, portion=PHYS_RX) if _ok(port, slot) else port.refuse(i, "refused_length", "bad")


def every_slot_into_one_buffer(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        _send(port, i, slot, stride=0) if _ok(port, slot) else port.refuse(i, "refused_length", "bad")


def hands_the_drivers_buffer(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        if _ok(port, slot):
            _send(port, i, slot, hand=slot.buffer)
        else:
            port.refuse(i, "refused_length", "bad")


def only_the_first_frame(port, consumer, producer):
    slot = _slot(port, consumer)
    _send(port, consumer, slot) if _ok(port, slot) else port.refuse(consumer, "refused_length", "bad")


def copies_but_never_sends(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        port.write(port.region + PHYS_TX + i * BUFFER, port.read(slot.buffer, slot.length))


def two_bytes_short(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        _send(port, i, slot, length=slot.length - 2) if _ok(port, slot) else port.refuse(i, "refused_length", "bad")


def one_counter_for_everything(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        _send(port, i, slot) if _ok(port, slot) else port.refuse(i, "refused_pointer", "bad")


WRONG = [
    (no_validation, grader.check_refusals, "outside its region's frames, and those bytes went on the wire"),
    (length_unchecked, grader.check_refusals, "check the length (MIN_FRAME..MAX_FRAME) first"),
    (copies_to_the_receive_portion, grader.check_ping_echo, "is not in the physical transmit buffer portion"),
    (every_slot_into_one_buffer, grader.check_ping_echo, "copy each slot's frame to its own buffer"),
    (hands_the_drivers_buffer, grader.check_ping_echo, "the driver's own frame (slot.buffer)"),
    (only_the_first_frame, grader.check_ping_echo, "never went. A request queued 3 frames"),
    (copies_but_never_sends, grader.check_ping_echo, "nothing of a's went on the wire"),
    (two_bytes_short, grader.check_ping_echo, "frame 1 on the wire (a's TX slot 0): its length is 58"),
    (one_counter_for_everything, grader.check_refusals, "'refused_length': 0"),
]


@pytest.mark.parametrize("answer, check, hint", WRONG,
                         ids=[f"{a.__name__}-{c.__name__}" for a, c, _ in WRONG])
def test_a_known_wrong_answer_fails_with_its_hint(answer, check, hint):
    problem = check(answer)
    assert problem and hint in problem, problem


def test_the_reference_passes_both_checks():
    from vmkit.kernel.vm_net import transmit
    assert grader.check_ping_echo(transmit) is None and grader.check_refusals(transmit) is None
