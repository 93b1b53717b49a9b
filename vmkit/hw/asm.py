"""Assemble (keystone) and disassemble (capstone) 32-bit x86, Intel syntax.

Why this is more than a thin wrapper: keystone 0.9.2 in 32-bit mode emits an
operand-size 0x66 prefix (the 16-bit form) where GNU `as --32` does not, for
exactly the instructions a protected-mode kernel needs (all measured):

* ``lidt/lgdt/sidt/sgdt m`` -> ``66 0f 01 /r``: with 0x66 the CPU loads only
  a 24-bit table base.  GNU: ``0f 01 /3`` lidt, ``/2`` lgdt, ``/1`` sidt,
  ``/0`` sgdt.
* ``iret`` -> ``66 cf`` (pops 16-bit IP/CS/FLAGS); ``pushf``/``popf`` ->
  ``66 9c``/``66 9d`` (16-bit flags: the stack goes out of balance).
* ``push cs|ds|es|ss``, ``pop ds|es|ss`` -> ``66 0e`` etc. (fs/gs are fine);
  ``mov ds, ax`` -> ``66 8e d8`` and ``mov [m], ds`` -> ``66 8c /r``
  (harmless, but one byte longer than GNU, so labels would move).
* ``ljmp sel:off`` -> ``66 ea`` + 16-bit offset; ``jmp sel:off`` and
  ``call sel:off`` are rejected outright.
* Also unlike GNU: ``int 3`` -> ``cd 03`` (GNU: ``cc``); ``movsd``, ``rep
  movsd`` and ``jmp/call fword ptr [m]`` are rejected.

Keystone also truncates without a word where GNU warns or refuses (measured):
``mov al, 0x1234`` -> ``b0 34``, ``mov ax, 0x12345``, ``add al, 0x100``,
``mov byte ptr [m], 0x1ff`` (GNU: "shortened"), ``ret 0x10000``, ``enter
0x10000, 0`` and ``aam 256`` (GNU: an error); ``loop``/``jecxz`` to a label
more than 127 bytes away get a wrapped displacement (GNU: an error);
``.word 0x12345`` is dropped, no bytes and no error (and ``.word 1, 0x12345,
3`` never returns); ``push word 5`` (no ``ptr``) becomes a 16-bit push. So
each immediate whose size the instruction fixes is evaluated by keystone
itself at full width (a ``.quad`` appended to the program) and checked to
fit as GNU checks it (n bits hold -2**n .. 2**n - 1, so ``and al, ~0x80``
stays legal); each short-only jump's target is checked in the bytes;
``.word`` is assembled as ``.short`` (same bytes, range-checked); and a size
keyword without ``ptr`` is refused, as GNU refuses it.

So the source is rewritten before keystone sees it, keeping every instruction
as long as GNU's so labels land where GNU puts them: fixed encodings become
``.byte``/``.long``/``.word`` data; ``lidt m`` & co. become ``invlpg m``
(``0f 01 /7``: same modrm/sib/disp shape, no 0x66) and ``mov [m], ds``
becomes ``add dword ptr [m], ebx`` (``01 /3``; mov would use the modrm-less
``a3`` form for eax), each marked by a private label whose address is read
back from a table appended to the program, so the opcode/ModRM can be
patched afterwards.

Other keystone habits handled here (measured): ``;`` is a statement separator
rather than a comment and ``#`` after a directive is an error; errors never
say which line; some bad lines (``mov eax, qword``) make the *whole program*
return no bytes without raising; ``mov eax, [`` silently assembles as
``mov eax, [0]`` (so unbalanced brackets are rejected here).  Any
``ks_option`` call -- including setting ``sym_resolver`` -- switches the
engine to radix 16 for good (``push 10`` -> ``6a 10``; keystone issues
#481/#538/#571), so no option is ever set and the radix is checked on creation.
"""
import functools
import re
import struct

from capstone import CS_ARCH_X86, CS_MODE_32, Cs
from keystone import KS_ARCH_X86, KS_MODE_32, Ks, KsError

__all__ = ["AsmError", "assemble", "disassemble", "disassemble_one"]


class AsmError(ValueError):
    """Bad assembly; the message names the 1-based line number and its text."""


_ks = None
_cs = None


def _keystone():
    global _ks
    if _ks is None:
        # A fresh engine can inherit radix 16 from freed memory of another
        # engine that had an option set (keystone #481): retry, keeping the
        # bad ones alive so their memory is not handed out again.
        bad = []
        for _ in range(8):
            ks = Ks(KS_ARCH_X86, KS_MODE_32)
            if ks.asm("push 10")[0] == [0x6A, 0x0A]:
                _ks = ks
                break
            bad.append(ks)
        else:
            raise RuntimeError("keystone engine parses decimal numbers as hex")
    return _ks


def _capstone():
    global _cs
    if _cs is None:
        _cs = Cs(CS_ARCH_X86, CS_MODE_32)
    return _cs


# Whole instructions (lower case, single spaces) whose GNU encoding is fixed.
_BYTES = {"iret": "0xcf", "iretd": "0xcf", "pushf": "0x9c", "popf": "0x9d",
          "int 3": "0xcc", "int 0x3": "0xcc", "movsd": "0xa5",
          "rep movsd": "0xf3, 0xa5", "push es": "0x06", "push cs": "0x0e",
          "push ss": "0x16", "push ds": "0x1e", "pop es": "0x07",
          "pop ss": "0x17", "pop ds": "0x1f"}
_DT_REG = {"sgdt": 0, "sidt": 1, "lgdt": 2, "lidt": 3}
_SREG_NUM = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
_R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp"]
_R16 = {"ax", "bx", "cx", "dx", "si", "di", "sp", "bp"}
_FIX = "__asmfix_"
_LABELS = re.compile(r"^\s*((?:[\w.$@?]+\s*:(?!:)\s*)*)(.*)$")
_FAR = re.compile(r"^(?:far\s+)?([^\s:\[\]]+)\s*:\s*([^\[\]]+)$", re.I)
_SIZE_PTR = re.compile(r"\b(?:byte|word|dword|fword|qword|tbyte)\s+ptr\b", re.I)
_SYMDEF = re.compile(r"^\s*(?:\.(?:set|equ)\s+([\w.$@?]+)\s*,|([\w.$@?]+)\s*=)", re.I)
_PREFIXES = {0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x67}
_CHK = "__asmchk_"
_REG8 = {"al", "ah", "bl", "bh", "cl", "ch", "dl", "dh"}
_REGS = (_REG8 | _R16 | {"e" + r for r in _R16} | set(_SREG_NUM)
         | {"cr%d" % i for i in range(9)} | {"dr%d" % i for i in range(8)})
_SIZED = re.compile(r"^(?:byte|word)\s+ptr\b", re.I)
_BARE_SIZE = re.compile(r"\b(?:byte|word|dword|fword|qword|tbyte)\b(?!\s+ptr\b)", re.I)
# immediates whose width the instruction fixes, whatever the destination
_IMM_WIDTHS = {"ret": (16,), "retn": (16,), "retf": (16,), "enter": (16, 8),
               "aam": (8,), "aad": (8,), "int": (8,)}
# immediates sized by the destination does not hold for these (a count or a bit index)
_OWN_IMM = {"rcl", "rcr", "rol", "ror", "sal", "sar", "shl", "shr", "bt", "bts", "btr", "btc",
            "in", "out", "shld", "shrd"}
_SHORT_ONLY = {"loop", "loope", "loopz", "loopne", "loopnz", "jecxz", "jcxz"}


def _strip_comment(line):
    """Cut a `;` or `#` comment, ignoring those inside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in ";#":
            return line[:i]
    return line


def _operands(ops):
    """Split an operand list at top-level commas (not inside quotes or brackets)."""
    out, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(ops):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(ops[start:i].strip())
            start = i + 1
    return out + [ops[start:].strip()] if ops.strip() else []


def _is_immediate(op):
    """Not memory (brackets, `ptr`, a segment:offset), not a register."""
    return "[" not in op and ":" not in op and not re.search(r"\bptr\b", op, re.I) and op.lower() not in _REGS


def _sized_immediates(mnem, operands):
    """[(expression, bits)] for the immediates keystone would cut to 8 or 16 bits."""
    if mnem in _IMM_WIDTHS:
        return [(op, bits) for op, bits in zip(operands, _IMM_WIDTHS[mnem]) if _is_immediate(op)]
    if len(operands) < 2 or mnem in _OWN_IMM or not _is_immediate(operands[-1]):
        return []
    dest = operands[0].lower()
    if dest in _REG8 or _SIZED.match(dest) and dest.startswith("byte"):
        return [(operands[-1], 8)]
    if dest in _R16 or _SIZED.match(dest):
        return [(operands[-1], 16)]
    return []


def _checks_for(mnem, ops, checks):
    """Note what must be checked after assembly (see the module doc); returns
    the label to put before the instruction, or ''."""
    operands = _operands(ops)
    for expr, bits in _sized_immediates(mnem, operands):
        checks.append((None, expr, bits))
    if mnem in _SHORT_ONLY and len(operands) == 1:
        label = "%s%d" % (_CHK, len(checks))
        checks.append((label, operands[0], "short"))
        return label + ": "
    return ""


def _rewrite(line, fixes, checks=None):
    """One source line -> (keystone text, instruction part or '').

    Appends (label, old opcode, new opcode, ModRM reg or None) to `fixes`
    for each instruction that must be patched after assembly, and to
    `checks` (label or None, expression, bits or "short") what must be
    checked in the bytes keystone gives."""
    checks = [] if checks is None else checks
    labels, rest = _LABELS.match(_strip_comment(line)).groups()
    rest = rest.strip()
    if rest.count("[") != rest.count("]"):
        raise ValueError("unbalanced brackets")
    if re.match(r"\.word\b", rest, re.I):
        rest = ".short" + rest[5:]               # same bytes; keystone range-checks .short
    m = re.match(r"(\w+)\s*(.*)$", rest)
    if not m or rest.startswith("."):
        return labels + rest, rest
    bare = _BARE_SIZE.search(m.group(2))
    if bare:
        raise ValueError("size %r without `ptr`: write `%s ptr [...]` for memory; an immediate "
                         "takes its size from the instruction" % (bare.group(0), bare.group(0).lower()))
    labels += _checks_for(m.group(1).lower(), m.group(2).strip(), checks)
    mnem, ops = m.group(1).lower(), m.group(2).strip()
    low, key = ops.lower(), " ".join(rest.lower().split())
    far = _FAR.match(ops) if "jmp" in mnem or "call" in mnem else None
    mov_sreg = re.match(r"(.*\])\s*,\s*([a-z]s)$", low) if mnem == "mov" else None
    label = "%s%d" % (_FIX, len(fixes))
    if key in _BYTES:
        rest = ".byte " + _BYTES[key]
    elif far and far.group(1).lower() not in _SREG_NUM:
        sel, off = far.groups()
        rest = ".byte %#x; .long %s; .word %s" % (
            0xEA if "jmp" in mnem else 0x9A, off.strip(), sel)
    elif mnem in ("jmp", "call") and low.startswith("fword ptr"):
        rest = "l%s %s" % (mnem, ops)
    elif mnem in _DT_REG and ops:
        fixes.append((label, b"\x0f\x01", b"\x0f\x01", _DT_REG[mnem]))
        rest = "%s: invlpg %s" % (label, _SIZE_PTR.sub("", ops).strip())
    elif mov_sreg and mov_sreg.group(2) in _SREG_NUM:
        fixes.append((label, b"\x01", b"\x8c", None))
        dest = _SIZE_PTR.sub("", ops[:len(mov_sreg.group(1))]).strip()
        rest = "%s: add dword ptr %s, %s" % (label, dest,
                                             _R32[_SREG_NUM[mov_sreg.group(2)]])
    elif mnem == "mov" and re.match(r"[a-z]s\s*,\s*[a-z]{2}$", low) \
            and low[:2] in _SREG_NUM and low[-2:] in _R16:
        rest = "mov %s, e%s" % (low[:2], low[-2:])
    return labels + rest, m.group(0)


def _ks_asm(text, origin):
    enc, _ = _keystone().asm(text, origin)
    return bytes(enc or b"")


def _find_bad_line(lines, origin, whole_error):
    """Assemble each line alone, with every symbol the program defines set to
    0, and name the first line that fails (an undefined symbol fails here),
    or a label defined twice (keystone says only "symbol redefined")."""
    names, where = set(), {}
    for n, line in enumerate(lines, 1):
        text = _strip_comment(line)
        for label in (x.strip() for x in _LABELS.match(text).group(1).split(":")):
            if label in where:
                return AsmError("line %d: %r: label %r is already defined on line %d"
                                % (n, line.strip(), label, where[label]))
            if label:
                where[label] = n
        names.update(where)
        d = _SYMDEF.match(text)
        names.update(n for n in (d.groups() if d else ()) if n)
    prelude = "".join(".set %s, 0\n" % n for n in sorted(names))
    for n, line in enumerate(lines, 1):
        try:
            text, insn = _rewrite(line, [])
            if not _ks_asm(prelude + text, origin) and insn and not insn.startswith("."):
                raise ValueError("keystone produced no bytes")
        except (KsError, ValueError) as e:
            return AsmError("line %d: %r: %s" % (n, line.strip(), e))
    return AsmError("assembly failed: %s" % whole_error)


def assemble(source: str, origin: int = 0) -> bytes:
    """Assemble 32-bit Intel-syntax `source` loaded at `origin` (labels OK).

    `;` and `#` start comments.  Raises AsmError naming the bad line."""
    if not isinstance(source, str):
        raise TypeError("assemble takes x86 source text, not %s" % type(source).__name__)
    if not isinstance(origin, int) or isinstance(origin, bool) or not 0 <= origin <= 0xFFFFFFFF:
        raise ValueError("origin must be a 32-bit address, not %r" % (origin,))
    return _assembled(source, origin)


@functools.lru_cache(maxsize=256)
def _assembled(source, origin):
    """The bytes are a pure function of the text and the origin, and the same
    texts come back all the time: every machine that loads the kernel assembles
    its image (twice, at two origins, plus a label probe), every COS boot its
    code. So they are kept, per process (bytes: nothing a machine does can change
    them). A text that does not assemble raises each time; nothing is kept."""
    lines = source.splitlines()
    fixes, checks, line_of = [], [], []
    try:
        pairs = []
        for n, line in enumerate(lines, 1):
            pairs.append(_rewrite(line, fixes, checks))
            line_of += [n] * (len(checks) - len(line_of))
    except ValueError as e:
        raise _find_bad_line(lines, origin, e) from None
    body = [text for text, _ in pairs]
    if fixes:
        body.append(".long " + ", ".join(fix[0] for fix in fixes))
    quads = [".quad %s\n.long %s" % (expr, label or 0) for label, expr, _ in checks]
    try:                                         # each check: the value at full width, where it is
        out = bytearray(_ks_asm("\n".join(body + quads), origin))
    except KsError as e:
        try:                                     # an expression `.quad` cannot take: no check
            out, checks = bytearray(_ks_asm("\n".join(body), origin)), []
        except KsError:
            raise _find_bad_line(lines, origin, e) from None
    if not out and any(i and not i.startswith(".") for _, i in pairs):
        raise _find_bad_line(lines, origin, "keystone produced no bytes")
    if checks:
        table, out = out[-12 * len(checks):], out[:-12 * len(checks)]
        _check_sizes(out, origin, table, checks, [lines[n - 1] for n in line_of], line_of)
    if fixes:
        table, out = out[-4 * len(fixes):], out[:-4 * len(fixes)]
        for i, (_, old, new, reg) in enumerate(fixes):
            p = (struct.unpack_from("<I", table, 4 * i)[0] - origin) & 0xFFFFFFFF
            while out[p] in _PREFIXES:
                p += 1
            assert out[p:p + len(old)] == old, "asmfix: %s not at %#x" % (old.hex(), p)
            out[p:p + len(old)] = new
            if reg is not None:
                modrm = p + len(new)
                assert (out[modrm] >> 3) & 7 == 7, "asmfix: not invlpg at %#x" % p
                out[modrm] = (out[modrm] & 0xC7) | (reg << 3)
    return bytes(out)


def _check_sizes(out, origin, table, checks, texts, numbers):
    """Refuse what keystone cut short: an immediate that does not fit its field
    (n bits hold -2**n .. 2**n - 1, GNU's rule), a short jump out of reach."""
    for i, (label, expr, bits) in enumerate(checks):
        value, at = struct.unpack_from("<qI", table, 12 * i)
        where = "line %d: %r: " % (numbers[i], texts[i].strip())
        if bits == "short":
            p = (at - origin) & 0xFFFFFFFF
            got = _capstone().disasm_lite(bytes(out[p:p + 4]), at, 1)
            target = next((int(op, 16) for *_, op in got), None)
            if target != value & 0xFFFFFFFF:
                raise AsmError(where + "%s is out of reach of a short jump (-128..127 bytes)" % expr)
        elif not -(1 << bits) <= value < 1 << bits:
            shown = expr if re.fullmatch(r"-?(?:0x[0-9a-f]+|\d+)", expr, re.I) else "%s = %#x" % (expr, value)
            raise AsmError(where + "immediate %s does not fit in %d bits (%d..%d)"
                           % (shown, bits, -(1 << bits), (1 << bits) - 1))


def disassemble(code: bytes, origin: int = 0, count: int | None = None) -> list[tuple[int, str]]:
    """(address, "mnemonic op_str") pairs; stops silently at undecodable bytes.

    Note: capstone 5 prints 66 0f 01 18 as plain "lidt [eax]" (and 66 1e as
    "push ds"), so disassembly cannot reveal the 16-bit forms fixed above."""
    return [(a, ("%s %s" % (mn, op)).strip())
            for a, _, mn, op in _capstone().disasm_lite(bytes(code), origin, count or 0)]


def disassemble_one(code: bytes, address: int) -> str:
    """The first instruction of `code` as "mnemonic op_str", or "(bad)"."""
    for _, _, mn, op in _capstone().disasm_lite(bytes(code), address, 1):
        return ("%s %s" % (mn, op)).strip()
    return "(bad)"
