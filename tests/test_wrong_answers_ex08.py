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
        if not frames <= slot.buffer <= frames + SLOTS * BUFFER - slot.length:
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


def ring_not_wrapped(port, consumer, producer):        # i + 1, never back to slot 0
    i = consumer
    while i != producer and i < 4 * SLOTS:                # (bounded, so the test ends)
        slot = _slot(port, i)
        _send(port, i, slot) if _ok(port, slot) else port.refuse(i, "refused_length", "bad")
        i += 1


def range_consumer_to_producer(port, consumer, producer):  # empty when the request wraps
    _checked(port, consumer, producer, lambda n: MIN_FRAME <= n <= MAX_FRAME,
             lambda f, s: f <= s.buffer <= f + SLOTS * BUFFER - s.length, slots=range)


def _checked(port, consumer, producer, length_ok, pointer_ok, slots=_slots):
    for i in slots(consumer, producer):
        slot = _slot(port, i)
        if not length_ok(slot.length):
            port.refuse(i, "refused_length", "bad")
        elif not pointer_ok(port.region + FRAMES, slot):
            port.refuse(i, "refused_pointer", "bad")
        else:
            _send(port, i, slot)


def lengths_exclusive(port, consumer, producer):          # MIN_FRAME < length < MAX_FRAME
    _checked(port, consumer, producer, lambda n: MIN_FRAME < n < MAX_FRAME,
             lambda f, s: f <= s.buffer <= f + SLOTS * BUFFER - s.length)


def pointer_start_only(port, consumer, producer):         # the frame's end not checked
    _checked(port, consumer, producer, lambda n: MIN_FRAME <= n <= MAX_FRAME,
             lambda f, s: f <= s.buffer < f + SLOTS * BUFFER)


def pointer_anywhere_in_the_region(port, consumer, producer):   # the region, not its frames
    _checked(port, consumer, producer, lambda n: MIN_FRAME <= n <= MAX_FRAME,
             lambda f, s: f - FRAMES <= s.buffer <= f + SLOTS * BUFFER - s.length)


def hands_every_frame_as_the_first_slot(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        if _ok(port, slot):
            copy = port.region + PHYS_TX + i * BUFFER
            port.write(copy, port.read(slot.buffer, slot.length))
            port.hand_to_nic(consumer, copy, slot.length)
        else:
            port.refuse(i, "refused_length", "bad")


def copies_one_byte_short(port, consumer, producer):
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        if _ok(port, slot):
            copy = port.region + PHYS_TX + i * BUFFER
            port.write(copy, port.read(slot.buffer, slot.length - 1))
            port.hand_to_nic(i, copy, slot.length)
        else:
            port.refuse(i, "refused_length", "bad")


def reads_a_slot_one_byte_short(port, consumer, producer):
    for i in _slots(consumer, producer):
        Slot.unpack(port.read(port.region + tx_slot(i), Slot.SIZE - 1))


def reads_before_checking(port, consumer, producer):   # a pointer past the VM's memory: its fault
    for i in _slots(consumer, producer):
        slot = _slot(port, i)
        port.read(slot.buffer, slot.length)
        _send(port, i, slot) if _ok(port, slot) else port.refuse(
            i, "refused_length" if not MIN_FRAME <= slot.length <= MAX_FRAME else "refused_pointer", "bad")


WRONG = [
    (reads_before_checking, grader.check_refusals, "VM f was stopped (a network buffer at guest address "
                                                   "0xfffff000 (+60) is outside the VM's memory"),
    (ring_not_wrapped, grader.check_ping_echo, "The ring wraps: this request's slots were 5..7 and 0..0"),
    (range_consumer_to_producer, grader.check_ping_echo, "frame 6 (TX slot 5, request 3) never went"),
    (range_consumer_to_producer, grader.check_refusals, "consumer 7, producer 0: the ring wraps"),
    (lengths_exclusive, grader.check_refusals, "Both ends of a range are allowed"),
    (pointer_start_only, grader.check_refusals, "TX slot 3 of VM m had a frame of 60 bytes whose last "
                                               "byte is one past its region's frames"),
    (pointer_anywhere_in_the_region, grader.check_refusals, "TX slot 4 of VM m had a frame of 60 bytes just "
                                                           "before its region's frames"),
    (hands_every_frame_as_the_first_slot, grader.check_ping_echo, "a's TX slot 0 has flags 0x0, not DONE"),
    (copies_one_byte_short, grader.check_ping_echo, "frame 9 on the wire (a's TX slot 0): its payload "
                                                    "differs from byte 65"),
    (no_validation, grader.check_refusals, "at 0x3f00, in m's memory but outside its region, and those "
                                          "bytes went on the wire"),
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


def test_a_slot_read_short_is_named_in_the_records_words_not_structs():
    # the runner shows a learner's exception as its type, text and line: struct's own
    # ("unpack_from requires a buffer of at least 8 bytes") named neither Slot nor SIZE
    with pytest.raises(ValueError, match=r"Slot.unpack needs 8 bytes \(Slot.SIZE\) at offset 0; it was given 7"):
        grader.check_ping_echo(reads_a_slot_one_byte_short)


def loops_forever(port, consumer, producer):
    i = consumer
    while i != producer:                                  # i never moves
        _slot(port, i)


def exits(port, consumer, producer):
    raise SystemExit(0)


@pytest.mark.parametrize("answer, hint", [
    (loops_forever, "your transmit, called for a's request with TX slots consumer 0 .. producer 3, had not "
                    "returned after 0.3 s: a loop that never ends? The loop takes i from consumer round the ring"),
    (exits, "your transmit, called for a's request with TX slots consumer 0 .. producer 3, raised SystemExit")])
def test_a_transmit_that_never_returns_is_stopped_and_named(answer, hint, monkeypatch):
    from vmkit.grading import limit
    monkeypatch.setattr(limit, "CALL_LIMIT", 0.3)
    problem = grader.check_ping_echo(answer)
    assert problem and hint in problem, problem
