"""The SCSI host adapter: request blocks, DMA, sense, IRQ, and real x86 drivers."""
import heapq
import struct
from pathlib import Path

import pytest

from vmkit.hw.asm import assemble
from vmkit.hw.board import Board, SCSI_PORT, SCSI_IRQ, KERNEL_CS
from vmkit.hw.disk import DiskImage
from vmkit.hw.memory import PhysicalMemory
from vmkit.hw.ports import PortBus
from vmkit.hw.scsi import SCSIController, INQUIRY_DATA
from vmkit.lessons.devices import ring_source
from vmkit.hw.trace import Trace
from vmkit.hw.x86 import encode_gate

BASE, IRQ, RB, BUF = 0x300, 11, 0x2000, 0x3000


class FakePIC:
    def __init__(self):
        self.level, self.log = {}, []

    def raise_line(self, n):
        self.level[n] = True
        self.log.append(("raise", n))

    def lower_line(self, n):
        self.level[n] = False
        self.log.append(("lower", n))


class FakeBoard:
    """Memory, ports, a recording PIC, the real trace and a hand-advanced clock."""
    def __init__(self):
        self.clock, self._q, self._n = 0, [], 0
        self.memory = PhysicalMemory(1 << 20)
        self.ports, self.pic = PortBus(), FakePIC()
        self.trace = Trace(lambda: self.clock)

    def schedule(self, delay, fn):
        self._n += 1
        heapq.heappush(self._q, (self.clock + max(1, delay), self._n, fn))

    def advance(self, n):
        end = self.clock + n
        while self._q and self._q[0][0] <= end:
            self.clock, _, fn = heapq.heappop(self._q)
            fn()
        self.clock = end


@pytest.fixture
def rig(tmp_path):
    board = FakeBoard()
    disk = DiskImage.create(tmp_path / "d.img", 64)
    scsi = SCSIController(board, BASE, IRQ, disk)
    yield board, scsi
    disk.close()


def block(cdb, data_addr=BUF, data_length=4096, lun=0, cdb_length=None):
    cdb = bytes(cdb).ljust(16, b"\0")
    n = cdb_length if cdb_length is not None else (6 if cdb[0] < 0x20 else 10)
    return struct.pack("<BBBBBBHIII16s", n, lun, 0xEE, 0xEE, 0xEE, 0xEE, 0, data_addr,
                       data_length, 0xDEAD, cdb)


def rw10(op, lba, blocks):
    return bytes([op, 0]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", blocks)


def submit(board, rb_bytes, at=RB):
    board.memory.write(at, rb_bytes)
    board.ports.write(BASE + 0, 4, at)
    board.ports.write(BASE + 4, 4, 1)


def result(board, at=RB):
    """(scsi_status, (key, asc, ascq), flags, transferred) from the block in memory."""
    st, key, asc, ascq, flags = struct.unpack("<BBBBH", board.memory.read(at + 2, 6))
    return st, (key, asc, ascq), flags, board.memory.read_u32(at + 16)


def run(board, rb_bytes):
    submit(board, rb_bytes)
    board.advance(200)
    return result(board)


def test_inquiry_completes_after_latency_with_dma_and_irq(rig):
    board, scsi = rig
    board.ports.write(BASE + 0xC, 4, 1)                          # interrupts on
    submit(board, block([0x12, 0, 0, 0, 36]))
    assert board.ports.read(BASE + 8, 4) == 1                   # BUSY, not DONE
    board.advance(199)
    assert board.memory.read(BUF, 36) == bytes(36)              # nothing moved yet
    assert board.pic.level.get(IRQ) is None
    board.advance(1)
    assert board.ports.read(BASE + 8, 4) == 2                   # DONE
    assert board.memory.read(BUF, 36) == INQUIRY_DATA
    assert INQUIRY_DATA[8:16] == b"VMKIT   " and INQUIRY_DATA[16:32] == b"VIRTUAL SCSI DSK"
    assert result(board) == (0, (0, 0, 0), 0, 36)
    assert board.pic.log == [("raise", IRQ)]
    board.ports.write(BASE + 8, 4, 2)                           # clear DONE: line drops
    assert board.pic.log == [("raise", IRQ), ("lower", IRQ)]
    assert board.ports.read(BASE + 8, 4) == 0
    req, done = board.trace.of("scsi.request")[0], board.trace.of("scsi.complete")[0]
    assert (req["op"], req.time, done.time, done["status"]) == ("INQUIRY", 0, 200, 0)


def test_irq_follows_enable_while_done(rig):
    board, scsi = rig
    run(board, block([0x00]))
    assert board.pic.log == []                                  # DONE but disabled
    board.ports.write(BASE + 0xC, 4, 1)
    board.ports.write(BASE + 0xC, 4, 1)                         # no second edge
    board.ports.write(BASE + 0xC, 4, 0)
    assert board.pic.log == [("raise", IRQ), ("lower", IRQ)]


def test_inquiry_transfers_only_what_fits(rig):
    board, _ = rig
    assert run(board, block([0x12, 0, 0, 0, 36], data_length=5))[3] == 5
    assert run(board, block([0x12, 0, 0, 0, 8]))[3] == 8        # allocation length too
    assert board.memory.read(BUF, 9) == INQUIRY_DATA[:8] + b"\0"      # 9th never written


def test_read_capacity(rig):
    board, _ = rig
    assert run(board, block([0x25]))[0] == 0
    assert board.memory.read(BUF, 8) == struct.pack(">II", 63, 512)
    assert run(board, block([0x25], data_length=7))[:2] == (2, (5, 0x24, 0))


def test_write_then_read_back_and_on_the_host_file(rig):
    board, scsi = rig
    data = bytes(range(256)) * 6
    board.memory.write(BUF, data)
    assert run(board, block(rw10(0x2A, 7, 3))) == (0, (0, 0, 0), 0, 1536)
    board.memory.write(BUF, bytes(1536))
    assert run(board, block(rw10(0x28, 7, 3)))[3] == 1536
    assert board.memory.read(BUF, 1536) == data
    scsi.disk.flush()
    assert Path(scsi.disk.path).read_bytes()[7 * 512:10 * 512] == data
    assert [(e["op"], e["lba"], e["blocks"]) for e in board.trace.of("scsi.request")] == \
        [("WRITE(10)", 7, 3), ("READ(10)", 7, 3)]


def test_unknown_opcode_then_request_sense(rig):
    board, _ = rig
    assert run(board, block([0x5A]))[:3] == (2, (5, 0x20, 0), 0)
    assert run(board, block([0x03, 0, 0, 0, 18])) == (0, (0, 0, 0), 0, 18)
    sense = board.memory.read(BUF, 18)
    assert (sense[0], sense[2], sense[12], sense[13]) == (0x70, 5, 0x20, 0)
    run(board, block([0x03, 0, 0, 0, 18]))                      # reading it cleared it
    assert board.memory.read(BUF, 18)[2] == 0
    assert board.trace.of("scsi.complete")[0]["sense"] == "5/20/00"


@pytest.mark.parametrize("lba, blocks", [(64, 1), (63, 2), (0xFFFFFFFF, 1), (0, 65)])
def test_out_of_range_is_check_condition(rig, lba, blocks):
    board, _ = rig
    assert run(board, block(rw10(0x28, lba, blocks), data_length=1 << 16))[:2] == \
        (2, (5, 0x21, 0))


def test_buffer_too_small_bad_lun_bad_cdb_length(rig):
    board, _ = rig
    assert run(board, block(rw10(0x28, 0, 2), data_length=1023))[:2] == (2, (5, 0x24, 0))
    assert run(board, block([0x00], lun=1))[:2] == (2, (5, 0x25, 0))
    assert run(board, block(rw10(0x28, 0, 1), cdb_length=6))[:2] == (2, (5, 0x24, 0))
    assert run(board, block(rw10(0x28, 0, 0)))[:2] == (0, (0, 0, 0))   # zero blocks: fine
    assert run(board, block([0x12, 1, 0, 0, 36]))[:2] == (2, (5, 0x24, 0))  # EVPD


@pytest.mark.parametrize("op", [0x28, 0x2A])
def test_data_outside_ram_is_hardware_error_not_a_crash(rig, op):
    board, _ = rig
    st = run(board, block(rw10(op, 0, 1), data_addr=(1 << 20) - 100))
    assert st == (2, (4, 0x44, 0), 1, 0)                        # flags bit0: DMA error
    assert run(board, block([0x00]))[2] == 0                    # flag cleared next time


def test_request_block_outside_ram_sets_rberr(rig):
    board, scsi = rig
    board.ports.write(BASE + 0, 4, 0xFFFFF000)
    board.ports.write(BASE + 4, 4, 1)
    board.advance(200)
    assert board.ports.read(BASE + 8, 4) == 2 | 4
    board.ports.write(BASE + 8, 4, 6)
    assert board.ports.read(BASE + 8, 4) == 0


def test_doorbell_while_busy_is_ignored_and_block_snapshot(rig):
    board, scsi = rig
    submit(board, block([0x12, 0, 0, 0, 36]))
    board.memory.write(RB + 20, b"\x25")                        # changed after the doorbell
    board.advance(50)
    board.ports.write(BASE + 4, 4, 1)
    board.advance(150)
    assert scsi.ignored_doorbells == 1 and scsi.completed == 1
    assert board.trace.of("scsi.busy")[0].time == 50
    assert board.memory.read(BUF, 36) == INQUIRY_DATA           # the INQUIRY ran
    board.advance(1000)
    assert len(board.trace.of("scsi.complete")) == 1


def test_write_protected(tmp_path):
    board = FakeBoard()
    DiskImage.create(tmp_path / "ro.img", 4).close()
    with DiskImage.open(tmp_path / "ro.img", readonly=True) as disk:
        SCSIController(board, BASE, IRQ, disk)
        assert run(board, block(rw10(0x2A, 0, 1)))[:2] == (2, (7, 0x27, 0))


def test_byte_wide_register_access(rig):
    board, _ = rig
    for i, b in enumerate(struct.pack("<I", 0x12345678)):
        board.ports.write(BASE + i, 1, b)
    assert board.ports.read(BASE, 4) == 0x12345678
    assert board.ports.read(BASE + 2, 2) == 0x1234


# ---- a real x86 driver on the real board ---------------------------------------------
# Every number in the assembly is written in hex, so it means the same whatever radix the
# assembler is in (keystone 0.9.2 switches to hex for good once an option or sym_resolver is
# set, issues #481/#538; vmkit.hw.asm now guards against it).

PIC_INIT = "".join(f"mov al, {value:#x}\nout {port:#x}, al\n" for port, value in (
    (0x20, 0x11), (0xA0, 0x11),          # ICW1: edge-triggered, cascade, ICW4 follows
    (0x21, 0x20), (0xA1, 0x28),          # ICW2: IRQ 0-7 -> vectors 0x20.., IRQ 8-15 -> 0x28..
    (0x21, 4), (0xA1, 2),                # ICW3: the slave hangs on master line 2
    (0x21, 1), (0xA1, 1),                # ICW4: 8086 mode
    (0x21, 0xFB))) + "mov al, {slave_mask:#x}\nout 0xA1, al\n"   # OCW1: unmask cascade, ours


def scsi_driver(op, lba, blocks, buf, irq_driven, after="hlt"):
    """Assembly that builds a READ(10)/WRITE(10) block at RB, rings, and waits for DONE."""
    wait = f"""
        mov dx, {SCSI_PORT + 0xC:#x}
        mov eax, 1
        out dx, eax
        call ring
    w:  cli
        cmp dword ptr [0x5000], 0
        jne fin
        sti
        hlt
        jmp w
    fin:
        hlt
    """ if irq_driven else f"""
        call ring
        mov dx, {SCSI_PORT + 8:#x}
    poll:
        in eax, dx
        test eax, 2
        jz poll
        mov [0x5004], eax
        mov eax, 2
        out dx, eax
        {after}
    """
    return f"""
        {'lidt [idtd]' if irq_driven else ''}
        {PIC_INIT.format(slave_mask=0xFF & ~(1 << (SCSI_IRQ - 8))) if irq_driven else ''}
        {wait}
    {ring_source(op, lba, blocks, buf, RB)}
    idtd: .word 0x7FF
          .long 0x8000
    """


HANDLER = f"""
    push eax
    push edx
    mov dx, {SCSI_PORT + 8:#x}
    in eax, dx
    mov [0x5004], eax
    mov eax, 2
    out dx, eax
    mov al, 0x20
    out 0xA0, al
    out 0x20, al
    inc dword ptr [0x5000]
    pop edx
    pop eax
    iretd
"""


def test_x86_driver_writes_disk_and_data_survives_reopen(tmp_path):
    """A polling driver writes 2 sectors; a fresh board on the reopened file reads them by IRQ."""
    path = tmp_path / "disk.img"
    board = Board(disk=DiskImage.create(path, 128))
    board.load(0x1000, scsi_driver(0x2A, 100, 2, 0x40000, irq_driven=False))
    board.load(0x1800, """
        mov edi, 0x40000
        mov ecx, 0x100
        mov eax, 0x03020100
    f:  stosd
        add eax, 0x04040404
        loop f
        jmp 0x1000
    """)
    board.boot(0x1800)
    board.run_until(lambda: board.cpu.halted, 200_000, "the polling driver")
    pattern = b"".join(struct.pack("<I", (0x03020100 + 0x04040404 * i) & 0xFFFFFFFF)
                       for i in range(256))                   # what the fill loop stored
    assert board.memory.read_u32(0x5004) == 2                   # it saw DONE
    assert result(board)[:2] == (0, (0, 0, 0)) and result(board)[3] == 1024
    board.close()
    assert path.read_bytes()[100 * 512:102 * 512] == pattern

    board = Board(disk=DiskImage.open(path))
    board.memory.write(0x8000 + 0x2B * 8, encode_gate(0x6000, KERNEL_CS))   # IRQ 11 -> 0x2B
    board.load(0x6000, HANDLER)
    board.load(0x1000, scsi_driver(0x28, 100, 2, 0x40000, irq_driven=True))
    board.boot(0x1000)
    board.run_until(lambda: board.memory.read_u32(0x5000), 200_000, "the SCSI interrupt")
    assert board.memory.read(0x40000, 1024) == pattern
    assert board.memory.read_u32(0x5004) == 2                   # handler saw DONE
    delivered = board.trace.of("cpu.deliver")
    assert [(e["vector"], e["kind"]) for e in delivered] == [(0x2B, "irq")]
    req, done = board.trace.of("scsi.request")[0], board.trace.of("scsi.complete")[0]
    assert delivered[0].time >= done.time > req.time
    board.close()


def test_x86_reads_code_from_disk_and_runs_it_not_the_stale_translation(tmp_path):
    """DMA over code the CPU already ran must reach the CPU: a boot loader depends on it."""
    disk = DiskImage.create(tmp_path / "boot.img", 8)
    disk.write(0, assemble("mov dword ptr [0x5010], 0x2222\nret", 0x40000).ljust(512, b"\0"))
    board = Board(disk=disk)
    board.load(0x40000, "mov dword ptr [0x5010], 0x1111\nret")
    board.load(0x1000, scsi_driver(0x28, 0, 1, 0x40000, irq_driven=False,
                                   after="mov eax, [0x5010]\nmov [0x5014], eax\ncall 0x40000\nhlt"))
    board.load(0x1800, "call 0x40000\njmp 0x1000")
    board.boot(0x1800)
    board.run_until(lambda: board.cpu.halted, 200_000, "the boot loader")
    assert (board.memory.read_u32(0x5014), board.memory.read_u32(0x5010)) == (0x1111, 0x2222)
    board.close()


def test_x86_completion_comes_latency_instructions_after_the_doorbell(tmp_path):
    board = Board(disk=DiskImage.create(tmp_path / "d.img", 8))
    board.load(0x1000, scsi_driver(0x28, 0, 1, 0x40000, irq_driven=False))
    board.boot(0x1000)
    board.run_until(lambda: board.cpu.halted, 200_000, "the polling driver")
    board.close()
    req, done = board.trace.of("scsi.request")[0], board.trace.of("scsi.complete")[0]
    assert done.time - req.time == board.scsi.latency
    assert board.trace.of("cpu.halt")[0].time < 1000     # the driver waited only the latency
