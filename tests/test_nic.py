"""The descriptor-ring NIC and the wire: DMA, filter, drops, IRQ, and a real x86 driver."""
import struct

import pytest

from vmkit.hw.board import Board, KERNEL_CS, NIC_PORTS, NIC_IRQS
from vmkit.hw.nic import NIC, Wire
from vmkit.hw.x86 import encode_gate
from test_scsi import FakeBoard, PIC_INIT

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A_BASE, B_BASE, A_IRQ, B_IRQ = 0x400, 0x440, 10, 9
TX_RING, RX_RING, TX_BUF, RX_BUF = 0x10000, 0x11000, 0x20000, 0x40000


def frame(dst, src=MAC_A, payload=b"hello", size=None):
    f = dst + src + b"\x88\xb5" + payload
    return f.ljust(size or 60, b"\0")


class Rig:
    """Two NICs on one fake board and one wire; helpers poke registers like a driver."""
    def __init__(self, rx_buffers=4, buf_len=1536, board_b=None):
        self.board = FakeBoard()
        self.a = NIC(self.board, A_BASE, A_IRQ, MAC_A, "a")
        self.b = NIC(board_b or self.board, B_BASE, B_IRQ, MAC_B, "b")
        self.wire = Wire(self.a, self.b)
        self.w(self.a, 0x0C, TX_RING)
        self.w(self.a, 0x10, 8)
        self.w(self.a, 0x08, 2)                          # IMR: TXDONE
        self.w(self.a, 0x00, 3)
        mem_b = self.b.board.memory
        for i in range(8):
            mem_b.write(RX_RING + 16 * i, struct.pack("<IHHII", RX_BUF + 0x800 * i, buf_len, 0, 0, 0))
        self.w(self.b, 0x1C, RX_RING)
        self.w(self.b, 0x20, 8)
        self.w(self.b, 0x24, rx_buffers)
        self.w(self.b, 0x08, 1)                          # IMR: RX
        self.w(self.b, 0x00, 3)

    @staticmethod
    def w(nic, reg, value):
        nic.board.ports.write(nic.base + reg, 4, value)

    @staticmethod
    def r(nic, reg):
        return nic.board.ports.read(nic.base + reg, 4)

    def send(self, *frames):
        """Queue frames (or, for an int, a 60-byte buffer address) at TX_HEAD.. ; ring once."""
        head = self.r(self.a, 0x18)
        for k, f in enumerate(frames):
            i = (head + k) % 8
            addr = f if isinstance(f, int) else TX_BUF + 0x800 * i
            length = 60 if isinstance(f, int) else len(f)
            if not isinstance(f, int):
                self.board.memory.write(addr, f)
            self.board.memory.write(TX_RING + 16 * i, struct.pack("<IHHII", addr, length, 0, 0, 0))
        self.w(self.a, 0x14, (head + len(frames)) % 8)

    def rx_desc(self, i):
        return struct.unpack("<IHH", self.b.board.memory.read(RX_RING + 16 * i, 8))

    def tx_flags(self, i):
        return struct.unpack("<H", self.board.memory.read(TX_RING + 16 * i + 6, 2))[0]


def test_frame_crosses_the_wire_after_latency_and_raises_rx():
    rig = Rig()
    f = frame(MAC_B)
    rig.send(f)
    assert rig.tx_flags(0) == 1 and rig.r(rig.a, 0x18) == 1     # DONE, TX_HEAD moved
    assert rig.r(rig.a, 0x04) == 2 and rig.board.pic.level[A_IRQ]
    rig.board.advance(99)
    assert rig.r(rig.b, 0x28) == 0 and B_IRQ not in rig.board.pic.level
    rig.board.advance(1)
    assert rig.rx_desc(0) == (RX_BUF, 60, 1)                    # length written, DONE
    assert rig.board.memory.read(RX_BUF, 60) == f
    assert rig.r(rig.b, 0x28) == 1 and rig.r(rig.b, 0x04) == 1
    assert rig.board.pic.level[B_IRQ]
    rig.w(rig.b, 0x04, 1)                                       # clear RX: line drops
    assert rig.board.pic.log[-1] == ("lower", B_IRQ)
    tx, rx = rig.board.trace.of("nic.tx")[0], rig.board.trace.of("nic.rx")[0]
    assert (tx["nic"], tx["length"], tx["dst"], tx.time) == ("a", 60, "02:00:00:00:00:02", 0)
    assert (rx["nic"], rx["length"], rx.time) == ("b", 60, 100)
    assert rig.wire.tap == [(0, "a", f)]


def test_mac_registers():
    rig = Rig()
    assert struct.pack("<IH", rig.r(rig.b, 0x2C), rig.r(rig.b, 0x30)) == MAC_B


def test_no_rx_buffer_drops_and_counts_then_recovers():
    rig = Rig(rx_buffers=0)
    rig.send(frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x34) == 1 and rig.r(rig.b, 0x28) == 0
    drop = rig.board.trace.of("nic.drop")[0]
    assert (drop["nic"], drop["reason"]) == ("b", "no RX buffer")
    assert B_IRQ not in rig.board.pic.level
    rig.w(rig.b, 0x24, 1)                                       # give one buffer
    rig.send(frame(MAC_B), frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x28) == 1 and rig.r(rig.b, 0x34) == 2  # one taken, one dropped


def test_mac_filter_broadcast_and_promiscuous():
    rig = Rig()
    other = bytes.fromhex("02000000abcd")
    rig.send(frame(other), frame(b"\xff" * 6), frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x28) == 2 and rig.r(rig.b, 0x34) == 0  # filtered is not "dropped"
    assert rig.board.trace.of("nic.drop")[0]["reason"].startswith("filtered")
    rig.w(rig.b, 0x00, 1 | 4)                                   # promiscuous
    rig.send(frame(other))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x28) == 3


def test_several_descriptors_one_doorbell_in_order():
    rig = Rig()
    frames = [frame(MAC_B, payload=bytes([i]) * 20, size=60 + i) for i in range(3)]
    rig.send(*frames)
    assert rig.r(rig.a, 0x18) == 3 and [rig.tx_flags(i) for i in range(3)] == [1, 1, 1]
    assert len(rig.board.trace.of("nic.tx")) == 3
    rig.board.advance(100)
    for i, f in enumerate(frames):
        assert rig.rx_desc(i)[1:] == (len(f), 1)
        assert rig.board.memory.read(RX_BUF + 0x800 * i, len(f)) == f


def test_rx_ring_wraps_and_keeps_one_slot_free():
    rig = Rig(rx_buffers=7)                                     # 8 slots: head == tail is empty
    for _ in range(3):
        rig.send(*[frame(MAC_B)] * 3)
        rig.board.advance(100)
    assert rig.r(rig.b, 0x28) == 7 and rig.r(rig.b, 0x34) == 2
    assert rig.r(rig.a, 0x18) == 1                              # TX ring wrapped: 9 mod 8


def test_dma_outside_ram_never_crashes():
    rig = Rig()
    rig.send(0xFFFFFF00)                                        # TX buffer beyond 1 MiB
    assert rig.tx_flags(0) == 1 | 2                             # DONE + ERROR
    assert "TX buffer" in rig.board.trace.of("nic.drop")[0]["reason"]
    rig.board.memory.write(RX_RING, struct.pack("<I", 0xFFFFF000))   # RX buffer beyond RAM
    rig.send(frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x34) == 1 and rig.r(rig.b, 0x28) == 0
    rig.w(rig.b, 0x1C, 0x7FFFFFF0)                              # RX ring beyond RAM
    rig.w(rig.b, 0x24, 2)
    rig.w(rig.a, 0x0C, 0x7FFFFFF0)                              # TX ring beyond RAM
    rig.w(rig.a, 0x14, 3)
    rig.wire.inject(rig.b, frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x34) == 2 and rig.r(rig.a, 0x18) == 3
    reasons = [e["reason"] for e in rig.board.trace.of("nic.drop")]
    assert any("TX descriptor" in r for r in reasons) and any("RX descriptor" in r for r in reasons)


def test_frame_larger_than_buffer_is_dropped_not_truncated():
    rig = Rig(buf_len=100)
    rig.send(frame(MAC_B, size=101), frame(MAC_B, size=100))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x34) == 1 and rig.rx_desc(0)[1:] == (100, 1)


@pytest.mark.parametrize("length", [13, 1515])
def test_bad_tx_length_not_sent(length):
    rig = Rig()
    rig.send(frame(MAC_B, size=length)[:length])
    assert rig.tx_flags(0) == 3 and rig.wire.tap == []
    assert rig.board.trace.of("nic.drop")[0]["length"] == length


def test_rx_disabled_reset_and_imr():
    rig = Rig()
    rig.w(rig.b, 0x08, 0)                                       # RX cause masked
    rig.send(frame(MAC_B))
    rig.board.advance(100)
    assert rig.r(rig.b, 0x04) == 1 and B_IRQ not in rig.board.pic.level
    rig.w(rig.b, 0x08, 1)
    assert rig.board.pic.level[B_IRQ]
    rig.w(rig.b, 0x00, 1 << 31)                                 # reset: all zero, line down
    assert [rig.r(rig.b, o) for o in (0, 4, 8, 0x1C, 0x28)] == [0] * 5
    assert rig.board.pic.level[B_IRQ] is False
    rig.wire.inject(rig.b, frame(MAC_B))
    rig.board.advance(100)
    assert rig.board.trace.of("nic.drop")[-1]["reason"] == "RX disabled"
    assert rig.r(rig.b, 0x34) == 0


def test_tx_waits_for_tx_enable_and_bad_tail_is_ignored():
    rig = Rig()
    rig.w(rig.a, 0x00, 0)
    rig.send(frame(MAC_B))
    assert rig.wire.tap == [] and rig.r(rig.a, 0x18) == 0
    rig.w(rig.a, 0x00, 2)                                       # enabling sends what is queued
    assert len(rig.wire.tap) == 1
    rig.w(rig.a, 0x14, 8)
    assert rig.r(rig.a, 0x14) == 1 and rig.board.trace.of("nic.error")
    rig.w(rig.a, 0x10, 4)                                       # a new ring: head = tail = 0
    assert (rig.r(rig.a, 0x14), rig.r(rig.a, 0x18)) == (0, 0)


def test_wire_between_two_boards_delivers_on_the_receivers_clock():
    other = FakeBoard()
    rig = Rig(board_b=other)
    other.advance(5000)
    rig.send(frame(MAC_B))
    rig.board.advance(1000)
    assert rig.r(rig.b, 0x28) == 0                              # b's clock has not moved
    other.advance(100)
    assert rig.r(rig.b, 0x28) == 1 and other.trace.of("nic.rx")[0].time == 5100


# ---- a real x86 driver on the real board ---------------------------------------------
# All numbers in hex: see the keystone radix note in test_scsi.py.

def outl(port, value):
    return f"mov dx, {port:#x}\n mov eax, {value:#x}\n out dx, eax\n"


def inl(port, dest):
    return f"mov dx, {port:#x}\n in eax, dx\n mov {dest}, eax\n"


def run_x86_driver():
    """Boot a driver that sets up B's RX ring, sends one frame from A, and waits for B's IRQ."""
    board = Board(nics=2)
    wire = Wire(*board.nics)
    PA, PB, vector = NIC_PORTS[0], NIC_PORTS[1], 0x28 + NIC_IRQS[1] - 8
    board.memory.write(0x8000 + vector * 8, encode_gate(0x6000, KERNEL_CS))
    board.load(0x6000, f"""                 ; B's interrupt handler
        push eax
        push edx
        {inl(PB + 0x04, "[0x5004]")}
        out dx, eax                     ; write the causes back: clears them
        {inl(PB + 0x28, "[0x5008]")}
        mov al, 0x20
        out 0xA0, al
        out 0x20, al
        inc dword ptr [0x5000]
        pop edx
        pop eax
        iretd
    """)
    board.load(0x1000, f"""
        lidt [idtd]
        {PIC_INIT.format(slave_mask=0xFF & ~(1 << (NIC_IRQS[1] - 8)))}
        mov edi, 0x10000                ; B's RX ring: 4 descriptors, 0x600-byte buffers
        mov ebx, 0x40000
        mov ecx, 4
    rxd:
        mov [edi], ebx
        mov dword ptr [edi+4], 0x600
        mov dword ptr [edi+8], 0
        mov dword ptr [edi+0xc], 0
        add edi, 0x10
        add ebx, 0x800
        loop rxd
        {outl(PB + 0x1C, 0x10000)}      ; RX_BASE
        {outl(PB + 0x20, 4)}            ; RX_COUNT
        {outl(PB + 0x24, 3)}            ; RX_TAIL: 3 buffers given
        {outl(PB + 0x08, 1)}            ; IMR: RX
        {outl(PB + 0x00, 1)}            ; CTRL: RX enable
        mov edi, 0x30000                ; the frame: dst = B's MAC, read from B; src = A's
        {inl(PB + 0x2C, "[edi]")}
        {inl(PB + 0x30, "[edi+4]")}
        {inl(PA + 0x2C, "[edi+6]")}
        {inl(PA + 0x30, "[edi+0xa]")}
        mov word ptr [edi+0xc], 0xB588
        mov dword ptr [edi+0xe], 0x6c6c6568
        mov byte ptr [edi+0x12], 0x6f
        mov dword ptr [0x12000], 0x30000    ; A's TX descriptor 0: buffer, length 60
        mov dword ptr [0x12004], 0x3c
        {outl(PA + 0x0C, 0x12000)}      ; TX_BASE
        {outl(PA + 0x10, 4)}            ; TX_COUNT
        {outl(PA + 0x00, 2)}            ; CTRL: TX enable
        {outl(PA + 0x14, 1)}            ; TX_TAIL = 1: the doorbell
    w:  cli
        cmp dword ptr [0x5000], 0
        jne fin
        sti
        hlt
        jmp w
    fin:
        hlt
    idtd: .word 0x7FF
          .long 0x8000
    """)
    board.boot(0x1000)
    board.run_until(lambda: board.memory.read_u32(0x5000), 200_000, "the NIC B interrupt")
    return board, wire, vector


def test_x86_driver_sends_a_to_b_and_takes_the_rx_irq():
    board, wire, vector = run_x86_driver()
    sent = board.memory.read(0x30000, 60)
    assert sent[:14] == MAC_B[:5] + b"\x02" + bytes.fromhex("020000000001") + b"\x88\xb5"
    assert sent[14:19] == b"hello"
    assert board.memory.read(0x40000, 60) == sent and wire.tap[0][2] == sent
    assert struct.unpack("<HH", board.memory.read(0x10004, 4)) == (60, 1)
    assert board.memory.read_u32(0x5004) == 1 and board.memory.read_u32(0x5008) == 1
    assert board.nics[1].isr == 0 and board.pic.master.isr == board.pic.slave.isr == 0
    kinds = [e.kind for e in board.trace.events if e.kind in ("nic.tx", "nic.rx", "cpu.deliver")]
    assert kinds == ["nic.tx", "nic.rx", "cpu.deliver"]
    assert board.trace.of("cpu.deliver")[0]["vector"] == vector
    assert board.trace.of("irq.raise")[-1]["line"] == NIC_IRQS[1]


def test_x86_driver_run_is_deterministic():
    assert run_x86_driver()[0].trace.text() == run_x86_driver()[0].trace.text()


def test_x86_frame_arrives_wire_latency_after_transmit():
    board, wire, _ = run_x86_driver()
    tx, rx = board.trace.of("nic.tx")[0], board.trace.of("nic.rx")[0]
    assert rx.time - tx.time == wire.latency
