"""Tests for vmkit.hw.asm: keystone output checked against GNU as, plus the
fixes for keystone 0.9.2's stray 0x66 prefixes, error reporting and capstone."""
import os
import shutil
import struct
import subprocess
import tempfile

import pytest

from vmkit.hw.asm import AsmError, assemble, disassemble, disassemble_one

# Each snippet is assembled by both vmkit and GNU `as --32` at origin 0 (as
# leaves R_386_32 relocations for absolute label references, but i386 ELF
# uses REL, so the addend stored in .text is the label's offset: the bytes
# equal those of a program loaded at 0).
GNU_CORPUS = [
    "lidt [eax]", "lidt [idtr]\nidtr: .word 0x7ff\n.long 0", "lgdt [0x1000]",
    "sidt [ebx+4]", "sgdt [esp]", "lidt fword ptr [eax]", "lgdt fs:[eax]",
    "lidt [eax+ebx*2+0x100]", "iret", "iretd",
    "push cs", "push ds", "push es", "push ss", "push fs", "push gs",
    "pop ds", "pop es", "pop ss", "pop fs", "pop gs",
    "jmp 0x08:start\nstart: nop", "jmp 0x08:0x1234", "call 0x08:start\nstart: ret",
    "call 0x10:0x12345678", "ljmp 0x08:0x1234", "lcall 0x08:0x1234",
    "cli", "sti", "hlt", "ltr ax", "lldt ax", "mov cr0, eax", "mov cr3, eax",
    "mov eax, cr0", "in al, dx", "out 0x20, al", "out dx, eax", "pushfd", "popfd",
    "int 0x30", "int3", "int 3", "into", "mov ds, ax", "mov ss, ax", "mov es, bx",
    "mov fs, ax", "mov gs, dx", "mov ds, eax", "mov ds, word ptr [eax]", "mov ax, ds",
    "mov eax, ds", "mov [eax], ds", "mov word ptr fs:[eax+4], gs", "mov [x], es\nx: nop",
    "pushf", "popf", "movsd", "rep movsd", "rep movsb", "rep stosd",
    "jmp fword ptr [eax]", "call fword ptr [eax]", "ljmp [eax]", "retf",
    "lea eax, [ebx+ecx*4+8]", "push 10", "mov eax, [ebp+12]", "mov ecx, 010",
    "mov ecx, 10\nagain: dec ecx\njnz again\nhlt",
    # a small boot-style program mixing fixed forms, labels and data
    "cli\nlgdt [gdtr]  ; load it\nmov eax, cr0\nor eax, 1\nmov cr0, eax\n"
    "jmp 0x08:pm # far\npm: mov ax, 0x10\nmov ds, ax\npush ds\npop es\n"
    "lidt [idtr]\niret\ngdtr: .word 23\n.long gdt\nidtr: .word 0\n.long 0\n"
    "gdt: .long 0, 0\n",
]


def gnu_as(source):
    if not (shutil.which("as") and shutil.which("objcopy")):
        pytest.skip("GNU as/objcopy not found")
    with tempfile.TemporaryDirectory() as d:
        s, o, b = (os.path.join(d, n) for n in ("x.s", "x.o", "x.bin"))
        with open(s, "w") as f:
            # in GNU x86 syntax `;` separates statements; `#` is the comment
            f.write(".intel_syntax noprefix\n" + source.replace(";", "#") + "\n")
        r = subprocess.run(["as", "--32", "-o", o, s], capture_output=True, text=True)
        if r.returncode and "32" in r.stderr and "not supported" in r.stderr:
            pytest.skip("as has no --32 support: " + r.stderr.strip())
        assert r.returncode == 0, r.stderr
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", o, b], check=True)
        with open(b, "rb") as f:
            return f.read()


@pytest.mark.parametrize("source", GNU_CORPUS)
def test_matches_gnu_as(source):
    assert assemble(source).hex(" ") == gnu_as(source).hex(" ")


def test_decimal_numbers_stay_decimal():
    # keystone switches to radix 16 once any option (e.g. sym_resolver) is set
    assert assemble("push 10\nmov ecx, 12\nint 48") == bytes.fromhex("6a0ab90c000000cd30")


def test_fixed_forms_direct_bytes():
    assert assemble("lidt [0x1000]") == bytes.fromhex("0f011d00100000")
    assert assemble("lgdt [eax]") == bytes.fromhex("0f0110")
    assert assemble("sidt [eax]") == bytes.fromhex("0f0108")
    assert assemble("sgdt [eax]") == bytes.fromhex("0f0100")
    assert assemble("lidt fs:[eax]") == bytes.fromhex("640f0118")
    assert assemble("iret") == b"\xcf" and assemble("IRETD") == b"\xcf"
    assert assemble("push ds\npush es\npush cs\npush ss") == bytes.fromhex("1e060e16")
    assert assemble("pop ds\npop es\npop ss") == bytes.fromhex("1f0717")
    assert assemble("jmp 0x08:0x1234") == bytes.fromhex("ea341200000800")
    assert assemble("call 0x10:0x1234") == bytes.fromhex("9a341200001000")
    assert assemble("ljmp 0x08:0x1234") == bytes.fromhex("ea341200000800")
    assert assemble("pushf\npopf\nint 3") == bytes.fromhex("9c9dcc")
    assert assemble("mov ds, ax\nmov [eax+4], ds") == bytes.fromhex("8ed88c5804")
    assert assemble("rep movsd\njmp fword ptr [eax]") == bytes.fromhex("f3a5ff28")


def test_labels_after_fixed_instructions():
    # lidt is 7 bytes, so x sits at origin + 7.
    assert assemble("lidt [x]\nx: nop", origin=0x1000) == bytes.fromhex("0f011d0710000090")
    code = assemble("a: lgdt [y]\niret\npush ds\njmp 0x08:y\nsidt [esp]\ny: .long y",
                    origin=0x7C00)
    y = 0x7C00 + 7 + 1 + 1 + 7 + 4
    assert code == (bytes.fromhex("0f0115") + struct.pack("<I", y) + b"\xcf\x1e\xea"
                    + struct.pack("<IH", y, 8) + bytes.fromhex("0f010c24")
                    + struct.pack("<I", y))


def test_comments_case_and_same_line_labels():
    src = ("  start: LIDT [tbl] ; load # idt\n"
           "\tPush DS   # comment\n"
           "here: there: Pop Es ; x\n"
           "tbl: .byte 1, 2 ; data\n"
           '.ascii "a;b#c"\n'
           ".long tbl # trailing\n")
    code = assemble(src, origin=0x100)
    tbl = 0x100 + 7 + 1 + 1
    assert code == (bytes.fromhex("0f011d") + struct.pack("<I", tbl) + b"\x1e\x07"
                    + b"\x01\x02" + b"a;b#c" + struct.pack("<I", tbl))


def test_lidt_loads_full_32bit_base_in_unicorn():
    """With keystone's 66 0f 01 form the CPU would keep only 24 bits of base."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    code = assemble("lidt [desc]\nsidt [out]\nhlt\n"
                    "desc: .word 0x7ff\n.long 0x12345678\nout: .long 0, 0", origin=0x1000)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0x1000 + 7 + 7, count=2)
    out = len(code) - 8 + 0x1000
    assert bytes(uc.mem_read(out, 6)) == struct.pack("<HI", 0x7FF, 0x12345678)


def test_unknown_mnemonic_names_line():
    with pytest.raises(AsmError, match=r"^line 3: 'frob eax, 1': .*mnemonic"):
        assemble("nop\nmov eax, 1\n  frob eax, 1\nnop\nhlt")


def test_bad_operand_names_line():
    with pytest.raises(AsmError, match=r"^line 2: 'push al': .*operand"):
        assemble("nop\npush al\nnop")


def test_errors_keystone_would_swallow():
    # keystone assembles `mov eax, [` as mov eax, [0]
    with pytest.raises(AsmError, match=r"^line 2: 'mov eax, \[': unbalanced"):
        assemble("nop\nmov eax, [\nnop")
    # keystone returns no bytes at all (and no error) for this whole program
    with pytest.raises(AsmError, match=r"^line 2: 'mov eax, xword': .*no bytes"):
        assemble("nop\nmov eax, xword\nnop")
    with pytest.raises(AsmError, match=r"^line 3: 'jmp nowhere': .*symbol"):
        assemble("nop\nx: nop\njmp nowhere\n")
    with pytest.raises(AsmError, match="^line 2: .*already defined"):
        assemble("x: nop\nx: nop")
    assert issubclass(AsmError, ValueError)


def test_empty_and_label_only_sources():
    assert assemble("") == b""
    assert assemble("; nothing\nlabel:\n") == b""


def test_disassemble_round_trip():
    code = assemble("lidt [eax]\npush ds\nmov eax, 0x10\niret", origin=0x2000)
    assert disassemble(code, origin=0x2000) == [
        (0x2000, "lidt [eax]"), (0x2003, "push ds"),
        (0x2004, "mov eax, 0x10"), (0x2009, "iretd")]
    assert disassemble(code, origin=0x2000, count=2) == [
        (0x2000, "lidt [eax]"), (0x2003, "push ds")]
    assert disassemble_one(code[3:], 0x2003) == "push ds"
    assert disassemble_one(b"\xcc", 0) == "int3"


def test_disassemble_bad_bytes():
    assert disassemble_one(b"\xff\xff", 0) == "(bad)"  # ff /7 is undefined
    assert disassemble_one(b"", 0) == "(bad)"
    assert disassemble(b"\x90\xff\xff\x90") == [(0, "nop")]  # stops at bad bytes


# ---- what keystone cuts short without a word ------------------------------------
def gnu_complains(source):
    """GNU as refuses `source` or warns that it shortened a value."""
    if not shutil.which("as"):
        pytest.skip("GNU as not found")
    with tempfile.TemporaryDirectory() as d:
        s, o = os.path.join(d, "x.s"), os.path.join(d, "x.o")
        with open(s, "w") as f:
            f.write(".intel_syntax noprefix\n" + source + "\n")
        r = subprocess.run(["as", "--32", "-o", o, s], capture_output=True, text=True)
        return r.returncode != 0 or "Warning" in r.stderr


TRUNCATED = [   # (source, the line keystone would cut short, what the error says)
    ("nop\nmov al, 0x1234\nnop", 2, "0x1234 does not fit in 8 bits"),
    ("mov al, 256", 1, "256 does not fit in 8 bits"),
    ("mov cl, 300", 1, "300 does not fit in 8 bits"),
    ("mov ax, 0x12345", 1, "0x12345 does not fit in 16 bits"),
    ("add al, 0x100", 1, "8 bits"), ("and al, 0xfff", 1, "8 bits"), ("test al, 0x100", 1, "8 bits"),
    ("add ax, 0x10000", 1, "16 bits"), ("cmp byte ptr [eax], 0x100", 1, "8 bits"),
    ("mov byte ptr [eax], 0x1ff", 1, "8 bits"), ("mov word ptr [eax], 0x1ffff", 1, "16 bits"),
    ("big = 0x300\nmov al, big", 2, r"big = 0x300 does not fit in 8 bits"),
    ("ret 0x10000", 1, "16 bits"), ("enter 0x10000, 0", 1, "16 bits"), ("enter 0, 256", 1, "8 bits"),
    ("aam 256", 1, "8 bits"),
    ("push byte 0x1234", 1, "size 'byte' without `ptr`"), ("push word 0x12345", 1, "without `ptr`"),
    ("nop\n.word 0x12345", 2, "out of range"), ("x: .word 1, 0x12345, 3", 1, "out of range"),
    ("loop x\n.fill 200, 1, 0x90\nx: nop", 1, "x is out of reach of a short jump"),
    ("x: nop\n.fill 200, 1, 0x90\njecxz x", 3, "out of reach"),
    ("jecxz x\n.fill 128, 1, 0x90\nx: nop", 1, "out of reach"),
]


@pytest.mark.parametrize("source, line, why", TRUNCATED)
def test_what_keystone_would_cut_short_is_an_error_naming_the_line(source, line, why):
    with pytest.raises(AsmError, match=rf"^line {line}: .*{why}"):
        assemble(source)
    assert gnu_complains(source)                  # GNU as refuses it or warns it shortened it


@pytest.mark.parametrize("source", ["push qword", "mov eax, dword 5", "push word 5"])
def test_a_size_without_ptr_is_refused(source):
    """Keystone drops `push qword` and makes `push word 5` a 16-bit push (GNU
    refuses both of the others, and takes `qword` there for a symbol's name)."""
    with pytest.raises(AsmError, match="^line 2: .*without `ptr`"):
        assemble("nop\n" + source)
    assert source == "push qword" or gnu_complains(source)


FITS = ["mov al, 255", "mov al, -128", "mov al, -256", "and al, ~0x80", "mov al, 'a'",
        "mov ax, 0xffff", "mov ax, -1", "mov word ptr [eax], 0xffff", "ret 0xffff",
        "enter 0xffff, 255", "int -1", "int 0xff", "aam 10", "push word ptr 5", "shl eax, 33",
        ".word 0xffff, -32768", "loop x\n.fill 127, 1, 0x90\nx: nop",
        "x: nop\n.fill 125, 1, 0x90\njecxz x", "mov al, [0x12345678]", "mov byte ptr [eax], bl",
        "mov al, fs:0x10", "mov al, 3+4*2", "cmp al, 'a'"]


@pytest.mark.parametrize("source", FITS)
def test_immediates_and_jumps_that_fit_still_match_gnu(source):
    assert assemble(source) == gnu_as(source)


def test_a_label_defined_twice_names_both_lines():
    with pytest.raises(AsmError, match=r"^line 3: 'x: nop': label 'x' is already defined on line 1"):
        assemble("x: nop\ny: nop\nx: nop")
    with pytest.raises(AsmError, match=r"^line 2: 'b: a: ret': label 'a' is already defined on line 1"):
        assemble("a: nop\nb: a: ret")
