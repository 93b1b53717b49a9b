"""The sensor: a level-triggered device at 0x300 (IRQ 5) that can jam its line high."""
import pytest

from vmkit.hw.board import Board

DATA, STATUS, CONTROL = 0x300, 0x301, 0x302
ELCR_MASTER = 0x4D0


@pytest.fixture
def board():
    b = Board()
    b.ports.write(0x21, 1, 0xDF)                      # the PIC: only IRQ 5 unmasked
    return b


def line_up(b):
    return bool(b.pic.master.lines & 0x20)


def enable(b):
    b.ports.write(CONTROL, 1, 1)


def test_fitted_by_default_and_listed_for_software():
    b = Board()
    assert ("sensor", 0x300, 4, 5) in b.devices
    index = b.devices.index(("sensor", 0x300, 4, 5))
    assert b.memory.read(0x600 + 8 + 16 * index, 8) == b"sensor\0\0"
    bare = Board(sensor=False)
    assert bare.sensor is None and bare.ports.read(STATUS, 1) == 0xFF


def test_a_reading_is_pending_until_data_is_read(board):
    assert board.ports.read(STATUS, 1) == 0
    board.sensor.sample()
    assert board.ports.read(STATUS, 1) == 1
    assert board.ports.read(DATA, 1) == 1 and board.ports.read(STATUS, 1) == 0
    board.sensor.sample()
    board.sensor.sample()                             # the counter: the latest reading wins
    assert board.ports.read(DATA, 1) == 3
    assert board.ports.read(DATA, 1) == 3 and board.sensor.acknowledged == 2
    assert [e["value"] for e in board.trace.of("sensor.sample")] == [1, 2, 3]


def test_the_line_follows_pending_and_interrupt_enable(board):
    s = board.sensor
    s.sample()
    assert not line_up(board)                          # CONTROL.IE is 0 after power-on
    enable(board)
    assert board.ports.read(CONTROL, 1) == 1
    assert line_up(board) and s.line and s.raised == 1
    board.ports.read(DATA, 1)                          # the read acknowledges: the line drops
    assert not line_up(board) and s.acknowledged == 1
    s.sample()
    board.ports.write(CONTROL, 1, 0)                   # interrupts off: the line drops too
    assert not line_up(board) and board.ports.read(STATUS, 1) == 1
    assert (s.samples, s.raised, s.acknowledged) == (2, 2, 1)


def test_the_device_does_not_make_the_pic_level_triggered(board):
    enable(board)
    board.sensor.sample()
    assert board.pic.master.elcr == 0 and board.ports.read(ELCR_MASTER, 1) == 0
    assert board.pic.acknowledge() == 0x08 + 5
    board.ports.write(0x20, 1, 0x20)                   # edge-triggered: EOI without reading
    assert line_up(board) and not board.pic.has_request()   # still up, but no new edge


def test_level_triggered_line_requests_until_the_driver_reads_data(board):
    board.ports.write(ELCR_MASTER, 1, 0x20)            # software makes line 5 level-triggered
    enable(board)
    board.sensor.sample()
    for _ in range(3):                                 # EOI without reading: it comes back
        assert board.pic.acknowledge() == 0x08 + 5
        board.ports.write(0x20, 1, 0x20)
    assert board.pic.acknowledge() == 0x08 + 5
    board.ports.read(DATA, 1)                          # acknowledge the device, then EOI
    board.ports.write(0x20, 1, 0x20)
    assert not board.pic.has_request()


def test_jammed_the_line_stays_up_whatever_the_driver_does(board):
    board.ports.write(ELCR_MASTER, 1, 0x20)
    s = board.sensor
    s.jam()
    assert line_up(board)                              # even with CONTROL.IE = 0
    for _ in range(5):
        assert board.pic.acknowledge() == 0x08 + 5
        assert board.ports.read(DATA, 1) == 0          # no reading pending: nothing to take
        board.ports.write(0x20, 1, 0x20)
    assert board.pic.has_request() and s.raised == 1 and s.acknowledged == 0
    s.unjam()
    assert not line_up(board) and not board.pic.has_request()
    assert [e["jammed"] for e in board.trace.of("sensor.jammed")] == [True, False]


def test_periodic_sampling_in_virtual_time():
    b = Board()
    b.boot(0x1000)
    b.load(0x1000, "l: jmp l")
    b.sensor.start(2500)
    b.run(10_001)
    assert [e.time for e in b.trace.of("sensor.sample")] == [2500, 5000, 7500, 10_000]
    b.sensor.stop()
    b.run(10_000)
    assert b.sensor.samples == 4
    b.sensor.start(1000)
    b.sensor.start(1000)                               # restarting: one schedule, not two
    b.run(5000)
    assert b.sensor.samples == 9
    with pytest.raises(ValueError, match="at least 1"):
        b.sensor.start(0)
