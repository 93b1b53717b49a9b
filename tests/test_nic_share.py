"""Claim 8: a network adapter as a shared device; frames sorted by MAC between the COS and the kernel.

The COS's drivers below are real x86 modules (insmod), run at CPL 1 after the takeover; every
`in`/`out` they make to nic0 traps to the kernel, which serves it from its virtual NIC. The
outside world is `Wire.inject` (frames arriving at nic0) and `wire.tap` (frames nic0 sent).
All numbers in the assembly are hex: see the keystone radix note in test_scsi.py.
"""
import struct

import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.board import NIC_PORTS, NIC_IRQS
from vmkit.hw.nic import (CTRL, ISR, IMR, TX_BASE, TX_COUNT, TX_TAIL, TX_HEAD, RX_BASE, RX_COUNT,
                          RX_TAIL, RX_HEAD, MAC_LO, MAC_HI, RX_DROPPED, Wire)
from vmkit.kernel.nic_share import SharedNIC
from vmkit.lessons import takeover

PORT, LINE = NIC_PORTS[0], NIC_IRQS[0]                 # nic0: 0xC000, IRQ 10 (vector 0x2A)
COS_MAC = bytes.fromhex("020000000001")                # the real NIC's: the COS believes it is the NIC
KERNEL_MAC = bytes.fromhex("020000000081")             # locally administered, last byte ^ 0x80
OTHER_MAC = bytes.fromhex("02000000beef")
BROADCAST = b"\xff" * 6
# the COS driver's memory (free COS memory between the module area and the page pool)
RX_RING, TX_RING, RX_BUF, TX_BUF, VARS = 0x300000, 0x300100, 0x301000, 0x308000, 0x30F000
SLOTS, BUF_LEN = 4, 0x600
V_MAC, V_ISR, V_RX_HEAD, V_DROPPED, V_TX_HEAD, V_IRQS = (VARS + 4 * i for i in range(6))
V_SAVED_GATE = VARS + 0x20


def frame(dst, payload, src=bytes.fromhex("020000000077")):
    return (dst + src + b"\x88\xb5" + payload).ljust(60, b"\0")


# ---- the COS's driver, in x86 -----------------------------------------------------------
def outl(reg, value):
    return f"mov dx, {PORT + reg:#x}\n mov eax, {value:#x}\n out dx, eax\n"


def inl(reg, dest):
    return f"mov dx, {PORT + reg:#x}\n in eax, dx\n mov {dest}, eax\n"


def setup_driver(buffers=3, imr=0):
    """Bring the (virtual) NIC up: RX and TX rings of 4 in COS memory, `buffers` RX buffers given;
    its IRQ line unmasked at the COS's (virtual) PIC, slave and cascade, as a driver must."""
    descs = "".join(f"mov dword ptr [{RX_RING + 16 * i:#x}], {RX_BUF + 0x800 * i:#x}\n"
                    f"mov dword ptr [{RX_RING + 16 * i + 4:#x}], {BUF_LEN:#x}\n" for i in range(SLOTS))
    unmask = (f"in al, 0xa1\nand al, {0xFF & ~(1 << (LINE - 8)):#x}\nout 0xa1, al\n"
              "in al, 0x21\nand al, 0xfb\nout 0x21, al\n")
    return ("init:\n" + descs + outl(RX_BASE, RX_RING) + outl(RX_COUNT, SLOTS) + outl(RX_TAIL, buffers)
            + outl(TX_BASE, TX_RING) + outl(TX_COUNT, SLOTS) + outl(IMR, imr) + outl(CTRL, 3)
            + inl(MAC_LO, f"[{V_MAC:#x}]") + inl(MAC_HI, f"[{V_MAC + 4:#x}]") + unmask + "ret")


def poll():
    """Read (and acknowledge) ISR, then RX_HEAD, RX_DROPPED, TX_HEAD into VARS."""
    return (inl(ISR, f"[{V_ISR:#x}]") + "out dx, eax\n" + inl(RX_HEAD, f"[{V_RX_HEAD:#x}]")
            + inl(RX_DROPPED, f"[{V_DROPPED:#x}]") + inl(TX_HEAD, f"[{V_TX_HEAD:#x}]"))


def poll_driver():
    return "init:\n" + poll() + "ret"


def send_driver(frames, first=0):
    """Frames into TX buffers (source MAC read from the NIC's MAC registers), descriptors
    first.., one doorbell; then poll."""
    code = "init:\n"
    for k, f in enumerate(frames):
        i = first + k
        buf = TX_BUF + 0x800 * i
        code += "".join(f"mov dword ptr [{buf + o:#x}], {struct.unpack_from('<I', f, o)[0]:#x}\n"
                        for o in range(0, len(f), 4))
        code += inl(MAC_LO, f"[{buf + 6:#x}]") + f"mov dx, {PORT + MAC_HI:#x}\n in eax, dx\n mov [{buf + 0xa:#x}], ax\n"
        code += f"mov dword ptr [{TX_RING + 16 * i:#x}], {buf:#x}\nmov dword ptr [{TX_RING + 16 * i + 4:#x}], {len(f):#x}\n"
    return code + outl(TX_TAIL, first + len(frames)) + poll() + "ret"


def irq_driver(frames):
    """An interrupt-driven driver: its own handler at vector 0x2A in the COS's IDT (found
    through the COS's own IDTR operand; `sidt` would show the kernel's), IMR = RX; init waits
    (sti; hlt) until `frames` frames are in its ring, then puts the COS's gate back."""
    gate = f"[{V_SAVED_GATE:#x}]"
    return f"""
    handler:
        push eax
        push edx
        {inl(ISR, f"[{V_ISR:#x}]")}
        out dx, eax                     ; write the causes back: clears them
        {inl(RX_HEAD, f"[{V_RX_HEAD:#x}]")}
        inc dword ptr [{V_IRQS:#x}]
        mov al, 0x20
        out 0xa0, al
        out 0x20, al
        pop edx
        pop eax
        iretd
    init:
        mov ebx, [{cos_layout.IDT_PTR + 2:#x}]
        add ebx, {(0x20 + LINE) * 8:#x}
        mov eax, [ebx]
        mov {gate}, eax
        mov eax, [ebx + 4]
        mov [{V_SAVED_GATE + 4:#x}], eax
        mov eax, handler
        mov word ptr [ebx], ax
        mov word ptr [ebx + 2], 0x8
        mov word ptr [ebx + 4], 0x8e00
        shr eax, 0x10
        mov word ptr [ebx + 6], ax
        {outl(IMR, 1)}
    wait:
        cli
        cmp dword ptr [{V_RX_HEAD:#x}], {frames:#x}
        jae done
        sti
        hlt
        jmp wait
    done:
        sti
        {outl(IMR, 0)}
        mov eax, {gate}
        mov [ebx], eax
        mov eax, [{V_SAVED_GATE + 4:#x}]
        mov [ebx + 4], eax
        ret
    """


# ---- the machine ----------------------------------------------------------------------------
@pytest.fixture
def shared():
    board, cos, loader = takeover.takeover(nics=2)
    wire = Wire(board.nics[0], board.nics[1])
    yield board, cos, loader.kernel, loader.kernel.shared["nic0"], wire
    board.close()


def cos_rx(board, i):
    """(length, flags, frame) of the COS's RX descriptor i, read from COS memory."""
    length, flags = struct.unpack("<HH", board.memory.read(RX_RING + 16 * i + 4, 4))
    return length, flags, board.memory.read(RX_BUF + 0x800 * i, length)


def nic_port_accesses(board, mark):
    """The COS's in/out to nic0's ports, as the kernel's trace saw them."""
    return [e for e in board.trace.since(mark, "kernel.emulate")
            if e["insn"].split()[0] in ("in", "out") and PORT <= int(e["insn"].split()[1], 16) < PORT + 0x40]


def test_the_kernel_fronts_the_nic_with_its_own_rings_and_a_second_mac(shared):
    board, cos, kernel, front, wire = shared
    assert isinstance(front, SharedNIC) and kernel.classes["nic0"] == "shared"
    assert kernel.irqs.shared[LINE] == front.completion
    assert (front.mac, front.kernel_mac) == (COS_MAC, KERNEL_MAC)
    real = board.nics[0]
    assert kernel.contains(real.rx_base) and kernel.contains(real.tx_base)       # rings in kernel memory
    assert real.ctrl == 7 and real.imr == 1 and real.rx_tail == real.rx_count - 1
    assert not board.pic.slave.imr & 1 << (LINE - 8) and not board.pic.master.imr & 4   # IRQ 10 unmasked


def test_frames_sorted_by_mac_into_the_cos_ring_the_kernel_queue_both_or_neither(shared):
    board, cos, kernel, front, wire = shared
    mark = takeover.run_module(board, cos, setup_driver(buffers=3))
    assert board.memory.read(V_MAC, 6) == COS_MAC                # the COS reads the real MAC
    to_cos, to_kernel = frame(COS_MAC, b"for the COS"), frame(KERNEL_MAC, b"for the kernel")
    to_all, to_none = frame(BROADCAST, b"for everyone"), frame(OTHER_MAC, b"for nobody here")
    for k, f in enumerate((to_cos, to_kernel, to_all, to_none)):
        wire.inject(board.nics[0], f, delay=100 + 3000 * k)
    board.run(20_000)
    assert cos_rx(board, 0) == (60, 1, to_cos)                   # length, DONE, the bytes
    assert cos_rx(board, 1) == (60, 1, to_all)
    assert cos_rx(board, 2)[:2] == (BUF_LEN, 0)                  # nothing else reached the COS
    assert front.kernel_rx == [to_kernel, to_all]
    sorted_ = [(e["to"], e["dst"]) for e in board.trace.since(mark, "nic.share_rx")]
    assert sorted_ == [("cos", "02:00:00:00:00:01"), ("kernel", "02:00:00:00:00:81"),
                       ("both", "ff:ff:ff:ff:ff:ff"), ("dropped", "02:00:00:00:be:ef")]
    takeover.run_module(board, cos, poll_driver())               # the COS sees it through its registers
    assert board.memory.read_u32(V_RX_HEAD) == 2 and board.memory.read_u32(V_ISR) == 1
    assert board.memory.read_u32(V_DROPPED) == 0
    assert board.nics[0].rx_dropped == 0 and board.nics[0].rx_tail != board.nics[0].rx_head


def test_no_cos_buffer_drops_and_counts_on_the_virtual_nic_only(shared):
    board, cos, kernel, front, wire = shared
    takeover.run_module(board, cos, setup_driver(buffers=2))
    frames = [frame(COS_MAC, bytes([i]) * 8) for i in range(4)]
    for k, f in enumerate(frames):
        wire.inject(board.nics[0], f, delay=100 + 2000 * k)
    board.run(20_000)
    assert [cos_rx(board, i)[2] for i in range(2)] == frames[:2]
    takeover.run_module(board, cos, poll_driver())
    assert board.memory.read_u32(V_DROPPED) == 2 and board.memory.read_u32(V_RX_HEAD) == 2
    assert [e["reason"] for e in board.trace.of("nic.share_drop")] == ["no COS RX buffer"] * 2
    assert board.nics[0].rx_dropped == 0                         # the real NIC lost nothing


def test_the_kernel_gives_real_buffers_back_many_frames_later(shared):
    board, cos, kernel, front, wire = shared
    frames = [frame(KERNEL_MAC, bytes([i]) * 4) for i in range(20)]   # more than the real ring holds
    for k, f in enumerate(frames):
        wire.inject(board.nics[0], f, delay=100 + 1500 * k)
    board.run(40_000)
    assert front.kernel_rx == frames and board.nics[0].rx_dropped == 0


def test_an_irq_driven_cos_driver_takes_forwarded_rx_interrupts(shared):
    board, cos, kernel, front, wire = shared
    takeover.run_module(board, cos, setup_driver(buffers=3))
    frames = [frame(COS_MAC, b"one"), frame(KERNEL_MAC, b"not yours"), frame(COS_MAC, b"two")]
    for k, f in enumerate(frames):
        wire.inject(board.nics[0], f, delay=20_000 + 20_000 * k)
    mark = takeover.run_module(board, cos, irq_driver(2))
    assert board.memory.read_u32(V_RX_HEAD) == 2 and board.memory.read_u32(V_IRQS) == 2
    assert [cos_rx(board, i)[2] for i in range(2)] == [frames[0], frames[2]]
    injected = [e for e in board.trace.since(mark, "kernel.inject") if e["vector"] == 0x20 + LINE]
    assert len(injected) == 2                                     # one per COS frame, none for the kernel's
    assert board.memory.read_u32(cos_layout.SPURIOUS + 4 * LINE) == 0   # its handler, not the COS's default
    assert front.kernel_rx == [frames[1]]


def test_cos_and_kernel_transmit_in_order_with_the_right_bytes(shared):
    board, cos, kernel, front, wire = shared
    takeover.run_module(board, cos, setup_driver(imr=2))          # IMR: TXDONE
    first, last = frame(OTHER_MAC, b"kernel first", src=KERNEL_MAC), frame(BROADCAST, b"kernel last", src=KERNEL_MAC)
    cos_frames = [frame(OTHER_MAC, b"cos one"), frame(OTHER_MAC, b"cos two")]
    assert front.send(first)
    spurious = board.memory.read_u32(cos_layout.SPURIOUS + 4 * LINE)
    mark = takeover.run_module(board, cos, send_driver(cos_frames))
    assert front.send(last)
    board.run(10_000)
    sent = [f for _, who, f in wire.tap if who == "nic0"]
    expected = [f[:6] + COS_MAC + f[12:] for f in cos_frames]    # the COS's driver wrote its MAC as source
    assert sent == [first, *expected, last]
    assert [e["from"] for e in board.trace.of("nic.share_tx")] == ["kernel", "cos", "cos", "kernel"]
    assert [struct.unpack("<H", board.memory.read(TX_RING + 16 * i + 6, 2))[0] for i in range(2)] == [1, 1]
    assert board.memory.read_u32(V_TX_HEAD) == 2 and board.memory.read_u32(V_ISR) == 2
    assert front.regs[TX_HEAD] == 2 and front.regs[TX_TAIL] == 2
    # TXDONE was forwarded once: the COS's own handler for IRQ 10 (it has no driver: "spurious") ran
    assert board.memory.read_u32(cos_layout.SPURIOUS + 4 * LINE) == spurious + 1
    assert [e["line"] for e in board.trace.since(mark, "irq.queued") if e["line"] == LINE] == [LINE]


def test_cos_accesses_trap_and_only_the_kernel_writes_the_real_nic(shared):
    board, cos, kernel, front, wire = shared
    real, writes = board.nics[0], []
    real_write = real.io_write

    def watched(offset, size, value):
        cpu = board.running_cpu
        writes.append((offset, None if cpu is None else (cpu.cpl, kernel.contains(cpu["eip"]))))
        real_write(offset, size, value)
    real.io_write = watched
    mark = takeover.run_module(board, cos, setup_driver())
    accesses = nic_port_accesses(board, mark)
    assert len(accesses) == 9 and all(e["what"] == "shared device" for e in accesses)
    assert not board.trace.since(mark, "kernel.refused")
    takeover.run_module(board, cos, send_driver([frame(OTHER_MAC, b"x")]))
    wire.inject(real, frame(COS_MAC, b"y"))
    board.run(5_000)
    assert writes and all(who == (0, True) for _, who in writes)      # the CPU at CPL 0, in kernel code
    assert {o for o, _ in writes} == {TX_TAIL, ISR, RX_TAIL}          # doorbells, acknowledgements
    assert (front.regs[RX_BASE], front.regs[TX_BASE]) == (RX_RING, TX_RING)
    assert kernel.contains(real.rx_base) and real.rx_base != RX_RING  # the COS's rings never reached it


def run_scenario():
    board, cos, loader = takeover.takeover(nics=2)
    wire = Wire(board.nics[0], board.nics[1])
    front = loader.kernel.shared["nic0"]
    takeover.run_module(board, cos, setup_driver(imr=3))
    for k, f in enumerate((frame(COS_MAC, b"a"), frame(KERNEL_MAC, b"b"), frame(BROADCAST, b"c"))):
        wire.inject(board.nics[0], f, delay=100 + 1000 * k)
    board.run(10_000)
    takeover.run_module(board, cos, send_driver([frame(OTHER_MAC, b"d")]))
    front.send(frame(OTHER_MAC, b"e", src=KERNEL_MAC))
    board.run(10_000)
    text = board.trace.text()
    board.close()
    return text


def test_the_same_run_gives_the_same_trace():
    first = run_scenario()
    assert "nic.share_rx" in first and "nic.share_tx" in first
    assert first == run_scenario()


def test_the_cos_cannot_point_the_shared_nic_at_kernel_memory(shared):
    """A bus master checks no segment limit: the kernel checks every COS buffer for it."""
    from vmkit.kernel import layout
    board, cos, kernel, front, wire = shared
    idt = kernel.base + layout.IDT
    before = board.memory.read(idt, 256 * 8)
    takeover.run_module(board, cos, setup_driver(buffers=3))
    mark = takeover.run_module(board, cos, f"init:\nmov dword ptr [{RX_RING:#x}], {idt:#x}\nret")
    wire.inject(board.nics[0], frame(COS_MAC, b"over the IDT"), delay=100)
    board.run(20_000)
    assert board.memory.read(idt, 256 * 8) == before               # RX: not over the IDT ...
    assert [e["into"] for e in board.trace.since(mark, "kernel.cos_dma")] == ["the kernel's IDT"]
    takeover.run_module(board, cos, poll_driver())
    assert board.memory.read_u32(V_DROPPED) == 1                     # ... and the COS is told
    # TX: the COS cannot send the kernel's memory out either
    mark = takeover.run_module(board, cos, f"""init:
        mov dword ptr [{TX_RING:#x}], {idt:#x}
        mov dword ptr [{TX_RING + 4:#x}], 64
        {outl(TX_TAIL, 1)}
        ret""")
    board.run(10_000)
    assert not [f for _, who, f in wire.tap if who == "nic0"]
    assert board.trace.since(mark, "kernel.cos_dma")[0]["what"] == "NIC TX buffer"
    flags = struct.unpack("<H", board.memory.read(TX_RING + 6, 2))[0]
    assert flags & 2                                                 # DESC_ERROR in its descriptor
