"""The displaced COS stays displaced: what it hands the kernel to load at CPL 0
(the CS and EFLAGS its patched iretd pops, the EFLAGS its patched popfd pops)
never brings it below CPL 1, into virtual-8086 mode, or to IOPL 1."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.x86 import EFLAGS_IF, EFLAGS_IOPL, EFLAGS_NT, EFLAGS_VM, GP
from vmkit.kernel import layout
from vmkit.lessons import takeover


def escape(selector, flags=0):
    """COS x86: an iretd to `selector` with its own flags (| `flags`), then at the
    target: note CS as the CPU has it, try CR0, cli, and note EFLAGS as it really is."""
    return f"""
init:   pushfd
        or dword ptr [esp], {flags:#x}
        push {selector:#x}
        mov eax, escaped
        push eax
        iretd
escaped:
        mov ax, cs
        mov [0x5000], ax
        xor eax, eax
        mov eax, cr0                    ; at CPL 0 this reads 0x11; at CPL 1 it traps, refused
        mov [0x5004], eax
        cli
        sti
        ret
"""


@pytest.fixture
def displaced():
    board, cos, loader = takeover.takeover()
    return board, cos, loader.kernel


def run(board, cos, source, samples=0):
    """insmod it; meanwhile sample the CPU: (cpl, cs, eip, eflags) whenever the COS's code runs."""
    cos.put_module(cos.make_module(source))
    mark = board.trace.mark()
    cos.type("insmod\n")
    seen, cpu = [], board.cpu
    for _ in range(samples):
        board.run(3)
        if cpu["eip"] >= cos_layout.MODULE_AREA and cpu["eip"] < cos_layout.MODULE_AREA + 0x10000:
            seen.append((cpu.cpl, cpu["cs"], cpu["eflags"]))
    board.run(300_000)
    return mark, seen


@pytest.mark.parametrize("selector", [layout.COS_CODE_SEL, layout.COS_CODE_SEL | layout.COS_RPL])
def test_an_iretd_to_its_own_code_at_cpl_0_runs_at_cpl_1_and_cli_still_traps(displaced, selector):
    board, cos, kernel = displaced
    mark, seen = run(board, cos, escape(selector), samples=3000)
    assert board.cpu.shutdown is None and cos.var("FAULTS") == 0
    assert board.memory.read_u32(0x5000) == layout.COS_CODE_SEL | layout.COS_RPL     # CS, read by the COS
    assert seen and {(cpl, cs) for cpl, cs, _ in seen} == {(1, 0x09)}                # CS, read from the CPU
    assert all(flags & EFLAGS_IF for _, _, flags in seen)                            # real IF: still the kernel's
    assert board.memory.read_u32(0x5004) == 0                                        # CR0 refused
    insns = [e["insn"] for e in board.trace.since(mark, "kernel.emulate", "kernel.refused")]
    cr0 = insns.index("mov eax, cr0")                                                 # both trapped
    assert insns[cr0 - 1] == "iretd" and insns[cr0 + 1] == "cli"


def test_an_iretd_to_the_kernels_code_is_a_gp_reflected_to_the_cos(displaced):
    board, cos, kernel = displaced
    mark, seen = run(board, cos, escape(layout.KERNEL_CODE_SEL), samples=3000)
    assert board.cpu.shutdown is None
    assert all(cpl == 1 for cpl, _, _ in seen)
    assert board.memory.read_u32(0x5000) == 0                  # `escaped` never ran, at any CPL
    refused = board.trace.since(mark, "kernel.refused")
    assert refused and refused[0]["insn"] == f"iretd to cs {layout.KERNEL_CODE_SEL:#x}"
    m = board.memory                                           # the COS's own #GP handler, as the CPU
    assert (m.read_u32(cos_layout.FAULT_VECTOR), m.read_u32(cos_layout.FAULT_ERROR)) == (GP, layout.KERNEL_CODE_SEL)
    assert m.read_u32(cos_layout.FAULT_EIP) == refused[0]["eip"]   # would give it: at the iretd


@pytest.mark.parametrize("insn", ["iretd", "popfd"])
@pytest.mark.parametrize("flag", [EFLAGS_VM, EFLAGS_NT, 1 << EFLAGS_IOPL.bit_length() - 1])
def test_flags_the_cos_pops_never_bring_vm_nt_or_iopl(displaced, insn, flag):
    board, cos, kernel = displaced
    if insn == "iretd":
        source = escape(layout.COS_CODE_SEL, flag)
    else:
        source = f"""
init:   pushfd
        or dword ptr [esp], {flag:#x}
        popfd
escaped:
        mov ax, cs
        mov [0x5000], ax
        cli
        sti
        ret
"""
    mark, seen = run(board, cos, source, samples=3000)
    assert board.cpu.shutdown is None and cos.var("FAULTS") == 0
    assert board.memory.read_u32(0x5000) == 0x09               # it ran on, in protected mode, at CPL 1
    assert seen and all(cpl == 1 and not flags & (EFLAGS_VM | EFLAGS_NT | EFLAGS_IOPL) for cpl, _, flags in seen)
    assert "cli" in [e["insn"] for e in board.trace.since(mark, "kernel.emulate")]
