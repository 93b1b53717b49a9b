"""The 8042 keyboard controller: ports 0x60/0x64, one byte at a time, IRQ 1 edge-triggered."""
import pytest

from vmkit.hw.board import Board

DATA, STATUS = 0x60, 0x64


@pytest.fixture
def board():
    b = Board()
    b.ports.write(0x21, 1, 0xFD)                      # the PIC: only IRQ 1 unmasked
    return b


def status(b):
    return b.ports.read(STATUS, 1)


def line_up(b):
    return bool(b.pic.master.lines & 0x02)


def test_fitted_by_default_and_listed_for_software():
    b = Board()
    assert ("kbd", 0x60, 5, 1) in b.devices
    assert b.memory.read(0x600 + 8 + 16 * b.devices.index(("kbd", 0x60, 5, 1)), 8) == b"kbd\0\0\0\0\0"
    assert status(b) & 1 == 0 and status(b) != 0xFF
    assert b.ports.read(0x61, 1) == 0xFF                # 0x61-0x63: nothing of ours there
    bare = Board(keyboard=False)
    assert bare.keyboard is None and bare.ports.read(STATUS, 1) == 0xFF
    assert all(d[0] != "kbd" for d in bare.devices)


def test_bytes_are_read_in_order_and_status_says_when_one_waits(board):
    board.keyboard.press(b"\x1e\x9e\x30")
    got = []
    while status(board) & 1:
        got.append(board.ports.read(DATA, 1))
    assert got == [0x1E, 0x9E, 0x30]
    assert board.ports.read(DATA, 1) == 0x30           # empty: the last byte again, as an 8042
    assert [e["code"] for e in board.trace.of("kbd.key")] == [0x1E, 0x9E, 0x30]
    assert board.keyboard.pressed == 3


def test_irq1_is_one_edge_per_byte_in_the_output_buffer(board):
    board.keyboard.press(b"\x1e\x9e")
    assert line_up(board) and board.pic.acknowledge() == 0x08 + 1
    board.ports.write(0x20, 1, 0x20)                   # EOI without reading: no second request
    assert not board.pic.has_request()                 # (edge-triggered: one edge, one IRQ)
    assert board.ports.read(DATA, 1) == 0x1E           # the next byte moves in: a new edge
    assert board.pic.acknowledge() == 0x08 + 1
    board.ports.write(0x20, 1, 0x20)
    assert board.ports.read(DATA, 1) == 0x9E
    assert not line_up(board) and not board.pic.has_request()
    assert [e["line"] for e in board.trace.of("irq.raise")] == [1, 1]


def test_the_command_byte_gates_the_interrupt(board):
    board.ports.write(STATUS, 1, 0x60)                 # write the command byte: IRQ 1 off
    board.ports.write(DATA, 1, 0x44)
    board.keyboard.press(b"\x1c")
    assert status(board) & 1 and not line_up(board) and not board.pic.has_request()
    board.ports.write(STATUS, 1, 0x60)
    board.ports.write(DATA, 1, 0x45)                   # on again: the waiting byte interrupts
    assert line_up(board) and board.pic.acknowledge() == 0x09
    assert board.ports.read(DATA, 1) == 0x1C
    board.ports.write(0x20, 1, 0x20)
    board.ports.write(STATUS, 1, 0x20)                 # read it back (the answer interrupts too)
    assert board.ports.read(DATA, 1) == 0x45           # IRQ 1 enabled, system flag, translation


def test_disabled_keyboard_holds_its_bytes_until_enabled(board):
    board.ports.write(STATUS, 1, 0xAD)
    board.keyboard.press(b"\x2a")
    assert status(board) & 1 == 0 and not line_up(board)
    board.ports.write(STATUS, 1, 0xAE)
    assert status(board) & 1 and line_up(board)
    assert board.ports.read(DATA, 1) == 0x2A


def test_controller_and_keyboard_answers(board):
    board.ports.write(STATUS, 1, 0xAA)                 # self-test
    assert board.ports.read(DATA, 1) == 0x55
    board.ports.write(STATUS, 1, 0xAB)                 # interface test
    assert board.ports.read(DATA, 1) == 0x00
    board.ports.write(DATA, 1, 0xF4)                   # to the keyboard: enable scanning
    assert board.ports.read(DATA, 1) == 0xFA           # ACK
    board.ports.write(DATA, 1, 0xFF)                   # reset: ACK, then self-test passed
    assert [board.ports.read(DATA, 1) for _ in range(2)] == [0xFA, 0xAA]
    board.ports.write(STATUS, 1, 0xD1)                 # write output port: its byte is swallowed
    board.ports.write(DATA, 1, 0xDF)
    board.ports.write(STATUS, 1, 0xA8)                 # mouse port: accepted, nothing else
    assert status(board) & 1 == 0
    assert status(board) & 0x08                        # the last write went to 0x64


def test_a_driver_reading_one_byte_per_interrupt_gets_every_byte():
    """x86: an IRQ 1 handler that reads one byte and EOIs, as a PC driver does."""
    from conftest import write_idt, IDT_A
    b = Board()
    b.boot(0x1000)
    b.cpu["idtr"] = write_idt(b, IDT_A, {0x21: 0x6000})
    b.load(0x6000, """
        push eax
        push ebx
        in al, 0x60
        mov ebx, [0x5000]
        mov [0x5004 + ebx], al
        inc dword ptr [0x5000]
        mov al, 0x20
        out 0x20, al
        pop ebx
        pop eax
        iretd""")
    b.load(0x1000, """
        mov al, 0x11
        out 0x20, al
        mov al, 0x20
        out 0x21, al
        mov al, 4
        out 0x21, al
        mov al, 1
        out 0x21, al
        mov al, 0xfd
        out 0x21, al
        sti
    idle: hlt
        jmp idle""")
    b.run(200)
    b.keyboard.press(b"\x23\xa3\x17\x97")
    b.run(2000)
    assert b.memory.read_u32(0x5000) == 4
    assert b.memory.read(0x5004, 4) == b"\x23\xa3\x17\x97"
