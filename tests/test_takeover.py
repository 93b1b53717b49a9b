"""Claims 1-4, 28-30: the COS's driver loads the vmkernel, which displaces the COS."""
import re

import pytest

from vmkit.hw.board import Board, MachineStopped
from vmkit.hw.x86 import decode_segment, TSS_AVAILABLE, TSS_BUSY
from vmkit.cos import layout as cos_layout
from vmkit.cos.cos import COS
from vmkit.kernel import layout
from vmkit.kernel.image import build, HEADER, TAKEOVER
from vmkit.loader import Loader


def booted(image=None, **loader_options):
    board = Board()
    cos = COS.boot(board)
    board.run_until(lambda: board.memory.read_u32(cos_layout.READY), 2_000_000, "the COS's boot")
    return board, cos, Loader(board, image, **loader_options)


def insmod(board, cos, loader):
    cos.put_module(loader.module)
    cos.run_command("insmod", 3_000_000)


@pytest.fixture
def displaced():
    board, cos, loader = booted()
    insmod(board, cos, loader)
    assert loader.kernel is not None, board.trace.text(0, "load.refused")
    return board, cos, loader


def in_kernel(loader, address):
    return loader.kernel.contains(address)


def test_after_takeover_idtr_and_cpl_belong_to_the_kernel(displaced):
    board, cos, loader = displaced
    cpu = board.cpu
    assert in_kernel(loader, cpu["idtr"][1]) and in_kernel(loader, cpu["gdtr"][1])
    board.run(200_000)
    for _ in range(20):                    # sample the CPU as it runs: CPL 0 only in kernel code
        board.run(997)
        if cpu.cpl == 0:
            assert in_kernel(loader, cpu["eip"]), hex(cpu["eip"])
        else:
            assert cpu.cpl == 1 and not in_kernel(loader, cpu["eip"])
    delivered = board.trace.of("cpu.deliver")
    after = [e for e in delivered if e.time > board.trace.of("load.switched")[0].time]
    assert after and all(in_kernel(loader, e["handler"]) for e in after)


def test_console_output_continues_after_the_takeover(displaced):
    board, cos, loader = displaced
    text = cos.console()
    assert "vmkload: vmkernel running" in text
    ticks_before = cos.ticks()
    board.run(1_500_000)
    after = cos.console()[len(text):]
    assert "cos: tick" in after
    assert cos.ticks() > ticks_before
    assert board.trace.of("kernel.inject")          # the ticks reached the COS through the kernel


def test_cos_answers_commands_after_the_takeover(displaced):
    board, cos, loader = displaced
    mark = len(cos.console())
    cos.run_command("ticks", 3_000_000)
    assert "unknown" not in cos.console()[mark:]
    assert len(cos.console()) > mark + len("ticks")


PRIVILEGED = ["cli", "sti", "hlt", "lidt [0x20108]", "lgdt [0x20100]", "mov al, 0\nout 0x43, al"]


@pytest.mark.parametrize("instruction", PRIVILEGED)
def test_each_privileged_instruction_of_the_cos_traps(displaced, instruction):
    board, cos, loader = displaced
    cpu = board.cpu
    real = (cpu["idtr"], cpu["gdtr"])
    mark = board.trace.mark()
    module = COS.make_module(f"init:\n{instruction}\nsti\nret")
    cos.put_module(module)
    cos.run_command("insmod", 3_000_000)
    first = instruction.split()[0] if "out" not in instruction else "out"
    seen = [e for e in board.trace.since(mark, "kernel.emulate", "kernel.refused")
            if e["insn"].startswith(first)]
    assert seen, f"{instruction} did not trap to the kernel"
    gp = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 13]
    assert gp and all(in_kernel(loader, e["handler"]) for e in gp)
    assert (cpu["idtr"], cpu["gdtr"]) == real
    board.run(300_000)
    assert cos.ticks() > 0 and "cos: tick" in cos.console()[-200:]     # still alive, ticking
    cos_samples = []
    cos.type("help\n")                               # keep the COS busy, then sample it running:
    for _ in range(2000):                            # its real IF stays on (the kernel's to clear)
        board.run(7)
        if cpu.cpl == 1:
            cos_samples.append(cpu.interrupts_enabled)
    assert cos_samples and all(cos_samples)


def test_a_fault_in_the_cos_runs_a_kernel_handler_first(displaced):
    board, cos, loader = displaced
    mark = board.trace.mark()
    cos.put_module(COS.make_module("init:\nud2\nret"))
    cos.run_command("insmod", 3_000_000)
    board.run(100_000)
    delivered = [e for e in board.trace.since(mark, "cpu.deliver", "kernel.reflect")]
    ud = next(i for i, e in enumerate(delivered) if e.kind == "cpu.deliver" and e["vector"] == 6)
    assert in_kernel(loader, delivered[ud]["handler"])
    assert any(e.kind == "kernel.reflect" and e["vector"] == 6 for e in delivered[ud:])
    assert "COS: fault 6" in cos.console() or "fault" in cos.console().lower()


@pytest.mark.parametrize("damage, why", [
    (lambda img: b"NOTAKERN" + img[8:], "not a vmkernel image"),
    (lambda img: img[:-1] + bytes([img[-1] ^ 0xFF]), "checksum"),
    (lambda img: img[:12] + (len(img) + 0x10000).to_bytes(4, "little") + img[16:] + bytes(0x10000), "does not fit"),
])
def test_a_corrupt_kernel_image_is_refused_and_the_cos_runs_on(damage, why):
    board, cos, loader = booted(damage(build()))
    cpu = board.cpu
    before = (cpu["idtr"], cpu["gdtr"], cpu["tr"], cpu["cs"])
    insmod(board, cos, loader)
    refused = board.trace.of("load.refused")
    assert refused and why in refused[0]["why"]
    assert loader.kernel is None
    assert (cpu["idtr"], cpu["gdtr"], cpu["tr"], cpu["cs"]) == before
    assert "vmkload: refused" in cos.console()
    ticks = cos.ticks()
    board.run(500_000)
    assert cos.ticks() > ticks and cpu.cpl == 0    # the COS still owns the machine


def test_loading_a_second_time_is_refused(displaced):
    board, cos, loader = displaced
    idtr = board.cpu["idtr"]
    insmod(board, cos, loader)
    assert "already loaded" in board.trace.of("load.refused")[-1]["why"]
    assert board.cpu["idtr"] == idtr


def test_requests_for_system_resources(displaced):
    board, cos, loader = displaced
    module = COS.make_module(f"""
init:   xor eax, eax
        int 0x90
        mov [0x5000], eax
        mov eax, 1
        mov ecx, 2
        int 0x90
        mov [0x5004], eax
        mov eax, 2
        mov ebx, 0x5100
        mov ecx, 8
        int 0x90
        mov [0x5008], eax
        ret
""")
    cos.put_module(module)
    cos.run_command("insmod", 3_000_000)
    m = board.memory
    assert m.read(0x5000, 4) == b"VMK1"
    assert in_kernel(loader, m.read_u32(0x5004))          # memory the kernel controls
    count = m.read_u32(0x5008)
    assert count == 2 and m.read(0x5100, 3) == b"pic"


LOADING_MODULE = cos_layout.MODULE_AREA + 16          # the load-call module's first instruction


def test_the_load_switches_the_cpus_tables_and_the_cos_comes_back_at_cpl_1():
    """What the CPU holds, read from it: as the loading module is entered (the
    COS's tables, CPL 0), at the kernel's first instruction (the kernel's IDT,
    GDT, TSS and code segment, EIP in the kernel's block, interrupts off), and
    when the COS runs again right after its call to the loader (CPL 1)."""
    board, cos, loader = booted()
    insmod(board, cos, loader)
    base, entry = loader.kernel.base, loader.kernel.base + loader.kernel.image.entry
    board = Board()                                     # again (the same run), watching the CPU
    cos = COS.boot(board)
    board.run_until(lambda: board.memory.read_u32(cos_layout.READY), 2_000_000, "the COS's boot")
    cpu, seen = board.cpu, {}
    tables = lambda c: {r: c[r] for r in ("idtr", "gdtr", "tr", "cs", "eip", "esp", "eflags", "eax")}

    def called(c):
        if not c["eax"]:
            return                                      # the module's first call only asks
        seen["called"] = tables(c)
        back = board.memory.read_u32(c["esp"])         # where `call loading_module` returns
        seen.setdefault("back_at", back)
        c.on_execute(back, lambda c: seen.setdefault("back", tables(c)))
    cpu.on_execute(LOADING_MODULE, called)              # before the loader's own hook there
    cpu.on_execute(base + TAKEOVER, lambda c: seen.setdefault("takeover", tables(c)))
    cpu.on_execute(entry, lambda c: seen.setdefault("entry", tables(c)))
    loader = Loader(board)
    assert loader.entry == LOADING_MODULE
    insmod(board, cos, loader)
    assert loader.kernel is not None and loader.kernel.base == base
    before, at, back = seen["called"], seen["entry"], seen["back"]
    # the COS called: its own tables, CPL 0
    assert before["idtr"][1] == cos_layout.COS_IDT and before["gdtr"][1] == cos_layout.COS_GDT
    assert before["cs"] & 3 == 0 and not in_kernel(loader, before["eip"])
    # the loading module set only EIP: the kernel's first instruction runs in the COS's tables
    first = seen["takeover"]
    assert first["eip"] == base + TAKEOVER and first["cs"] == before["cs"]
    assert (first["gdtr"], first["idtr"], first["tr"]) == (before["gdtr"], before["idtr"], before["tr"])
    # the kernel's entry: the CPU's lgdt, lidt, ltr and far jump switched to the kernel's tables and code
    assert at["eip"] == entry and in_kernel(loader, at["eip"])
    assert at["cs"] == layout.KERNEL_CODE_SEL and not at["eflags"] & 0x200
    assert at["idtr"][1:3] == (base + layout.IDT, 256 * 8 - 1)
    assert at["gdtr"][1] == base + layout.GDT and at["gdtr"][2] >= layout.KERNEL_TSS_SEL + 7
    assert at["tr"][:2] == (layout.KERNEL_TSS_SEL, base + layout.TSS)
    # the COS again, displaced: at its return address, CPL 1, eax = 0 (loaded), IF on,
    # the kernel's tables still loaded
    assert back["eip"] == seen["back_at"] and back["esp"] == before["esp"] + 4
    assert back["cs"] == layout.COS_CODE_SEL | layout.COS_RPL and back["eax"] == 0
    assert back["eflags"] & 0x200 and back["idtr"] == at["idtr"] and back["tr"][0] == layout.KERNEL_TSS_SEL
    # and the trace tells the same story, in this order
    kinds = [e.kind for e in board.trace.events if e.kind.startswith(("load.", "kernel.init", "kernel.displaced"))]
    assert kinds[:6] == ["load.called", "load.copied", "load.idt", "load.switched", "kernel.init", "kernel.displaced"]


def tss_descriptor(board, base):
    return decode_segment(board.memory.read(base + layout.GDT + layout.KERNEL_TSS_SEL, 8))


def test_the_cpus_ltr_loads_tr_and_marks_the_descriptor_busy(monkeypatch):
    """The loading module writes the kernel's TSS descriptor *available*; the
    takeover's x86 (`ltr`) makes the CPU read it into TR's hidden part and mark
    it busy, so TR's base is the descriptor's because the CPU loaded it."""
    written = {}

    def load(self, cpu):
        real_load(self, cpu)
        if self.kernel is not None:                    # the Python part done, the CPU's not yet
            written["tss"] = tss_descriptor(self.board, self.kernel.base)
            written["tr"], written["gdtr"], written["cs"] = cpu["tr"], cpu["gdtr"], cpu["cs"]
    real_load = Loader.load
    monkeypatch.setattr(Loader, "load", load)
    board, cos, loader = booted()
    insmod(board, cos, loader)
    base, cpu = loader.kernel.base, board.cpu
    assert written["tss"].type == TSS_AVAILABLE and written["tss"].s == 0
    assert written["tr"][0] != layout.KERNEL_TSS_SEL and written["gdtr"][1] == cos_layout.COS_GDT
    assert written["cs"] == layout.COS_CODE_SEL                  # the takeover runs in the COS's CS
    after = tss_descriptor(board, base)
    assert after.type == TSS_BUSY                               # the CPU's ltr wrote the busy bit
    sel, tr_base, tr_limit, _ = cpu["tr"]
    assert (sel, tr_base, tr_limit) == (layout.KERNEL_TSS_SEL, after.base, after.limit)
    assert tr_base == base + layout.TSS
    switched = board.trace.of("load.switched")[0]
    assert switched["tr"].endswith(f"->{layout.KERNEL_TSS_SEL:#x}")
    assert switched["cs"].endswith(f"->{layout.KERNEL_CODE_SEL:#x}")
    assert switched["gdtr"].endswith(f"->{base + layout.GDT:#x}")


@pytest.mark.parametrize("corrupt, fault", [
    (lambda d: d[:5] + bytes([d[5] | 0x02]) + d[6:], "#GP(0x30)"),    # busy already: ltr refuses it
    (lambda d: d[:5] + bytes([0x92]) + d[6:], "#GP(0x30)"),           # a data segment, not a TSS
    (lambda d: d[:5] + bytes([d[5] & 0x7F]) + d[6:], "#NP(0x30)"),    # not present
])
def test_a_corrupt_tss_descriptor_fails_the_takeover_with_the_cpus_fault(monkeypatch, corrupt, fault):
    """The CPU checks the descriptor `ltr` names; a wrong one is its own fault,
    taken through the kernel's IDT (already loaded), and the load ends as a
    panic that names it, not a hang or a kernel running on a wrong TR."""
    def load(self, cpu):
        real_load(self, cpu)
        if self.kernel is not None:
            at = self.kernel.base + layout.GDT + layout.KERNEL_TSS_SEL
            self.board.memory.write(at, corrupt(self.board.memory.read(at, 8)), code=False)
    real_load = Loader.load
    monkeypatch.setattr(Loader, "load", load)
    board, cos, loader = booted()
    with pytest.raises(MachineStopped, match=r"takeover faulted: " + re.escape(fault) + r" at 0x[0-9a-f]+ \(ltr ax\)"):
        insmod(board, cos, loader)
    failed = board.trace.of("load.failed")
    assert failed and failed[0]["insn"] == "ltr ax" and failed[0]["error"] == layout.KERNEL_TSS_SEL
    assert not board.trace.of("load.switched") and not board.trace.of("kernel.init")
    assert board.cpu["tr"][0] != layout.KERNEL_TSS_SEL                # the CPU never loaded it
