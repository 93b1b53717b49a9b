"""unicorn_quirks.take_exception: what the interrupt hook reads of Unicorn's exception record
(is it an `int`, the error code) and, for an exception, the record cleared, in one context save:
the same answers and the same context as read_exception followed by clear_exception_record."""
import struct

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR

from vmkit.hw import unicorn_quirks

INT_13 = bytes([0xCD, 0x0D, 0xF4])
# mov ax, 0x33 ; mov ds, ax: selector 0x33 lies past the (empty) GDT -> #GP(0x30)
GP_0x30 = bytes([0x66, 0xB8, 0x33, 0x00, 0x8E, 0xD8, 0xF4])


def _in_hook(code, read):
    """Run `code` on a bare Unicorn; in its interrupt hook, `read(uc)`; then the words of the
    context left behind."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    got = []

    def hook(uc, intno, _):
        got.append((intno, read(uc)))
        got.append(bytes(uc.context_save()))
        uc.emu_stop()
    uc.hook_add(UC_HOOK_INTR, hook)
    uc.emu_start(0x1000, 0xFFFF, count=10)
    (vector, answer), context = got
    return vector, answer, context


def _old_way(uc):
    answer = unicorn_quirks.read_exception(uc)
    if not answer[0]:
        unicorn_quirks.clear_exception_record(uc)
    return answer


def _old_exception(context):
    return struct.unpack_from("<I", context, unicorn_quirks.offsets().old_exception)[0]


def test_a_fault_is_read_and_its_record_cleared_as_the_two_calls_did():
    vector, answer, context = _in_hook(GP_0x30, unicorn_quirks.take_exception)
    assert vector == 13 and answer == (False, 0x30)
    assert _old_exception(context) == 0xFFFFFFFF          # forgotten, as QEMU does after delivery
    assert (vector, answer) == _in_hook(GP_0x30, _old_way)[:2]


def test_an_int_is_read_and_its_context_left_as_it_was():
    vector, answer, context = _in_hook(INT_13, unicorn_quirks.take_exception)
    assert vector == 13 and answer[0] is True
    untouched = _in_hook(INT_13, lambda uc: None)[2]
    assert _old_exception(context) == _old_exception(untouched) == 0xFFFFFFFF
