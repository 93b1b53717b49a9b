"""The hw layer's small fast paths give what the general path gives, on real devices and CPUs."""
import itertools

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32

from vmkit.hw import unicorn_quirks
from vmkit.hw.board import Board


def test_the_pics_quick_no_gives_the_same_answer_as_asking_both_chips():
    """PICPair.has_request settles "nothing unmasked requested on either chip" without
    _request; every other case goes on to it. Compared with _request over request, mask and
    in-service patterns on both chips."""
    board = Board(memory=1 << 16)
    pic = board.pic
    patterns = (0, 0x01, 0x04, 0x05, 0x80, 0xFF)
    for m_irr, m_imr, m_isr, s_irr, s_imr, s_isr in itertools.product(patterns, repeat=6):
        pic.master.irr, pic.master.imr, pic.master.isr = m_irr, m_imr, m_isr
        pic.slave.irr, pic.slave.imr, pic.slave.isr = s_irr, s_imr, s_isr
        assert pic.has_request() == (pic._request()[0] is not None)


def _inhibited_from_a_fresh_context(uc):
    """The flag read as before: from a new context's bytes."""
    raw = bytes(uc.context_save())
    at = unicorn_quirks.inhibit_offset()
    return bool(int.from_bytes(raw[at:at + 4], "little") & unicorn_quirks.INHIBIT_IRQ)


def test_the_sti_shadow_read_through_the_kept_view_is_the_contexts_flag():
    """irq_inhibited saves into the context kept for the Unicorn instance and reads the flag
    through a view made once: after `sti` (set), after the next instruction (clear), after
    `sti` again (set), and after the nops that follow (clear)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    code = bytes([0xFB, 0x90, 0xFB, 0x90, 0x90])            # sti nop sti nop nop
    uc.mem_write(0x1000, code)
    seen = []
    at = 0x1000
    for length in (1, 1, 1, 1, 1):
        uc.emu_start(at, 0xFFFF, count=1)
        at += length
        seen.append((unicorn_quirks.irq_inhibited(uc), _inhibited_from_a_fresh_context(uc)))
    assert [a for a, _ in seen] == [b for _, b in seen]
    assert [a for a, _ in seen] == [True, False, True, False, False]
