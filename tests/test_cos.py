"""The console OS (claims 1, 28): a real ring-0 x86 OS that initialises the machine."""
import re

import pytest

from vmkit.cos import COS, layout as L
from vmkit.hw.board import Board
from vmkit.hw.x86 import decode_gate, EFLAGS_IF, GATE_INT32
from vmkit.hw.disk import DiskImage
from vmkit.hw.nic import Wire

EXPORT = {"alloc": L.COS_EXPORTS, "print": L.COS_EXPORTS + 4, "hex": L.COS_EXPORTS + 8}
SCRATCH = 0x6000                      # where test modules leave their results


def full_board(folder):
    """Every device fitted, as in notebook 00, with the disk image in a pytest folder."""
    board = Board(nics=2, disk=DiskImage.create(folder / "disk.img", 64))
    Wire(board.nics[0], board.nics[1])
    return board


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    """One COS on a board with every device, booted and idle: read-only tests share it."""
    board = full_board(tmp_path_factory.mktemp("cos"))
    cos = COS.boot(board)
    board.run(50_000)
    yield cos
    board.close()


def fresh(**kw):
    board = Board(**{k: kw.pop(k) for k in ("memory",) if k in kw})
    return COS.boot(board, **kw)


def u32s(board, address, n):
    return [board.memory.read_u32(address + 4 * i) for i in range(n)]


def test_boot_state_is_the_cos_tables_at_cpl0():
    board = Board()
    cos = COS.boot(board, wait=False)
    assert board.cpu["idtr"][1:3] == (0, 0)                 # the firmware left no IDT
    assert board.cpu["gdtr"][1] == 0x500
    board.run_until(lambda: cos.var("READY"), 100_000, "the COS booting")
    cpu = board.cpu
    assert cpu["idtr"][1:3] == (L.COS_IDT, 0x7FF)           # the CPU's registers, read back
    assert cpu["gdtr"][1:3] == (L.COS_GDT, 31)
    assert cpu["tr"][:3] == (L.COS_TSS_SEL, L.COS_TSS, L.TSS_LIMIT)
    assert all(L.region(cpu[t][1]) == "COS data" for t in ("idtr", "gdtr", "tr"))
    assert cpu["cs"] == L.COS_CS and cpu.cpl == 0 and cpu["ss"] == L.COS_DS
    assert cpu.interrupts_enabled
    assert board.memory.read_u32(L.COS_TSS + 4) == L.STACK_TOP   # ESP0
    end = cos.symbols["cos_code_end"]
    assert cos.var("CODE_END") == end                       # published for whoever patches the COS
    gates = [decode_gate(board.memory.read(L.COS_IDT + 8 * v, 8)) for v in range(256)]
    assert all(g.selector == 0x08 and g.present and g.type == GATE_INT32 and g.dpl == 0
               and L.COS_CODE <= g.offset < end for g in gates)
    assert gates[0x20].offset == cos.symbols["timer_handler"]
    assert gates[0x24].offset == cos.symbols["serial_handler"]
    assert len({g.offset for g in gates[:32]}) == 32        # one stub per exception


def test_banner_lists_every_device_and_claims_it(booted):
    lines = booted.console().splitlines()
    assert lines[0] == "COS: booting"
    assert "COS: pit ports 0x40-0x43 irq 0" in lines
    assert "COS: serial ports 0x3f8-0x3ff irq 4" in lines
    assert "COS: scsi ports 0xc100-0xc10f irq 11" in lines
    assert "COS: kbd ports 0x60-0x64 irq 1" in lines
    assert "COS: sensor ports 0x300-0x303 irq 5" in lines
    assert lines[lines.index("COS: booting") + len(booted.board.devices) + 1] == "COS: ready"
    devices = booted.devices()
    assert [(d.name, d.port, d.ports, d.irq) for d in devices] == booted.board.devices
    assert all(d.claimed for d in devices)
    assert booted.board.memory.read(L.COS_DEVICES, 4) == b"CDEV"


def test_drivers_turn_nic_and_scsi_interrupts_off(tmp_path):
    board = full_board(tmp_path)
    for nic in board.nics:
        board.ports.write(nic.base + 8, 4, 3)            # left enabled before the COS ran
    board.ports.write(0xC10C, 4, 1)
    COS.boot(board)
    assert all(board.ports.read(nic.base + 8, 4) == 0 for nic in board.nics)   # IMR
    assert board.ports.read(0xC10C, 4) == 0                                    # CONTROL
    assert board.pic.masked(10) and board.pic.masked(11) and not board.pic.masked(4)
    board.close()


def test_unknown_device_is_listed_but_not_claimed():
    board = Board()
    board.devices.append(("gizmo", 0xD000, 4, 5))
    board._write_firmware_tables()
    cos = COS.boot(board)
    assert "COS: gizmo ports 0xd000-0xd003 irq 5 (no driver)" in cos.console()
    assert [d.claimed for d in cos.devices()] == [True] * 5 + [False]
    assert "cos: gizmo ports 0xd000-0xd003 irq 5 (no driver)" in cos.run_command("devices")


def test_timer_ticks_at_the_programmed_rate_and_prints():
    cos = fresh(timer_period=5000, print_every=4)
    cos.board.run(200_000)
    ticks = [e.time for e in cos.board.trace.of("cpu.deliver") if e["vector"] == L.TIMER_VECTOR]
    assert {b - a for a, b in zip(ticks, ticks[1:])} == {5000}
    assert cos.ticks() == len(ticks) >= 39                  # TICKS in COS memory
    printed = re.findall(r"cos: tick (\d+)", cos.console())
    assert printed[:3] == ["4", "8", "12"] and len(printed) == cos.ticks() // 4


def test_idle_is_sti_hlt_and_the_critical_sections_pushfd_cli_popfd(booted):
    halts = booted.board.trace.of("cpu.halt")
    hlt = halts[-1]["eip"]
    assert booted.board.memory.read(hlt - 1, 2) == b"\xfb\xf4"       # sti ; hlt
    mnemonics = [m for _, m in booted.sensitive_instructions()]
    text = " ".join(mnemonics)
    assert "pushfd cli popfd" in text and mnemonics.count("iretd") >= 3
    assert {"lgdt", "lidt", "ltr", "in", "out"} <= set(mnemonics)


def test_commands_typed_on_the_serial_line():
    cos = fresh(print_every=0)
    cos.board.run(123_456)
    irqs = cos.var("SERIAL_IRQS")
    before = cos.ticks()
    out = cos.run_command("ticks")
    assert out.startswith("ticks\n")                        # echoed by the serial handler
    shown = int(re.search(r"cos: ticks (\d+)", out).group(1))
    assert before <= shown <= cos.ticks() and shown >= 12
    assert cos.var("SERIAL_IRQS") > irqs
    assert cos.run_command("mem") == "mem\ncos: next free page 0x00400000 ram top 0x01000000\n"
    assert cos.run_command("frobnicate") == "frobnicate\ncos: unknown command\n"
    assert "insmod" in cos.run_command("help")
    devices = cos.run_command("devices").splitlines()[1:]
    assert devices == ["cos: pic ports 0x20-0x21 irq none claimed",
                       "cos: pit ports 0x40-0x43 irq 0 claimed",
                       "cos: serial ports 0x3f8-0x3ff irq 4 claimed",
                       "cos: kbd ports 0x60-0x64 irq 1 claimed",
                       "cos: sensor ports 0x300-0x303 irq 5 claimed"]
    assert cos.var("COMMANDS_DONE") == 5


def test_two_lines_typed_at_once_both_run():
    cos = fresh(print_every=0)
    cos.type("mem\nticks\n")
    cos.board.run_until(lambda: cos.var("COMMANDS_DONE") == 2, 200_000, "two commands")
    assert "cos: next free page" in cos.console() and "cos: ticks" in cos.console()


MODULE = f"""
hello:  .asciz "hello from a module"
init:   mov ebx, 0x11111111            ; registers the exports must preserve
        mov ecx, 0x22222222
        mov edx, 0x33333333
        mov esi, hello
        mov edi, 0x55555555
        mov ebp, 0x66666666
        call dword ptr [{EXPORT['print']:#x}]
        mov eax, 0xcafef00d
        call dword ptr [{EXPORT['hex']:#x}]
        cmp ebx, 0x11111111
        jne broken
        cmp ecx, 0x22222222
        jne broken
        cmp edx, 0x33333333
        jne broken
        cmp esi, hello
        jne broken
        cmp edi, 0x55555555
        jne broken
        cmp ebp, 0x66666666
        jne broken
        mov dword ptr [{SCRATCH + 8:#x}], 1
broken: mov ecx, 3
        call dword ptr [{EXPORT['alloc']:#x}]
        mov [{SCRATCH:#x}], eax
        mov [{SCRATCH + 4:#x}], cs      ; the privilege the init ran at
        mov eax, 0x1234
        ret
"""


def test_insmod_runs_the_init_at_cpl0_through_the_exports():
    cos = fresh(print_every=0)
    out = cos.insmod(COS.make_module(MODULE))
    assert out == "insmod\ninsmod: init\nhello from a modulecafef00dinsmod: ok\n"
    board = cos.board
    assert u32s(board, SCRATCH, 3) == [L.PAGE_POOL, L.COS_CS, 1]    # CPL 0; registers kept
    assert cos.var("NEXT_FREE_PAGE") == L.PAGE_POOL + 3 * L.PAGE_SIZE
    assert cos.var("MODULES_LOADED") == 1 and cos.var("MODULE_RESULT") == 0x1234
    assert "cos: next free page 0x00403000" in cos.run_command("mem")


def test_a_bad_module_is_refused_by_the_cos_itself():
    cos = fresh(print_every=0)
    good = COS.make_module(f"init: mov dword ptr [{SCRATCH:#x}], 0xbad\nret")
    for bad in (b"XMOD" + good[4:],                                    # magic
                good[:4] + (0x200000).to_bytes(4, "little") + good[8:],  # size past the area
                good[:8] + (0x1000).to_bytes(4, "little") + good[12:]):  # init past the code
        cos.put_module(bad, verify=False)               # the administrator copied a bad file
        assert cos.run_command("insmod") == "insmod\ninsmod: bad module\n"
    assert cos.board.memory.read_u32(SCRATCH) == 0 and cos.var("MODULES_LOADED") == 0
    with pytest.raises(ValueError, match="not a module file"):
        cos.put_module(b"XMOD" + good[4:])
    with pytest.raises(ValueError, match="16-byte header"):
        cos.put_module(b"CMOD")
    with pytest.raises(ValueError, match="does not fit"):
        cos.put_module(good + bytes(L.MODULE_AREA_SIZE))
    with pytest.raises(ValueError, match="init label"):
        COS.make_module("start: ret\ninit = 0x1000")


def test_a_fault_prints_and_stops_the_cos_cleanly():
    cos = fresh(print_every=1)
    module = COS.make_module("nop\ninit: ud2\nret")
    out = cos.insmod(module)
    assert out.endswith(f"insmod: init\nCOS: fault 6 at {L.MODULE_CODE + 1:#010x}\n")
    assert (cos.var("FAULT_VECTOR"), cos.var("FAULT_EIP")) == (6, L.MODULE_CODE + 1)
    board = cos.board
    ticks, text = cos.ticks(), cos.console()
    board.run(100_000)
    assert board.cpu.halted and board.cpu.shutdown is None
    assert not board.cpu["eflags"] & EFLAGS_IF
    assert cos.ticks() == ticks and cos.console() == text          # stopped: nothing more
    with pytest.raises(RuntimeError, match="stopped"):
        cos.run_command("ticks")


def test_alloc_pages_is_page_aligned_increasing_and_stops_at_ram_top():
    cos = fresh(memory=5 << 20, print_every=0)                # pool: 0x400000..0x500000
    counts = (1, 1, 200, 100, 54, 1, 0)
    calls = "\n".join(f"mov ecx, {n}\ncall dword ptr [{EXPORT['alloc']:#x}]\n"
                      f"mov [{SCRATCH + 4 * i:#x}], eax" for i, n in enumerate(counts))
    cos.insmod(COS.make_module(f"init:\n{calls}\nret"))
    got = u32s(cos.board, SCRATCH, len(counts))
    assert got == [0x400000, 0x401000, 0x402000, 0, 0x4CA000, 0, 0]
    assert cos.var("NEXT_FREE_PAGE") == cos.var("RAM_TOP") == 5 << 20


def test_spurious_irqs_are_counted_and_acknowledged():
    cos = fresh(print_every=0)
    cos.insmod(COS.make_module("init: in al, 0x21\nand al, 0xf7\nout 0x21, al\n"
                               "in al, 0xa1\nand al, 0xf7\nout 0xa1, al\nret"))   # unmask 3, 11
    board = cos.board
    mark = board.trace.mark()
    for line in (3, 11, 11):
        board.pic.pulse(line)
        board.run(1000)
    spurious = u32s(board, L.SPURIOUS, 16)
    assert spurious[3] == 1 and spurious[11] == 2 and sum(spurious) == 3
    eois = [e["line"] for e in board.trace.since(mark, "pic.eoi") if e["line"] != 0]  # not timer
    assert eois == [3, 11, 2, 11, 2]                        # a slave line: slave, then master
    assert not board.pic.has_request()


def test_two_boots_give_identical_traces():
    def run():
        cos = fresh(timer_period=3000)
        cos.type("devices\n")
        cos.board.run(60_000)
        cos.insmod(COS.make_module(MODULE))
        cos.board.run(60_000)
        return [(e.time, e.cpu, e.kind, e.data) for e in cos.board.trace.events], cos.console()
    first, second = run(), run()
    assert first == second and len(first[0]) > 100


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="timer period"):
        COS.boot(Board(), timer_period=0)
    with pytest.raises(ValueError, match="at least 4 MiB"):
        COS.boot(Board(memory=2 << 20))
    with pytest.raises(ValueError, match="one non-empty command line"):
        fresh().run_command("")


# ---- the keyboard and sensor drivers (issue 4's host-managed devices) ---------------------

def delivered(board, vector, mark=0):
    return [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == vector]


def test_keys_pressed_reach_the_cos_keyboard_handler():
    cos = fresh(print_every=0)
    board = cos.board
    assert not board.pic.masked(1) and board.keyboard.command_byte & 1
    mark = board.trace.mark()
    board.keyboard.press(b"\x1e\x9e")                  # 'a' pressed and released
    board.run(5_000)
    assert (cos.var("KEYS"), cos.var("LAST_KEY")) == (2, 0x9E)
    irqs = delivered(board, L.KBD_VECTOR, mark)
    assert irqs and all(e["handler"] == cos.symbols["kbd_handler"] for e in irqs)
    assert cos.var("KBD_IRQS") == len(irqs)
    assert not board.keyboard.output_full and not board.pic.master.lines & 0x02
    board.keyboard.press(b"\x30")
    board.run(5_000)
    assert (cos.var("KEYS"), cos.var("LAST_KEY")) == (3, 0x30)
    assert board.memory.read_u32(L.SPURIOUS + 4) == 0  # IRQ 1 has a driver now


def test_sensor_samples_reach_the_cos_one_interrupt_each():
    cos = fresh(print_every=0)
    board, sensor = cos.board, cos.board.sensor
    assert board.pic.master.elcr & (1 << 5)            # the COS made line 5 level-triggered
    assert board.ports.read(0x4D0, 1) & 0x20 and not board.pic.masked(5)
    assert board.ports.read(0x302, 1) == 1             # and enabled the device's interrupt
    mark = board.trace.mark()
    for _ in range(10):
        sensor.sample()
        board.run(3_000)
    assert cos.var("SENSOR_IRQS") == sensor.samples == sensor.acknowledged == sensor.raised == 10
    assert cos.var("SENSOR_LAST") == 10
    irqs = delivered(board, L.SENSOR_VECTOR, mark)
    assert len(irqs) == 10 and all(e["handler"] == cos.symbols["sensor_handler"] for e in irqs)
    sensor.start(5_000)                                # sampling on its own, in virtual time
    board.run(100_000)
    sensor.stop()
    board.run(1_000)
    assert cos.var("SENSOR_IRQS") == sensor.samples == 30 and not sensor.line


def test_a_jammed_sensor_storms_the_cos():
    cos = fresh(print_every=0)
    board, sensor = cos.board, cos.board.sensor
    sensor.sample()
    board.run(3_000)
    assert cos.var("SENSOR_IRQS") == 1
    board.run(100_000)
    assert cos.var("SENSOR_IRQS") == 1                 # served: quiet
    sensor.jam()
    ticks, samples = cos.ticks(), sensor.samples
    board.run(100_000)                                 # bounded: virtual time, not a condition
    storm = cos.var("SENSOR_IRQS") - 1
    assert storm >= 500                                # the handler ran again and again ...
    assert sensor.samples == samples and sensor.acknowledged == 1   # ... with nothing to read
    assert cos.ticks() - ticks >= 9                    # the timer (a higher priority) still ticks
    sensor.unjam()
    board.run(1_000)
    after = cos.var("SENSOR_IRQS")
    board.run(100_000)
    assert cos.var("SENSOR_IRQS") == after             # unjammed: quiet again
    assert cos.run_command("ticks").startswith("ticks\ncos: ticks")


def test_drivers_attach_only_devices_that_are_there():
    board = Board(keyboard=False, sensor=False)
    cos = COS.boot(board)
    assert board.pic.master.imr == 0xEA and board.pic.master.elcr == 0   # IRQ 1 and 5 masked
    assert [d.name for d in cos.devices()] == ["pic", "pit", "serial"]
    odd = Board(sensor=False)                          # a sensor where the driver does not expect it
    from vmkit.hw.sensor import Sensor
    Sensor(odd, base=0x310, irq=7)
    odd.devices.append(("sensor", 0x310, 4, 7))
    odd._write_firmware_tables()
    cos = COS.boot(odd)
    assert [d.claimed for d in cos.devices()] == [True] * 4 + [False]
    assert odd.pic.masked(7) and odd.pic.masked(5) and odd.pic.master.elcr == 0


HOLD = f"""
init:   mov dword ptr [{SCRATCH + 8:#x}], 30000
        mov eax, 0x11111111
        mov ebx, 0x22222222
        mov ecx, 0x33333333
        mov edx, 0x44444444
        mov esi, 0x55555555
        mov edi, 0x66666666
        mov ebp, 0x77777777
spin:   cmp eax, 0x11111111
        jne broken
        cmp ebx, 0x22222222
        jne broken
        cmp ecx, 0x33333333
        jne broken
        cmp edx, 0x44444444
        jne broken
        cmp esi, 0x55555555
        jne broken
        cmp edi, 0x66666666
        jne broken
        cmp ebp, 0x77777777
        jne broken
        dec dword ptr [{SCRATCH + 8:#x}]
        jnz spin
        mov dword ptr [{SCRATCH:#x}], 1
        ret
broken: mov dword ptr [{SCRATCH:#x}], 2
        ret
"""


def test_the_handlers_keep_every_register_of_the_code_they_interrupt():
    cos = fresh(timer_period=700, print_every=0)
    board = cos.board
    board.sensor.start(450)
    for delay in range(2_000, 200_000, 3_000):
        board.schedule(delay, lambda: board.keyboard.press(b"\x1e\x9e"))
    mark = board.trace.mark()
    cos.insmod(COS.make_module(HOLD), limit=3_000_000)
    assert board.memory.read_u32(SCRATCH) == 1         # the spin never saw a register change
    seen = {e["vector"] for e in board.trace.since(mark, "cpu.deliver")}
    assert {L.TIMER_VECTOR, L.KBD_VECTOR, L.SENSOR_VECTOR, L.SERIAL_VECTOR} <= seen
    assert cos.var("KEYS") > 10 and cos.var("SENSOR_IRQS") > 100


def test_code_end_covers_the_new_handlers_and_nothing_after():
    from capstone import Cs, CS_ARCH_X86, CS_MODE_32
    cos = fresh()
    end = cos.var("CODE_END")
    assert max(cos.symbols[n] for n in ("kbd_handler", "sensor_handler", "probe_kbd",
                                         "probe_sensor")) < end
    code = cos.board.memory.read(L.COS_CODE, end - L.COS_CODE)
    sizes = [size for _, size, _, _ in Cs(CS_ARCH_X86, CS_MODE_32).disasm_lite(code, L.COS_CODE)]
    assert sum(sizes) == len(code)                      # linear disassembly: exactly to CODE_END
    mnemonics = [m for _, m in cos.sensitive_instructions()]
    assert mnemonics.count("iretd") == 6                # timer, kbd, serial, sensor, spurious, unexpected
