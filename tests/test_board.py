"""The board: timer in virtual time, the 8259A, the UART, determinism, bad input."""
import pytest

from vmkit.hw.board import Board
from vmkit.hw.memory import BusError
from vmkit.lessons import machine
from conftest import write_idt, u32, IDT_A

PIC_INIT = """
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
"""
TIMER_PROGRAM = PIC_INIT + """
    mov al, 0xfe            ; only IRQ 0
    out 0x21, al
    mov al, 0x34            ; PIT channel 0, lo/hi, mode 2
    out 0x43, al
    mov ax, 1000            ; every 1000 instructions
    out 0x40, al
    mov al, ah
    out 0x40, al
    sti
spin: inc dword ptr [0x5004]
    jmp spin
"""
TICK = "inc dword ptr [0x5000]\npush eax\nmov al, 0x20\nout 0x20, al\npop eax\niretd"


def timer_board():
    b = Board()
    b.boot(0x1000)
    b.cpu["idtr"] = write_idt(b, IDT_A, {0x20: 0x6000})
    b.load(0x6000, TICK)
    b.load(0x1000, TIMER_PROGRAM)
    return b


def test_timer_interrupts_every_n_instructions_of_virtual_time():
    b = timer_board()
    b.run(100_000)
    ticks = [e.time for e in b.trace.of("cpu.deliver")]
    programmed = b.trace.of("pit.start")[0].time
    assert ticks[0] == programmed + 1000            # exact, though programmed mid-slice
    assert {t2 - t1 for t1, t2 in zip(ticks, ticks[1:])} == {1000}
    assert u32(b, 0x5000) == len(ticks) == 99


def test_two_runs_give_identical_traces():
    runs = []
    for _ in range(2):
        b = timer_board()
        b.uart.feed(b"x")
        b.run(50_000)
        runs.append([(e.time, e.cpu, e.kind, e.data) for e in b.trace.events])
    assert runs[0] == runs[1] and len(runs[0]) > 50


def test_masked_line_is_held_pending_until_unmasked():
    b = Board()
    b.pic.raise_line(3)
    assert not b.pic.has_request()                  # the PIC starts with every line masked
    b.ports.write(0x21, 1, 0xF7)                    # OCW1: unmask line 3
    assert b.pic.acknowledge() == 0x08 + 3          # BIOS vector base until remapped
    assert b.pic.acknowledge() is None              # in service: no second request
    b.ports.write(0x20, 1, 0x20)                    # EOI
    assert not b.pic.has_request()                  # edge-triggered: one edge, one request


def test_level_triggered_line_requests_again_after_eoi():
    b = Board()
    b.ports.write(0x4D1, 1, 0x08)                   # ELCR: line 11 level-triggered
    b.ports.write(0x21, 1, 0xFB)                    # master: only the cascade
    b.ports.write(0xA1, 1, 0xF7)                    # slave: only line 11
    b.pic.raise_line(11)
    for _ in range(3):
        assert b.pic.acknowledge() == 0x70 + 3
        b.ports.write(0xA0, 1, 0x20)
        b.ports.write(0x20, 1, 0x20)
    b.pic.lower_line(11)
    assert not b.pic.has_request()


def test_serial_output_is_captured_and_traced():
    b = Board()
    b.boot(0x1000)
    b.load(0x1000, """
        mov esi, msg
        mov dx, 0x3f8
    next: lodsb
        test al, al
        jz done
        out dx, al
        jmp next
    done: hlt
    msg: .byte 'h', 'i', 10, 0
    """)
    b.run(200)
    assert b.uart.text == "hi\n"
    assert [e["line"] for e in b.trace.of("serial")] == ["hi"]


def test_serial_input_raises_irq4_when_enabled():
    b = Board()
    b.ports.write(0x3F9, 1, 1)                      # IER: receive interrupt
    b.ports.write(0x3FC, 1, 0x08)                   # MCR OUT2 gates the IRQ to the PIC
    b.ports.write(0x21, 1, 0xEF)
    b.uart.feed(b"k")
    assert b.pic.acknowledge() == 0x08 + 4
    assert b.ports.read(0x3F8, 1) == ord("k")


def test_irq_vectored_through_whichever_idt_is_loaded():
    b = machine.two_idt_machine()
    machine.raise_irq(b, 1)
    machine.request_idt(b, "B")
    assert b.cpu["idtr"][1] == machine.IDT_B        # the CPU ran lidt itself
    machine.raise_irq(b, 1)
    machine.raise_irq(b, 12)                        # a slave line
    assert machine.counts(b)[1] == (1, 1)
    assert machine.counts(b)[12] == (0, 1)


def test_unassigned_ports_read_as_all_ones():
    b = Board()
    assert b.ports.read(0x1234, 1) == 0xFF and b.ports.read(0x1234, 4) == 0xFFFFFFFF


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="one or two CPUs"):
        Board(cpus=3)
    b = Board(memory=1 << 20)
    with pytest.raises(BusError, match="outside the machine"):
        b.load(0xFFFF0, bytes(32))
    with pytest.raises(ValueError, match="IRQ line 16"):
        b.pic.raise_line(16)
    with pytest.raises(ValueError, match="PIT period"):
        b.pit.program(0)


def test_run_until_reports_what_did_not_happen():
    b = Board()
    b.boot(0x1000)
    b.load(0x1000, "l: jmp l")
    with pytest.raises(TimeoutError, match="the flag did not happen within 5000"):
        b.run_until(lambda: False, 5000, "the flag")


def test_irq_waits_while_if_is_clear_and_arrives_after_sti():
    b = timer_board()
    b.load(0x1000, TIMER_PROGRAM.replace("    sti\n", "    mov ecx, 20000\nhold: loop hold\n    sti\n"))
    b.run(8000)
    assert b.pic.has_request() and u32(b, 0x5000) == 0      # raised, pending, not delivered
    b.run(20_000)
    assert u32(b, 0x5000) >= 1


def test_two_cpus_share_one_memory_and_run_deterministically():
    def run():
        b = Board(cpus=2)
        b.load(0x1000, "l: inc dword ptr [0x5000]\ncmp dword ptr [0x5004], 0\nje l\nhlt")
        b.load(0x2000, "l: cmp dword ptr [0x5000], 1000\njb l\nmov dword ptr [0x5004], 1\nhlt")
        b.boot(0x1000, cpu=0)
        assert b.cpus[1].halted                          # an application processor waits
        b.boot(0x2000, stack=0x8F000, cpu=1)
        b.run_until(lambda: all(c.halted for c in b.cpus), 200_000, "both CPUs halting")
        return u32(b, 0x5000), [(e.time, e.cpu, e.kind) for e in b.trace.events]
    first, second = run(), run()
    assert first[0] >= 1000                              # CPU 1 saw CPU 0's writes, and CPU 0 saw its flag
    assert first == second


def test_a_missing_disk_image_is_a_clear_error(tmp_path):
    from vmkit.hw.disk import DiskImageError
    with pytest.raises(DiskImageError, match="nope.img"):
        Board(disk=tmp_path / "nope.img")


def test_a_masked_requested_timer_line_costs_no_event_per_period_and_keeps_its_time():
    """IRQ 0 masked with its request already pending: the PIT's next pulses would change
    nothing, so it schedules none (the CPU runs on unstopped); its count readback and tick
    count stay those of a PIT that pulsed every period (a twin board, its line unmasked);
    unmasked, the one pending tick is delivered and the period goes on where it was."""
    b, twin = timer_board(), timer_board()
    for board in (b, twin):
        board.run(20_000)
    b.ports.write(0x21, 1, 0xFF)                    # the timer line masked (OCW1) ...
    for board in (b, twin):
        board.run(2_000)                            # ... its next pulse requests (IRR) ...
    assert b.pic.requested(0) and b.pic.masked(0)
    handled = u32(b, 0x5000)
    for board in (b, twin):
        board.run(50_300)                           # ... and the 50 after it are not scheduled
    assert not b._events and u32(b, 0x5000) == handled
    assert b.ports.read(0x40, 1) == twin.ports.read(0x40, 1)     # readback as if it pulsed
    b.ports.write(0x21, 1, 0xFE)                    # unmasked: the one pending tick ...
    for board in (b, twin):
        board.run(10)
    assert u32(b, 0x5000) == handled + 1            # ... delivered at once, one for all
    assert b.pit.ticks == twin.pit.ticks
    for board in (b, twin):
        board.run(2_000)
    assert b.trace.of("cpu.deliver")[-1].time == twin.trace.of("cpu.deliver")[-1].time
    assert u32(b, 0x5000) == handled + 3 and b.pit.ticks == twin.pit.ticks
