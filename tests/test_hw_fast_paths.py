"""The hardware layer's fast paths give what the plain ways give: registers read in one batch
(plain and table registers into one buffer), a register read into a scratch as wide as
Unicorn writes it, values packed in one call, small linear reads into kept buffers, and
the exception record taken through views into a kept context."""
import pytest
from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR
from unicorn.x86_const import UC_X86_REG_EIP

from vmkit.hw import unicorn_quirks
from vmkit.hw.board import Board
from vmkit.hw.mmu import LinearFault
from vmkit.hw.registers import GENERAL, SEGMENTS, TABLES

PLAIN = GENERAL + SEGMENTS + ("eip", "eflags", "cr0", "cr3")


def _set(cpu, seed):
    """Distinct values in every register a batch reads (tables with every field set)."""
    cpu.write(**{name: (seed * 0x01010101 + i) & 0xFFFFFFFF for i, name in enumerate(GENERAL)})
    cpu.write(eip=0x1000 + seed, eflags=0x202 | (seed & 1) << 11)
    cpu["gdtr"] = (0, 0x10000 + seed, 0x57 + seed, 0)
    cpu["idtr"] = (0, 0x20000 + seed, 0x7FF, 0)


def _one_by_one(cpu, plain, tables):
    return [cpu[n] for n in plain], [cpu[t] for t in tables]


@pytest.mark.parametrize("plain, tables", [
    (("ss", "cr3", "cr0", "eflags", "cs"), TABLES),
    (("cs", "eflags", "ss", "esp", "cr0"), ("idtr", "gdtr", "tr")),
    ((), ("gdtr", "ldtr", "idtr", "tr")),
    (("esp",), ()),
    (GENERAL, ("idtr",)),
])
def test_read_with_tables_gives_what_each_register_read_gives(plain, tables):
    b = Board()
    cpu = b.cpus[0]
    for seed in (7, 0, 0x7F):            # again with other values: the kept buffer cleared between
        _set(cpu, seed)
        got = cpu.read_with_tables(plain, tables)
        assert got == _one_by_one(cpu, plain, tables)
        assert all(type(t) is tuple and len(t) == 4 for t in got[1])


def test_a_segment_read_after_a_wider_register_holds_the_selector_only():
    """Measured (Unicorn 2.1.4, 32-bit mode): a segment register is written as 2 bytes, the
    others as 4; each is read into a scratch of that width, never cleared: a segment
    read right after a register of all ones must not keep that register's high bytes."""
    b = Board()
    cpu = b.cpus[0]
    cpu.write(eax=0xFFFFFFFF, ebx=0x12345678)
    for name in SEGMENTS:
        assert cpu["eax"] == 0xFFFFFFFF
        assert cpu[name] == 0                      # a firmware board's selectors
    assert cpu["ebx"] == 0x12345678 and cpu["eflags"] & 2


def test_the_plain_registers_read_one_by_one_and_in_a_batch_agree():
    b = Board()
    cpu = b.cpus[0]
    _set(cpu, 0x33)
    assert cpu.read(*PLAIN) == [cpu[n] for n in PLAIN]
    cpu.write(eax=0xFFFFFFFF)
    assert cpu.read("eax", "cs") == [0xFFFFFFFF, 0]


def test_a_batch_write_masks_what_does_not_fit_as_before():
    b = Board()
    cpu = b.cpus[0]
    cpu.write(esi=-1, edi=(1 << 70) + 5)            # packed in one call, or masked as one write is
    assert cpu.read("esi", "edi") == [0xFFFFFFFF, 5]
    cpu.write(esi=3, edi=4)
    assert cpu.read("esi", "edi") == [3, 4]
    with pytest.raises(TypeError):
        cpu.write(esi="three")


def test_small_linear_reads_in_a_kept_buffer_give_each_its_own_bytes():
    b = Board()
    cpu = b.cpus[0]
    b.memory.write(0x3000, bytes(range(64)))
    first = cpu.read_linear(0x3000, 8)
    second = cpu.read_linear(0x3008, 8)             # the same length: the same buffer
    assert (first, second) == (bytes(range(8)), bytes(range(8, 16)))
    assert cpu.read_linear(0x3000, 3) == bytes(range(3))
    assert cpu.read_linear(0x3000, 200)[:64] == bytes(range(64))
    cpu.write_linear(0x3000, bytearray(b"\xAA\xBB"))
    assert b.memory.read(0x3000, 2) == b"\xAA\xBB"
    with pytest.raises(LinearFault):
        cpu.read_linear(b.memory.size + 0x1000, 8)


def _faults_in_one_run(code, times):
    """take_exception in the interrupt hook of one Unicorn, `times` faults in a row (the
    views made at the first are used again): its answers and the record after each."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code * times + b"\xF4")
    got = []
    old_at = unicorn_quirks.offsets().old_exception

    def hook(uc, intno, _):
        answer = unicorn_quirks.take_exception(uc)
        context = bytes(uc.context_save())
        got.append((intno, answer, int.from_bytes(context[old_at:old_at + 4], "little")))
        uc.reg_write(UC_X86_REG_EIP, 0x1000 + len(code) * len(got))     # on to the next one
    uc.hook_add(UC_HOOK_INTR, hook)
    uc.emu_start(0x1000, 0xFFFF, count=4 * times)
    return got


def test_faults_one_after_another_each_read_as_itself_and_forgotten():
    """Three #GPs in one run: each reaches the hook as #GP(0x30), not #DF, as the record of
    the one before was cleared through the kept views."""
    mov_ds = bytes([0x66, 0xB8, 0x33, 0x00, 0x8E, 0xD8])       # mov ax, 0x33; mov ds, ax
    got = _faults_in_one_run(mov_ds, 3)
    assert got == [(13, (False, 0x30), 0xFFFFFFFF)] * 3


def _highest_by_loop(irr, imr, isr, cascade):
    """The 8259A's fixed priority, line by line: the lowest unmasked request, unless a line of
    that or higher priority (lower number) is in service."""
    irr |= 4 if cascade else 0
    for i in range(8):
        if isr & (1 << i):
            return None
        if irr & ~imr & (1 << i):
            return i
    return None


def test_the_pic_picks_the_line_the_fixed_priority_picks():
    from vmkit.hw.pic import PIC8259
    chip = PIC8259.__new__(PIC8259)
    for irr in range(256):
        for imr in (0, 0x01, 0x04, 0x81, 0xF0, 0xFE, 0xFF):
            for isr in (0, 0x01, 0x02, 0x08, 0x40, 0x80, 0x90):
                for cascade in (False, True):
                    chip.irr, chip.imr, chip.isr = irr, imr, isr
                    assert chip.highest_request(cascade) == _highest_by_loop(irr, imr, isr, cascade)
