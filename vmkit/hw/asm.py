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


def _rewrite(line, fixes):
    """One source line -> (keystone text, instruction part or '').

    Appends (label, old opcode, new opcode, ModRM reg or None) to `fixes`
    for each instruction that must be patched after assembly."""
    labels, rest = _LABELS.match(_strip_comment(line)).groups()
    rest = rest.strip()
    if rest.count("[") != rest.count("]"):
        raise ValueError("unbalanced brackets")
    m = re.match(r"(\w+)\s*(.*)$", rest)
    if not m or rest.startswith("."):
        return labels + rest, rest
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
    0, and name the first line that fails (an undefined symbol fails here)."""
    names = set()
    for line in lines:
        text = _strip_comment(line)
        names.update(n.strip() for n in _LABELS.match(text).group(1).split(":") if n.strip())
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
    lines = source.splitlines()
    fixes = []
    try:
        pairs = [_rewrite(line, fixes) for line in lines]
    except ValueError as e:
        raise _find_bad_line(lines, origin, e) from None
    body = [text for text, _ in pairs]
    if fixes:
        body.append(".long " + ", ".join(fix[0] for fix in fixes))
    try:
        out = bytearray(_ks_asm("\n".join(body), origin))
    except KsError as e:
        raise _find_bad_line(lines, origin, e) from None
    if not out and any(i and not i.startswith(".") for _, i in pairs):
        raise _find_bad_line(lines, origin, "keystone produced no bytes")
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
