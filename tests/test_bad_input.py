"""Bad input at the entry points a learner or instructor reaches: each gets an
error that names the problem, and the machine is left as it was."""
import struct
import zlib

import pytest

from vmkit.hw.board import Board, MachineStopped
from vmkit.kernel.image import HEADER, KernelImage, KernelImageError, build
from vmkit.lessons.takeover import booted_cos, COMMAND_LIMIT

FIELDS = ("entry", "stubs", "dispatch", "system_world", "dispatched", "relocations")


# ---- kernel images whose CRC is right but whose offsets are not -------------------
def repack(image, body=None, **fields):
    """`image` with some header fields (or its body) replaced and the CRC recomputed,
    as a vendor's build tool with a bug would ship it."""
    magic, version, size, _, *values = HEADER.unpack_from(image)
    values = dict(zip(FIELDS, values), **fields)
    body = image[HEADER.size:] if body is None else body
    packed = [values[f] for f in FIELDS]
    crc = zlib.crc32(struct.pack(f"<{len(packed)}I", *packed) + body)
    return HEADER.pack(magic, version, HEADER.size + len(body), crc, *packed) + body


def header(image):
    return dict(zip(FIELDS, HEADER.unpack_from(image)[4:]))


def with_relocation(image, index, value):
    """The image with relocation entry `index` replaced by `value`."""
    at = header(image)["relocations"] + 4 + 4 * index
    body = bytearray(image[HEADER.size:])
    struct.pack_into("<I", body, at - HEADER.size, value)
    return repack(image, body=bytes(body))


IMAGE = build()
SIZE = len(IMAGE)
BAD_IMAGES = {
    "relocation table": repack(IMAGE, relocations=SIZE + 100),
    "relocation table ": repack(IMAGE, relocations=SIZE - 2),
    "entries at offset": repack(IMAGE, relocations=header(IMAGE)["relocations"] - 400),
    "relocation entry 2": with_relocation(IMAGE, 2, SIZE + 0x1000),
    "relocation entry 0": with_relocation(IMAGE, 0, 2),                    # inside the header
    "entry offset": repack(IMAGE, entry=SIZE + 100),
    "dispatch offset": repack(IMAGE, dispatch=0xFFFFFFF0),
    "system world offset": repack(IMAGE, system_world=header(IMAGE)["relocations"]),
    "dispatched offset": repack(IMAGE, dispatched=SIZE),
    "stubs offset": repack(IMAGE, stubs=header(IMAGE)["relocations"] - 256 * 16 + 4),
}


@pytest.mark.parametrize("field", BAD_IMAGES)
def test_each_header_offset_is_checked_against_the_image(field):
    with pytest.raises(KernelImageError, match=field.strip()):
        KernelImage(BAD_IMAGES[field], room=0x10000)


def test_a_good_image_still_loads_its_offsets():
    image = KernelImage(IMAGE, room=0x10000)
    table = header(IMAGE)["relocations"]
    assert image.entry == header(IMAGE)["entry"]
    assert len(image.relocations) == int.from_bytes(IMAGE[table:table + 4], "little") >= 3


def cos_tables(cpu):
    return cpu["idtr"], cpu["gdtr"], cpu["tr"], cpu["cs"]


@pytest.mark.parametrize("field", ["relocation table", "entry offset", "relocation entry 2"])
def test_a_load_with_bad_offsets_is_refused_before_anything_is_copied(field):
    board, cos, loader = booted_cos(image=BAD_IMAGES[field])
    cpu, before = board.cpu, cos_tables(board.cpu)
    cos.put_module(loader.module)
    pool, free = board.memory.read(0x400000, 0x10000), cos.var("NEXT_FREE_PAGE")
    out = cos.run_command("insmod", COMMAND_LIMIT)
    refused = board.trace.of("load.refused")
    assert refused and field.strip() in refused[0]["why"]
    assert out.endswith(f"vmkload: refused: {refused[0]['why']}\ninsmod: init failed\n")
    assert loader.kernel is None and not board.trace.of("load.copied")
    assert board.memory.read(0x400000, 0x10000) == pool and cos_tables(cpu) == before
    assert cos.var("NEXT_FREE_PAGE") == free and cos.var("MODULES_LOADED") == 0   # no page taken
    ticks = cos.ticks()
    board.run(300_000)                                         # later runs are not poisoned
    assert cos.ticks() > ticks and cpu.cpl == 0 and cpu.shutdown is None
    assert "ticks" in cos.run_command("ticks")


def panicking_image():
    """Intact offsets, but the kernel's first instruction is ud2: a fault at CPL 0
    in the kernel, which its dispatcher reports as a panic."""
    entry = header(IMAGE)["entry"]
    body = bytearray(IMAGE[HEADER.size:])
    body[entry - HEADER.size:entry - HEADER.size + 2] = b"\x0f\x0b"
    return repack(IMAGE, body=bytes(body))


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_kernel_panic_during_insmod_is_reported_as_a_panic(cpus):
    board, cos, loader = booted_cos(image=panicking_image(), cpus=cpus)
    cos.put_module(loader.module)
    with pytest.raises(MachineStopped, match=r"vmkernel panic: vector 0x6 .*'insmod'"):
        cos.run_command("insmod", COMMAND_LIMIT)
    assert board.cpu.shutdown.startswith("vmkernel panic: vector 0x6")
    assert board.clock < 1_000_000                            # said at once, not after the limit
    with pytest.raises(MachineStopped, match="vmkernel panic"):
        board.run_until(lambda: False, 100_000, "a tick")
    with pytest.raises(MachineStopped, match="vmkernel panic"):
        cos.run_command("ticks")


# ---- guests that are not guests, and board.load with nothing -----------------------
def displaced(**options):
    from vmkit.lessons.takeover import takeover
    board, cos, loader = takeover(timer_period=2000, **options)
    assert loader.kernel is not None
    return board, cos, loader.kernel


def machine_state(board, kernel):
    """What a refused install_vm must leave as it was: where the next VM goes, the
    COS's RAM top and page pool, the world table, and the kernel's memory (world
    blocks included)."""
    from vmkit.cos import layout as cos_layout
    from vmkit.kernel import layout
    mem = board.memory
    return (kernel.worlds.vm_top, mem.read_u32(cos_layout.RAM_TOP), mem.read_u32(cos_layout.NEXT_FREE_PAGE),
            list(kernel.worlds.all), mem.read(kernel.base, layout.STACK_TOP),
            mem.read(0x400000, board.memory.size - 0x400000))


def _raises(base):
    raise KeyError("no such guest")


BAD_GUESTS = [
    (b"", 0x8000, "guest is empty"),
    ("", 0x8000, "guest is empty"),
    ("; only a comment\nstart:", 0x8000, "guest is empty"),
    (bytearray(), 0x8000, "guest is empty"),
    (5, 0x8000, "not int 5"),
    (True, 0x8000, "not bool"),
    (None, 0x8000, "not NoneType"),
    ([0x90, 0xF4], 0x8000, "not list"),
    (lambda base: 3, 0x8000, "not int 3"),
    (lambda base: b"", 0x8000, "guest is empty"),
    (_raises, 0x8000, r"guest function failed \(linked at 0\): KeyError: 'no such guest'"),
    (bytes(0x9000), 0x8000, "guest is 36864 bytes, its memory 32768"),
    (b"\xeb\xfe", 0, "memory is a positive number of bytes, not 0"),
    (b"\xeb\xfe", -0x1000, "not -4096"),
    (b"\xeb\xfe", 4096.0, "not 4096.0"),
    (b"\xeb\xfe", "0x8000", "not '0x8000'"),
    (b"\xeb\xfe", 1 << 40, "does not fit"),
    (b"\xeb\xfe", 0x500000, "must end below the kernel at 0x400000"),   # fits in RAM, not under the kernel
]


@pytest.mark.parametrize("guest, memory, why", BAD_GUESTS)
def test_a_bad_guest_is_refused_and_nothing_changes(guest, memory, why):
    from vmkit.kernel.worlds import VMError
    board, cos, kernel = displaced()
    before = machine_state(board, kernel)
    with pytest.raises(VMError, match=why):
        kernel.install_vm(guest, memory, "bad")
    assert machine_state(board, kernel) == before
    vm = kernel.install_vm(b"\xeb\xfe", 0x8000, "good")      # the memory was not lost
    assert vm.region[0] + vm.region[1] <= before[0] and len(kernel.worlds.all) == 2


@pytest.mark.parametrize("entry, why", [
    (2, r"entry 2 is not an address inside its image \(guest addresses 0..0x1\)"),   # past its 2 bytes
    (0x7000, "entry 28672 is not an address inside its image"),     # in its memory, not its image
    (-1, "entry -1 is not"), (0x400000, "entry 4194304 is not"), ("0", "entry '0' is not"),
    (None, "entry None is not"), (True, "entry True is not"), (1.0, "entry 1.0 is not"),
])
def test_a_bad_entry_is_refused_and_nothing_changes(entry, why):
    from vmkit.kernel.worlds import VMError
    board, cos, kernel = displaced()
    before = machine_state(board, kernel)
    with pytest.raises(VMError, match=why):
        kernel.install_vm(b"\xeb\xfe", 0x8000, "bad", entry=entry)
    assert machine_state(board, kernel) == before and len(kernel.worlds.all) == 1


def test_bad_names_and_cpus_are_refused_and_nothing_changes():
    from vmkit.kernel.worlds import VMError
    board, cos, kernel = displaced()
    before = machine_state(board, kernel)
    for kwargs, why in [({"name": 7}, "name is text, not 7"), ({"cpu": 1}, "no CPU 1"),
                        ({"cpu": "0"}, "no CPU '0'"), ({"cpu": -1}, "no CPU -1")]:
        with pytest.raises(VMError, match=why):
            kernel.install_vm(b"\xeb\xfe", 0x8000, **kwargs)
    assert machine_state(board, kernel) == before


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_guest_of_garbage_bytes_runs_and_harms_only_itself(seed):
    import random
    from vmkit.vmm import guests
    board, cos, kernel = displaced()
    good = kernel.install_vm(lambda base: guests.console(base, "good"), 0x8000, "good")
    good_code = board.memory.read(good.region[0], 0x100)
    cos_code = board.memory.read(0x10000, 0x10000)
    junk = kernel.install_vm(random.Random(seed).randbytes(0x800), 0x8000, "junk")
    ticks = cos.ticks()
    board.run(800_000)
    assert board.cpu.shutdown is None and cos.ticks() > ticks + 50
    assert bytes(good.vmm.console).decode().count("good") > 5
    # its own code as it was, but for the iretd its VMM patched to int3 when it saw its lidt
    now = bytearray(board.memory.read(good.region[0], 0x100))
    for address in good.vmm.patches:                       # guest addresses: from its memory's start
        if address < 0x100 and now[address] == 0xCC:
            now[address] = good_code[address]
    assert bytes(now) == good_code
    assert board.memory.read(0x10000, 0x10000) == cos_code
    assert junk.state == "crashed" and junk.fault            # it ran and faulted, alone
    assert any(e["vm"] == "junk" for e in board.trace.of("vm.crashed"))


@pytest.mark.parametrize("code, error, why", [
    ("", ValueError, "nothing to load at 0x5000"),
    (b"", ValueError, "nothing to load at 0x5000"),
    (5, TypeError, "not int 5"),
    (None, TypeError, "not NoneType"),
])
def test_board_load_of_nothing_is_refused_unwritten(code, error, why):
    board = Board()
    board.memory.write(0x5000, b"\xAA" * 8)
    with pytest.raises(error, match=why):
        board.load(0x5000, code)
    assert board.memory.read(0x5000, 8) == b"\xAA" * 8 and not board.trace.of("load")
    assert board.load(0x5000, "nop") == 1


# ---- insmod of the load-call module when a vmkernel already runs --------------------
def test_a_second_insmod_is_refused_once_and_insmod_fails():
    from vmkit.cos import layout as cos_layout
    from vmkit.kernel import layout
    board, cos, kernel = displaced()
    loader_module = board.memory.read(cos_layout.MODULE_AREA, 16)
    cpu, mem = board.cpu, board.memory
    def state():
        return ([cos.var(v) for v in ("NEXT_FREE_PAGE", "RAM_TOP", "MODULES_LOADED")],
                cos_tables(cpu), mem.read(kernel.base + layout.IDT, 256 * 8), kernel.worlds.all[:])
    before = state()
    for _ in range(2):                         # the same answer each time
        out = cos.run_command("insmod", COMMAND_LIMIT)
        out = "".join(line for line in out.splitlines(True) if not line.startswith("cos: tick"))
        assert out == ("insmod\ninsmod: init\nvmkload: loading the vmkernel\n"
                       f"vmkload: refused: a vmkernel is already loaded (at {kernel.base:#x})\n"
                       "insmod: init failed\n")
        assert state() == before and cos.var("MODULE_RESULT") == 0xFFFFFFFF
    assert mem.read(cos_layout.MODULE_AREA, 16) == loader_module
    ticks = cos.ticks()
    board.run(300_000)
    assert cos.ticks() > ticks and "unknown" not in cos.run_command("ticks")


def test_the_load_call_module_says_when_the_cos_has_no_memory_for_the_kernel():
    board, cos, loader = booted_cos(memory=4 << 20)           # the page pool is empty
    cos.put_module(loader.module)
    out = cos.run_command("insmod", COMMAND_LIMIT)
    assert out.endswith("vmkload: refused: the COS has no 64 free pages for the kernel\n"
                        "insmod: init failed\n")
    assert loader.kernel is None and board.cpu.cpl == 0


def test_an_init_that_returns_a_negative_eax_fails_its_insmod():
    from vmkit.cos.cos import COS
    board = Board()
    cos = COS.boot(board, print_every=0)
    out = cos.insmod(COS.make_module("init: mov eax, -22\nret"))
    assert out == "insmod\ninsmod: init\ninsmod: init failed\n"
    assert cos.var("MODULES_LOADED") == 0 and cos.var("MODULE_RESULT") == 0xFFFFFFEA
    assert cos.insmod(COS.make_module("init: mov eax, 7\nret")).endswith("insmod: ok\n")
    assert cos.var("MODULES_LOADED") == 1


# ---- the other entry points a learner or instructor reaches --------------------------
@pytest.mark.parametrize("options, why", [
    ({"memory": "16M"}, "memory is a number of bytes"), ({"memory": 1.5e6}, "not 1500000.0"),
    ({"memory": 1 << 40}, "up to 1024 MiB"), ({"slice": 0}, "slice is a positive"),
    ({"slice": -5}, "not -5"), ({"nics": "1"}, "0..2 NICs, not '1'"), ({"nics": 1.0}, "not 1.0"),
    ({"cpus": True}, "one or two CPUs, not True"),
])
def test_board_options_are_checked(options, why):
    with pytest.raises(ValueError, match=why):
        Board(**options)


def test_board_disk_that_is_no_path_is_refused():
    with pytest.raises(TypeError, match="DiskImage or the path"):
        Board(disk=5)


@pytest.mark.parametrize("call, error, why", [
    (lambda b: b.run(-5), ValueError, "run: a number of instructions >= 0 .*not -5"),
    (lambda b: b.run(1.5), ValueError, "not 1.5"),
    (lambda b: b.run("10"), ValueError, "not '10'"),
    (lambda b: b.run_until(lambda: False, -1), ValueError, "limit.* not -1"),
    (lambda b: b.run_until(True, 100), TypeError, "a function, not True"),
    (lambda b: b.boot(0x1000, cpu=5), ValueError, "no CPU 5"),
    (lambda b: b.boot(-1), ValueError, "entry -1 is not an address"),
    (lambda b: b.boot(16 << 20), ValueError, "entry 16777216 is not an address"),
    (lambda b: b.boot(0x1000, stack=1 << 40), ValueError, "stack"),
    (lambda b: b.load("0x1000", b"\x90"), TypeError, "address"),
    (lambda b: b.uart.feed(5), TypeError, "bytes, not int"),
    (lambda b: b.keyboard.press(5), TypeError, "scancodes as bytes"),
    (lambda b: b.keyboard.press("a"), TypeError, "scancodes as bytes"),
])
def test_board_calls_with_bad_arguments_leave_it_as_it_was(call, error, why):
    board = Board()
    board.load(0x1000, "again: inc eax\njmp again")
    board.boot(0x1000)
    board.run(100)
    state, clock, rx = board.cpu.state(), board.clock, bytes(board.uart.rx)
    with pytest.raises(error, match=why):
        call(board)
    assert (board.cpu.state(), board.clock, bytes(board.uart.rx)) == (state, clock, rx)
    assert not board.keyboard.pressed
    board.run(100)                                   # and it runs on
    assert board.cpu["eax"] == state["eax"] + 50


def test_a_zero_slice_no_longer_hangs_run():
    """Board(slice=0) used to make run() loop forever without advancing time."""
    with pytest.raises(ValueError):
        Board(slice=0)


@pytest.mark.parametrize("call, error, why", [
    (lambda cos: cos.type(5), TypeError, "not int 5"),
    (lambda cos: cos.run_command(5), ValueError, "one non-empty command line"),
    (lambda cos: cos.run_command("ticks", limit=-1), ValueError, "numbers of instructions"),
    (lambda cos: cos.var("NOPE"), KeyError, "no variable 'NOPE'"),
    (lambda cos: cos.put_module("abc"), TypeError, "module file is bytes"),
    (lambda cos: cos.put_module(5), TypeError, "module file is bytes"),
    (lambda cos: cos.make_module(""), ValueError, "no label 'init'"),
    (lambda cos: cos.make_module("start: ret"), ValueError, "no label 'init'"),
    (lambda cos: cos.make_module(5), TypeError, "x86 source text"),
])
def test_cos_calls_with_bad_arguments_are_refused(call, error, why):
    from vmkit.cos.cos import COS
    board = Board()
    cos = COS.boot(board, print_every=0)
    before = (cos.var("COMMANDS_DONE"), bytes(board.uart.rx), board.memory.read(0x100000, 64))
    with pytest.raises(error, match=why):
        call(cos)
    assert (cos.var("COMMANDS_DONE"), bytes(board.uart.rx), board.memory.read(0x100000, 64)) == before
    assert "ticks" in cos.run_command("ticks")


@pytest.mark.parametrize("options, why", [
    ({"timer_period": "x"}, "timer period 'x'"), ({"print_every": 1.5}, "not 1.5"),
])
def test_cos_boot_options_are_checked(options, why):
    from vmkit.cos.cos import COS
    with pytest.raises(ValueError, match=why):
        COS.boot(Board(), **options)


@pytest.mark.parametrize("options, error, why", [
    ({"image": 5}, TypeError, "kernel image is bytes"), ({"image": "abc"}, TypeError, "not str"),
    ({"build_idt": None}, TypeError, "build_idt must be a function"),
    ({"emulate": 3}, TypeError, "emulate_if must be a function"),
])
def test_loader_options_are_checked(options, error, why):
    with pytest.raises(error, match=why):
        booted_cos(**options)


@pytest.mark.parametrize("build_idt, why", [
    (lambda *a: 1 / 0, "build_idt failed: ZeroDivisionError: division by zero"),
    (lambda *a: b"", "must be 2048 bytes, build_idt gave 0"),
    (lambda *a: None, "must give bytes, it gave NoneType"),
])
def test_a_failing_build_idt_refuses_the_load_and_the_cos_runs_on(build_idt, why):
    """Exercise 02a's plug-in: its failure was an exception out of a Unicorn hook,
    after the image had been copied, raised again by every later run."""
    board, cos, loader = booted_cos(build_idt=build_idt)
    cos.put_module(loader.module)
    pool = board.memory.read(0x400000, 0x10000)
    out = cos.run_command("insmod", COMMAND_LIMIT)
    assert f"vmkload: refused: " in out and why in out and out.endswith("insmod: init failed\n")
    assert loader.kernel is None and board.memory.read(0x400000, 0x10000) == pool
    ticks = cos.ticks()
    board.run(300_000)
    assert cos.ticks() > ticks and board.cpu.cpl == 0


def test_assemble_origin_and_source_are_checked():
    from vmkit.hw.asm import assemble
    with pytest.raises(ValueError, match="origin must be a 32-bit address, not -1"):
        assemble("loop x\nx: nop", -1)
    with pytest.raises(ValueError, match="not 'x'"):
        assemble("nop", "x")
    with pytest.raises(TypeError, match="source text, not bytes"):
        assemble(b"nop")


def test_lesson_machine_entry_points_check_their_arguments():
    from vmkit.lessons import machine
    board = machine.two_idt_machine()
    with pytest.raises(ValueError, match="IDT 'A' and IDT 'B', not 'C'"):
        machine.request_idt(board, "C")
    with pytest.raises(TypeError, match="decode must be a function"):
        machine.irq_with_decoder(None)
    with pytest.raises(TypeError, match="returned None, which has no offset"):
        machine.irq_with_decoder(lambda raw: None)


def test_two_vms_with_one_name_and_a_bool_cpu_are_refused():
    from vmkit.kernel.worlds import VMError
    board, cos, kernel = displaced()
    kernel.install_vm(b"\xeb\xfe", 0x8000, "a")
    before = machine_state(board, kernel)
    with pytest.raises(VMError, match="already a world named 'a'"):
        kernel.install_vm(b"\xeb\xfe", 0x8000, "a")
    with pytest.raises(VMError, match="already a world named 'cos'"):
        kernel.install_vm(b"\xeb\xfe", 0x8000, "cos")
    with pytest.raises(VMError, match="no CPU True"):
        kernel.install_vm(b"\xeb\xfe", 0x8000, "b", cpu=True)
    assert machine_state(board, kernel) == before


def test_a_lesson_that_needs_the_kernel_says_why_it_was_not_loaded():
    from vmkit.lessons import interrupts
    with pytest.raises(RuntimeError, match="vmkernel was not loaded: the kernel IDT must be 2048 bytes"):
        interrupts.storm(build_idt=lambda *a: b"", instructions=1000)


def test_an_exception_in_the_kernels_python_is_raised_once_and_stops_the_cpu():
    """Exercise 02b's plug-in raising inside the dispatcher used to be raised again by
    every later board.run (Unicorn re-entered the hook at the same EIP)."""
    def emulate_if(mnemonic, vcpu, frame):
        raise ZeroDivisionError("a learner's bug")
    board, cos, loader = booted_cos(emulate=emulate_if)
    cos.put_module(loader.module)
    with pytest.raises(ZeroDivisionError, match="a learner's bug"):
        cos.run_command("insmod", COMMAND_LIMIT)
    assert "failed: ZeroDivisionError: a learner's bug" in board.cpu.shutdown
    board.run(10_000)                                          # not raised again
    with pytest.raises(MachineStopped, match="ZeroDivisionError: a learner's bug"):
        cos.run_command("ticks")
    with pytest.raises(MachineStopped, match="ZeroDivisionError"):
        board.run_until(lambda: False, 10_000)


def test_wires_and_disks_that_cannot_work_are_refused():
    import tempfile
    from vmkit.hw.disk import DiskImage, DiskImageError
    from vmkit.hw.nic import Wire
    board = Board(nics=2)
    with pytest.raises(TypeError, match="a wire joins two NICs"):
        Wire(board.nics[0], 5)
    with pytest.raises(ValueError, match="latency is a positive number"):
        board.nics[0].connect(board.nics[1], latency=-1)
    assert board.nics[0].wire is None and board.nics[1].wire is None      # nothing half-wired
    wire = Wire(board.nics[0], board.nics[1])
    with pytest.raises(TypeError, match="a frame is bytes, not int"):
        wire.inject(board.nics[0], 60)
    assert not wire.tap and not board._events
    with tempfile.TemporaryDirectory() as d:
        image = DiskImage.create(d + "/x.img", 8)
        image.close()
        with pytest.raises(DiskImageError, match="the disk image is closed"):
            Board(disk=image)
