"""Where Unicorn 2.1.4 keeps the exception state it never clears.

Unicorn hands every `int n` and exception to our hook instead of
delivering it, so QEMU's own delivery code, which resets
`env->old_exception` after each delivered fault, never runs: the second
contributory fault of a run then arrives as a double fault (#DF) and the
third ends emulation silently (measured). The record lives in the CPU
context that `context_save` copies out, so we can read and reset it.

Rather than hard-code offsets into CPUX86State, we find them once per
process by provoking a known software interrupt and a known #GP on a
scratch CPU and comparing the two saved contexts:
  - error_code    (0 for `int`, 0x30 for #GP on selector 0x33)
  - is_int        (1 for `int n`, 0 for a fault): tells them apart, since
                  `int 13` and a real #GP reach the hook with the same number
  - old_exception (0xffffffff after `int`, 13 after the #GP)
"""
import ctypes
import functools
import struct

from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR
from unicorn.unicorn_py3.unicorn import uclib as _uclib

_context_save, _context_restore = _uclib.uc_context_save, _uclib.uc_context_restore


class Offsets:
    def __init__(self, error_code, is_int, old_exception):
        self.error_code, self.is_int, self.old_exception = error_code, is_int, old_exception


def _context_at_interrupt(code):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    got = []

    def hook(uc, intno, _):
        got.append(bytes(uc.context_save()))
        uc.emu_stop()
    uc.hook_add(UC_HOOK_INTR, hook)
    uc.emu_start(0x1000, 0xFFFF, count=10)
    return got[0]


def _candidates():
    soft = _context_at_interrupt(bytes([0xCD, 0x0D, 0xF4]))              # int 13
    # mov ax, 0x33 ; mov ds, ax : selector 0x33 lies past the (empty) GDT -> #GP(0x30)
    fault = _context_at_interrupt(bytes([0x66, 0xB8, 0x33, 0x00, 0x8E, 0xD8, 0xF4]))
    words = lambda b: struct.unpack(f"<{len(b) // 4}I", b)
    diffs = [(i * 4, a, b) for i, (a, b) in enumerate(zip(words(soft), words(fault))) if a != b]
    find = lambda pred: {off for off, a, b in diffs if pred(a, b)}
    return (find(lambda a, b: a == 0 and b == 0x30), find(lambda a, b: a == 1 and b == 0),
            find(lambda a, b: a == 0xFFFFFFFF and b == 13))


@functools.lru_cache(maxsize=1)
def offsets():
    """Intersect three independent calibrations: the saved contexts also hold
    host pointers, which can match a pattern by chance once (seen once under
    load), never at the same offset three times."""
    err, is_int, old = _candidates()
    for _ in range(2):
        e, i, o = _candidates()
        err, is_int, old = err & e, is_int & i, old & o
    if len(err) != 1 or len(is_int) != 1 or len(old) != 1:
        raise RuntimeError("cannot locate Unicorn's exception record in its CPU context; "
                           f"this Unicorn differs from 2.1.4 (candidates {err} {is_int} {old})")
    return Offsets(err.pop(), is_int.pop(), old.pop())


def _saved(uc):
    """The CPU's context saved now, as (the context, its address): into one context
    allocated per Unicorn instance and saved into again (uc_context_save), read in
    place. A new context per read cost an allocation, a free and a 5.6 KB copy to
    bytes: ~2.4 µs, four times this, and every fault reads it and clears it."""
    ctx = uc.__dict__.get("_vmkit_context")
    if ctx is None:
        ctx = uc._vmkit_context = uc.context_save()
    else:
        _uclib.uc_context_save(uc._uch, ctx.context)
    return ctx, ctx.context.value


def _u32(address):
    return ctypes.c_uint32.from_address(address).value


def read_exception(uc):
    """(is_int, error_code) of the exception now reaching the interrupt hook."""
    o = offsets()
    _, at = _saved(uc)
    return _u32(at + o.is_int) == 1, _u32(at + o.error_code)


def clear_exception_record(uc):
    """Do what QEMU does after delivering a fault: forget it (old_exception = -1)."""
    ctx, at = _saved(uc)
    ctypes.memmove(at + offsets().old_exception, b"\xff" * 4, 4)
    uc.context_restore(ctx)


def take_exception(uc):
    """read_exception, and for an exception (not an `int`) clear_exception_record, with one
    context save (each is a 5.6 KB copy; the interrupt hook needs both for every fault).
    The three fields are read and written through ctypes views made once into the context
    kept for this Unicorn instance (_saved's: saved into again, never moved)."""
    views = uc.__dict__.get("_vmkit_take")
    if views is None:
        views = uc._vmkit_take = _take_views(uc)
    uch, context, is_int_at, error_at, old_at = views
    _context_save(uch, context)
    is_int = is_int_at.value == 1
    error = error_at.value
    if not is_int:
        old_at.value = 0xFFFFFFFF
        err = _context_restore(uch, context)
        if err:
            raise UcError(err)
    return is_int, error


def _take_views(uc):
    """take_exception's: the handle, the kept context, and views of is_int, error_code and
    old_exception in it."""
    o = offsets()
    ctx, at = _saved(uc)
    view = lambda offset: ctypes.c_uint32.from_address(at + offset)
    return uc._uch, ctx.context, view(o.is_int), view(o.error_code), view(o.old_exception)


# ---- sti's interrupt shadow ------------------------------------------------------
# After `sti`, x86 takes no interrupt before the next instruction has run (so
# `sti; hlt` cannot lose a wake-up). QEMU keeps that as a bit of env->hflags
# (HF_INHIBIT_IRQ, 0x8), saved in the context; found like the fields above: the
# word whose bit 3 is set after `sti` and clear after `nop` and after `sti; nop`.
INHIBIT_IRQ = 0x8


def _context_after(code, count):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0xFFFF, count=count)
    return struct.unpack("<1402I", bytes(uc.context_save())[:1402 * 4])


@functools.lru_cache(maxsize=1)
def inhibit_offset():
    nop, sti, after = (_context_after(b"\x90\x90\x90", 1), _context_after(b"\xfb\x90\x90", 1),
                       _context_after(b"\xfb\x90\x90", 2))
    found = [4 * i for i, (a, b, c) in enumerate(zip(nop, sti, after))
             if a ^ b == INHIBIT_IRQ and c == a]
    if len(found) != 1:
        raise RuntimeError(f"cannot locate Unicorn's interrupt-inhibit flag (candidates {found})")
    return found[0]


def irq_inhibited(uc):
    """True right after `sti` (or `mov ss`): the CPU may not take an interrupt yet. (Asked
    before each interrupt the board delivers: a view of the flag's word made once into the
    context kept for this Unicorn instance, saved into again.)"""
    view = uc.__dict__.get("_vmkit_inhibit")
    if view is None:
        _, at = _saved(uc)
        view = uc._vmkit_inhibit = ctypes.c_uint32.from_address(at + inhibit_offset())
    else:
        _context_save(uc._uch, uc._vmkit_context.context)
    return bool(view.value & INHIBIT_IRQ)


# ---- the hidden part of the segment registers ---------------------------------------
# Unicorn's reg_read gives only a segment register's selector; the base, limit and
# attributes the CPU loaded from the descriptor (the "hidden" segment cache) are in
# QEMU's CPUX86State, which context_save copies out: segs[6], in QEMU's order ES CS SS
# DS FS GS, each a SegmentCache {u32 selector; u32 pad; u64 base; u32 limit; u32 flags},
# 24 bytes. Measured (Unicorn 2.1.4, x86-64 build, 32-bit mode): segs[] at context offset
# 0xE0 (224), then LDT, TR, GDT, IDT in the same shape (GDTR's base at 0x1B0+8 = 440);
# `limit` is the byte limit (G already applied), `flags` the descriptor's second dword
# as loaded (base bits 16-31 included, the accessed bit set). Found as the fields above
# are: a scratch CPU loads six selectors whose descriptors have distinct bases and limits,
# and the one offset where all six records sit in that order is the array's.
SEGMENT_ORDER = ("es", "cs", "ss", "ds", "fs", "gs")
SEGMENT_CACHE = struct.Struct("<I4xQII")


def _segment_probe():
    from unicorn import x86_const as X
    from .x86 import encode_segment, CODE_RX, DATA_RW
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    expect = {}
    table = bytearray(8)
    for i, name in enumerate(SEGMENT_ORDER, 1):
        base, limit = 0x01234000 + 0x111 * i, 0x5000 + 0x100 * i - 1
        table += encode_segment(base, limit, CODE_RX if name == "cs" else DATA_RW, 0, g=0)
        expect[name] = (8 * i, base, limit)
    uc.mem_write(0x1000, bytes(table))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x1000, len(table) - 1, 0))
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    for name in ("cs",) + tuple(n for n in SEGMENT_ORDER if n != "cs"):
        uc.reg_write(getattr(X, "UC_X86_REG_" + name.upper()), expect[name][0])
    return bytes(uc.context_save()), [expect[n] for n in SEGMENT_ORDER]


@functools.lru_cache(maxsize=1)
def segment_cache_offset():
    raw, expect = _segment_probe()
    size = SEGMENT_CACHE.size
    found = [at for at in range(0, len(raw) - 6 * size, 4)
             if all(SEGMENT_CACHE.unpack_from(raw, at + i * size)[:3] == e for i, e in enumerate(expect))]
    if len(found) != 1:
        raise RuntimeError("cannot locate Unicorn's segment cache in its CPU context; "
                           f"this Unicorn differs from 2.1.4 (candidates {found})")
    return found[0]


def segment_cache(uc, name):
    """(selector, base, limit, flags) of segment register `name` as the CPU holds it."""
    at = segment_cache_offset() + SEGMENT_ORDER.index(name) * SEGMENT_CACHE.size
    return SEGMENT_CACHE.unpack_from(bytes(uc.context_save()), at)
