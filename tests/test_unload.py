"""Claims 24-25: the unload -- the kernel halts, the COS gets its machine back at CPL 0."""
import pytest

from vmkit.hw.board import Board
from vmkit.cos import layout as cos_layout
from vmkit.cos.cos import COS
from vmkit.hw.x86 import decode_gate, decode_segment
from vmkit.kernel import layout, unload
from vmkit.kernel.patches import PatchTable
from vmkit.lessons.unload import differences, fingerprint
from vmkit.loader import Loader
from vmkit.vmm import guests

LIMIT = 3_000_000


def booted(cpus=1, **board_options):
    board = Board(cpus=cpus, **board_options)
    cos = COS.boot(board)
    loader = Loader(board)
    cos.put_module(loader.module)
    return board, cos, loader


def loaded(cpus=1, **board_options):
    board, cos, loader = booted(cpus, **board_options)
    before = fingerprint(board)
    assert "insmod: ok" in cos.run_command("insmod", LIMIT)
    board.run(100_000)
    return board, cos, loader, before


def rmmod(cos):
    return cos.run_command("rmmod", LIMIT)


def events(board, prefix):
    return [e for e in board.trace.events if e.kind.startswith(prefix)]


def at_events(board, prefix, look):
    """Make `look()` read the machine as each event whose kind starts with `prefix` (a
    string or a tuple of them) is emitted: [(event, what look saw)], so a test asserts
    what the machine held at each step. `del board.trace.emit` ends it."""
    seen, emit = [], board.trace.emit

    def spy(kind, /, *args, **data):
        event = emit(kind, *args, **data)
        if kind.startswith(prefix):
            seen.append((event, look()))
        return event
    board.trace.emit = spy
    return seen


def test_the_cos_asks_with_rmmod_and_is_back_at_cpl0_in_its_own_tables():
    board, cos, loader, before = loaded()
    cpu, kernel = board.cpu, loader.kernel
    cos_state = kernel.cos_state
    (patched, original, _), *_ = kernel.patches.entries()
    block = kernel.base
    steps = at_events(board, "unload.", lambda: {
        "idt": cpu["idtr"][1], "cpl": cpu.cpl, "patch": board.memory.read(patched, 1)[0],
        "kernel": board.memory.read(block, 8) == b"VMKERNEL"})
    assert cpu.cpl == 0 and kernel.contains(cpu["idtr"][1])       # the kernel's, while loaded
    out = rmmod(cos)
    assert "vmkload: vmkernel unloaded; COS at CPL 0" in out and out.count("rmmod: ok\n") == 1
    # read back from the CPU: the COS's own tables, in its own memory, and CPL 0
    assert cpu["idtr"][1:3] == cos_state["idtr"][1:3] == (cos_layout.COS_IDT, 0x7FF)
    assert cpu["gdtr"][1:3] == cos_state["gdtr"][1:3] == (cos_layout.COS_GDT, 0x1F)
    assert cpu["tr"][:3] == cos_state["tr"][:3] and cpu["tr"][0] == cos_layout.COS_TSS_SEL
    assert cpu["cs"] == cos_layout.COS_CS and cpu.cpl == 0
    assert all(cpu[s] == cos_state[s] for s in ("ds", "es", "fs", "gs", "ss"))
    assert loader.kernel is None
    del board.trace.emit
    # claim 25 C's order, in what the machine held at each step: interrupt and fault handling
    # back (the COS's bytes, then its IDT in the CPU), then the devices, then the kernel removed
    kernel_idt, int3 = block + layout.IDT, 0xCC
    assert [(e.kind, seen) for e, seen in steps] == [
        ("unload.called", {"idt": kernel_idt, "cpl": 0, "patch": int3, "kernel": True}),
        ("unload.unpatch", {"idt": kernel_idt, "cpl": 0, "patch": original, "kernel": True}),
        ("unload.tables", {"idt": kernel_idt, "cpl": 0, "patch": original, "kernel": True}),
        ("unload.resumed", {"idt": cos_layout.COS_IDT, "cpl": 0, "patch": original, "kernel": True}),
        ("unload.devices", {"idt": cos_layout.COS_IDT, "cpl": 0, "patch": original, "kernel": True}),
        ("unload.freed", {"idt": cos_layout.COS_IDT, "cpl": 0, "patch": original, "kernel": False})]
    # the TSS descriptor the CPU's ltr used is busy again in the COS's GDT
    desc = decode_segment(board.memory.read(cos_layout.COS_GDT + cos_layout.COS_TSS_SEL, 8))
    assert desc.type == 0xB


def test_after_the_unload_nothing_traps_and_the_cos_works_through_its_own_drivers():
    board, cos, loader, _ = loaded()
    base = loader.kernel.base
    rmmod(cos)
    mark = len(board.trace.events)
    ticks = cos.ticks()
    assert cos.run_command("ticks").startswith("ticks\ncos: ticks ")      # console in and out
    keys = cos.var("KEYS")
    board.keyboard.press(b"\x1e")
    board.run(300_000)
    assert cos.ticks() > ticks                                             # its timer, its handler
    assert cos.var("KEYS") == keys + 1 and cos.var("LAST_KEY") == 0x1E    # its keyboard driver
    delivered = [e for e in board.trace.events[mark:] if e.kind == "cpu.deliver"]
    assert delivered and all(not base <= e["handler"] < base + layout.STACK_TOP for e in delivered)
    gate = decode_gate(board.memory.read(cos_layout.COS_IDT + 0x20 * 8, 8))
    assert {e["handler"] for e in delivered if e["vector"] == 0x20} == {gate.offset}
    # cli / lidt / in / out at CPL 0 no longer trap: nothing enters the kernel at all
    assert not [e for e in board.trace.events[mark:] if e.kind.startswith("kernel.")]
    assert cos.var("FAULTS") == 0


def test_the_patched_bytes_are_restored_and_the_patch_table_was_in_kernel_memory():
    board, cos, loader = booted()
    code_end = board.memory.read_u32(cos_layout.CODE_END)
    original = board.memory.read(cos_layout.COS_CODE, code_end - cos_layout.COS_CODE)
    cos.run_command("insmod", LIMIT)
    kernel = loader.kernel
    table = PatchTable(board.memory, kernel.base + layout.PATCHES)        # read from memory only
    entries = table.entries()
    assert len(entries) == board.memory.read_u32(kernel.base + layout.PATCHES) > 0
    for address, byte, mnemonic in entries:
        assert board.memory.read(address, 1) == b"\xcc"
        assert byte == {"pushfd": 0x9C, "popfd": 0x9D, "iretd": 0xCF}[mnemonic]
    rmmod(cos)
    assert board.memory.read(cos_layout.COS_CODE, len(original)) == original
    assert board.memory.read(cos_layout.MODULE_AREA, len(loader.module)) == loader.module
    unpatch = events(board, "unload.unpatch")[0]
    assert unpatch["restored"] == len(entries)


def test_the_kernel_block_is_cleared_and_given_back_and_nothing_points_into_it():
    board, cos, loader, _ = loaded()
    base, mem = loader.kernel.base, board.memory
    rmmod(cos)
    assert mem.read(base, layout.STACK_TOP) == bytes(layout.STACK_TOP)
    assert mem.read_u32(cos_layout.NEXT_FREE_PAGE) == base == cos_layout.PAGE_POOL
    assert mem.read_u32(cos_layout.RAM_TOP) == mem.size
    inside = lambda a: base <= a < base + layout.STACK_TOP
    cpu = board.cpu
    assert not any(inside(cpu[t][1]) for t in ("gdtr", "idtr", "tr")) and not inside(cpu["esp"])
    for v in range(256):                                   # the COS's IDT and GDT
        assert not inside(decode_gate(mem.read(cos_layout.COS_IDT + 8 * v, 8)).offset)
    for i in range(cos_layout.GDT_ENTRIES):
        assert not inside(decode_segment(mem.read(cos_layout.COS_GDT + 8 * i, 8)).base)
    assert "cos: next free page 0x00400000 ram top 0x01000000" in cos.run_command("mem")


def test_the_cos_fingerprint_before_the_load_equals_the_one_after_the_unload():
    board, cos, loader, before = loaded()
    rmmod(cos)
    after = fingerprint(board)
    assert before == after, "\n".join(differences(before, after, board))


def test_the_pic_gets_the_masks_the_cos_set_while_displaced():
    board, cos, loader, _ = loaded()
    imr = board.ports.read(0x21, 1)
    # the COS masks its keyboard line (IRQ 1) while displaced: it lands on its virtual PIC only
    cos.put_module(COS.make_module("init: in al, 0x21\nor al, 2\nout 0x21, al\nxor eax, eax\nret"))
    cos.run_command("insmod", LIMIT)
    assert loader.kernel.vcpu.imr & 2
    cos.put_module(loader.module)
    rmmod(cos)
    assert board.ports.read(0x21, 1) == (imr | 2) & 0xFF == board.pic.master.imr
    assert board.pic.master.vector_base == 0x20 and board.pic.slave.vector_base == 0x28


def test_refused_while_a_vm_runs_and_allowed_once_it_crashed():
    board, cos, loader, _ = loaded()
    kernel = loader.kernel
    vm = kernel.install_vm(lambda base: guests.console(base, "vm"), 0x8000, "vm")
    board.run(200_000)
    out = rmmod(cos)
    assert "vmkload: refused: 1 VM(s) still run (vm): stop them first" in out
    assert "rmmod: exit failed\n" in out and loader.kernel is kernel
    assert board.cpu.cpl == 0 and kernel.contains(board.cpu["idtr"][1])     # nothing changed
    assert board.memory.read(cos_layout.COS_CODE, 0x10000).count(b"\xcc") >= len(kernel.patches)
    board.run(200_000)
    assert vm.vmm.console                                                     # the VM goes on


def test_a_guest_issuing_the_unload_call_crashes_only_its_vm():
    board, cos, loader, _ = loaded()
    kernel = loader.kernel
    src = lambda base: f"mov eax, {unload.CALL}\nint 0x90\nl: jmp l"
    vm = kernel.install_vm(src, 0x8000, "caller")
    board.run(300_000)
    assert vm.state == "crashed" and loader.kernel is kernel
    assert not events(board, "unload.")
    out = rmmod(cos)                                   # its VM no longer runs: the COS may unload
    assert out.count("rmmod: ok\n") == 1 and board.cpu.cpl == 0


def test_unload_without_a_kernel_and_twice_are_clear_refusals():
    board, cos, loader = booted()
    before = fingerprint(board)
    out = rmmod(cos)
    assert "vmkload: refused: no vmkernel is loaded" in out and "rmmod: exit failed\n" in out
    cos.run_command("insmod", LIMIT)
    assert rmmod(cos).count("rmmod: ok\n") == 1
    out = rmmod(cos)
    assert "vmkload: refused: no vmkernel is loaded" in out
    assert len(events(board, "unload.freed")) == 1
    assert before == fingerprint(board), "\n".join(differences(before, fingerprint(board), board))


def test_the_cos_loads_again_after_an_unload_and_vms_run_again():
    board, cos, loader, _ = loaded()
    first = loader.kernel.base
    rmmod(cos)
    assert "insmod: ok" in cos.run_command("insmod", LIMIT)
    kernel = loader.kernel
    assert kernel.base == first and board.cpu.cpl == 0 and kernel.contains(board.cpu["idtr"][1])
    vm = kernel.install_vm(lambda base: guests.console(base, "again"), 0x8000, "again")
    board.run(400_000)
    assert bytes(vm.vmm.console).decode().startswith("hello from again")


def test_twenty_load_unload_cycles_keep_the_fingerprint_and_free_each_kernel():
    import gc
    import weakref
    board, cos, loader = booted()
    before = fingerprint(board)
    kernels = []
    for cycle in range(20):
        assert "insmod: ok" in cos.run_command("insmod", LIMIT), cycle
        kernels.append(weakref.ref(loader.kernel))
        assert rmmod(cos).count("rmmod: ok\n") == 1, cycle
        assert cos.run_command("ticks").startswith("ticks\ncos: ticks "), cycle
        after = fingerprint(board)
        assert before == after, f"cycle {cycle}:\n" + "\n".join(differences(before, after, board))
    assert len(events(board, "unload.freed")) == 20
    gc.collect()
    assert not [k for k in kernels if k() is not None]    # nothing keeps an unloaded kernel alive


def test_unload_while_scsi_requests_are_in_flight_waits_for_them_to_complete(tmp_path):
    from vmkit.hw.disk import DiskImage
    from vmkit.lessons.devices import BLOCK, kernel_request_block, ring_source
    board, cos, loader, _ = loaded(disk=DiskImage.create(tmp_path / "d.img", 64))
    kernel = loader.kernel
    scsi = kernel.shared["scsi0"]
    board.scsi.latency = 100_000                           # slow enough to be caught in flight
    done = []
    for i in range(3):                                     # the kernel's own writes, queued first
        kernel_request_block(board, 0x61000 + i * 64, 0x2A, 10 + i, 0x60000)
        scsi.submit(0x61000 + i * 64, done.append)
    rb = 0x7800                                            # then the COS's read: rung, not waited for
    cos.put_module(COS.make_module("init: call ring\nxor eax, eax\nret\n" + ring_source(0x28, 1, 1, 0x7400, rb)))
    cos.run_command("insmod", LIMIT)
    assert scsi.in_flight is not None and scsi.queue
    cos.put_module(loader.module)
    out = rmmod(cos)
    assert out.count("rmmod: ok\n") == 1
    waits = [e["why"] for e in events(board, "unload.wait")]
    assert waits and all("scsi0" in w for w in waits)
    assert len(done) == 3 and scsi.completed["cos"] == 1 and scsi.in_flight is None
    status, xfer = board.memory.read(rb + 2, 1)[0], board.memory.read_u32(rb + 16)
    assert status == 0 and xfer == BLOCK                   # the COS's request completed, in its memory
    assert board.scsi.ignored_doorbells == 0
    board.close()


def test_two_cpus_cpu1_is_parked_halted_with_if_clear_in_the_firmware_tables():
    board, cos, loader, before = loaded(cpus=2)
    cpu1 = board.cpus[1]
    assert not cpu1.halted or cpu1.interrupts_enabled      # running its system world
    out = rmmod(cos)
    assert out.count("rmmod: ok\n") == 1
    assert cpu1.halted and not cpu1.interrupts_enabled
    assert cpu1["gdtr"][1:3] == (0x500, 39) and cpu1["idtr"][1:3] == (0, 0)
    assert not cpu1["cr0"] & 0x80000000 and cpu1["cr3"] == 0
    assert cpu1.lapic.initial == 0                         # its timer stopped
    kinds = [e.kind for e in events(board, "unload.")]
    assert kinds[:4] == ["unload.called", "unload.park", "unload.wait", "unload.parking"]
    ticks = cos.ticks()
    board.run(300_000)
    assert cpu1.halted and cos.ticks() > ticks
    after = fingerprint(board)
    assert before == after, "\n".join(differences(before, after, board))
    assert "insmod: ok" in cos.run_command("insmod", LIMIT)       # and CPU 1 starts again
    board.run(100_000)
    assert not cpu1.halted or cpu1.interrupts_enabled


def test_a_line_the_cos_masked_while_displaced_stays_pending_in_the_real_pic():
    board, cos, loader, _ = loaded()
    cos.put_module(COS.make_module("init: in al, 0x21\nor al, 2\nout 0x21, al\nxor eax, eax\nret"))
    cos.run_command("insmod", LIMIT)
    keys = cos.var("KEYS")
    board.keyboard.press(b"\x1e")                          # IRQ 1, masked by the COS: pending
    board.run(50_000)
    assert loader.kernel.vcpu.pending & 2 and cos.var("KEYS") == keys
    cos.put_module(loader.module)
    rmmod(cos)
    assert events(board, "unload.devices")[0]["pending_left"] == "0x0002"
    assert board.pic.master.irr & 2 and board.pic.master.imr & 2     # latched, masked, not lost
    cos.put_module(COS.make_module("init: in al, 0x21\nand al, 0xfd\nout 0x21, al\nxor eax, eax\nret"))
    cos.run_command("insmod", LIMIT)                      # the COS unmasks it, at CPL 0: it arrives
    board.run(50_000)
    assert cos.var("KEYS") == keys + 1 and cos.var("LAST_KEY") == 0x1E


def test_an_interrupt_the_cos_may_take_is_injected_before_the_unload():
    board, cos, loader, _ = loaded()
    kernel = loader.kernel
    serial = cos.var("SERIAL_IRQS")
    module = loader.module
    exit_ = int.from_bytes(module[12:16], "little") + 16
    at = cos_layout.MODULE_AREA + module.index(b"\xcd\x90", exit_)        # the exit's int 0x90
    # a serial IRQ waiting for the COS just as it asks (a stimulus: the kernel normally injects
    # such a line at once, so this is the defensive path)
    fired = []

    def serial_irq_waits(cpu):
        if not fired:
            fired.append(cpu["eip"])
            kernel.vcpu.pending |= 1 << 4
    board.cpu.on_execute(at, serial_irq_waits)
    steps = at_events(board, "unload.", lambda: (cos.var("SERIAL_IRQS"), board.cpu["idtr"][1]))
    out = rmmod(cos)
    del board.trace.emit
    assert "rmmod: ok\n" in out
    kinds = [e.kind for e, _ in steps]
    assert kinds[0] == "unload.called" and "unload.wait" in kinds
    handled, idt = next(seen for e, seen in steps if e.kind == "unload.tables")
    assert handled > steps[0][1][0] > serial                       # its handler ran after it asked,
    assert idt == kernel.base + layout.IDT                         # before its own tables came back


def test_the_shared_nic_goes_back_to_the_cos_and_no_longer_uses_kernel_memory():
    from vmkit.hw.nic import CTRL, RX_BASE, TX_BASE
    board, cos, loader, _ = loaded(nics=1)
    kernel = loader.kernel
    nic = board.nics[0]
    assert kernel.contains(nic.io_read(RX_BASE, 4))       # the kernel's rings, while loaded
    base = kernel.base
    rmmod(cos)
    text = events(board, "unload.devices")[0]["nic"]
    assert text.startswith("nic0: reset") and "0 frame(s) queued for the kernel counted" in text
    assert nic.io_read(CTRL, 4) == 0                       # the COS never enabled it
    assert not base <= nic.io_read(RX_BASE, 4) < base + layout.STACK_TOP
    assert not base <= nic.io_read(TX_BASE, 4) < base + layout.STACK_TOP


def test_privileged_instructions_run_natively_after_the_unload():
    board, cos, loader, _ = loaded()
    rmmod(cos)
    mark = len(board.trace.events)
    out = cos.insmod(COS.make_module("init: cli\nsidt [0x7f00]\nlidt [0x7f00]\nin al, 0x21\n"
                                     "out 0x21, al\npushfd\npopfd\nsti\nxor eax, eax\nret"), LIMIT)
    assert "insmod: ok" in out and cos.var("FAULTS") == 0
    assert not [e for e in board.trace.events[mark:] if e.kind == "cpu.deliver" and e["vector"] < 32]
    assert board.memory.read(0x7f02, 4) == cos_layout.COS_IDT.to_bytes(4, "little")


def test_a_virtual_idt_in_kernel_memory_is_refused():
    # sidt does not trap at CPL 1: a COS that stored it and loaded it back (a trapped lidt) would
    # have the kernel's IDT as its own, and reinstating that would point it into freed memory.
    # (Such a COS no longer runs its own handlers, so the check is reached directly here.)
    board, cos, loader, _ = loaded()
    kernel = loader.kernel
    kernel.vcpu.idt_base = kernel.base + layout.IDT
    with pytest.raises(unload.Refused, match=r"the COS's IDT \(0x40a000\) is in the kernel's memory"):
        unload._check(kernel, board.cpu)


def test_the_unload_is_deterministic():
    texts = []
    for _ in range(2):
        board, cos, loader, _ = loaded(cpus=2)
        rmmod(cos)
        board.run(50_000)
        texts.append(board.trace.text())
    assert texts[0] == texts[1]
