"""The kernel delivers the displaced COS's interrupts and faults through the COS's
own IDT, reading its gates and pushing its frames in Python, where no segment
check of the platform sees it. It checks them as the CPU would, and against the
COS's limit: a gate the COS placed in (or pointing into) the kernel's memory
never makes the kernel read kernel bytes as a COS gate and send the COS there."""
import pytest

from vmkit.cos import layout as cos_layout
from vmkit.hw.x86 import DF, GP, NP, encode_gate
from vmkit.kernel import layout
from test_cos_contained import displaced, run_module  # noqa: F401 (a fixture)

OUT = 0x5000                    # the COS's own memory: what its handlers saw
ERROR, EIP, VECTOR, HANDLED, WHERE = OUT, OUT + 4, OUT + 8, OUT + 0xC, OUT + 0x10
SAVE = cos_layout.MODULE_AREA + 0x8000          # the gates it changes, kept to put back


def gate_words(offset, selector=layout.COS_CODE_SEL, type=0xE, present=True):
    raw = encode_gate(offset, selector, type, 0, present)
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")


def set_gate(vector, label, idt=cos_layout.COS_IDT):
    """x86: gate `vector` of the IDT at `idt` := an interrupt gate to `label` (selector 0x08)."""
    at = idt + vector * 8
    return f"""
        mov eax, {label}
        mov [{at:#x}], ax
        mov word ptr [{at + 2:#x}], {layout.COS_CODE_SEL:#x}
        mov word ptr [{at + 4:#x}], 0x8e00
        shr eax, 16
        mov [{at + 6:#x}], ax"""


def keep(vectors):
    return "".join(f"""
        mov eax, [{cos_layout.COS_IDT + v * 8 + i:#x}]
        mov [{SAVE + 8 * v + i:#x}], eax""" for v in vectors for i in (0, 4))


def put_back(vectors):
    return "".join(f"""
        mov eax, [{SAVE + 8 * v + i:#x}]
        mov [{cos_layout.COS_IDT + v * 8 + i:#x}], eax""" for v in vectors for i in (0, 4))


HANDLERS = f"""
gp:     mov dword ptr [{VECTOR:#x}], 13
        jmp seen
np:     mov dword ptr [{VECTOR:#x}], 11
seen:   push eax
        mov eax, [esp + 4]              ; the error code the delivery gave
        mov [{ERROR:#x}], eax
        mov eax, [esp + 8]              ; the EIP it saved
        mov [{EIP:#x}], eax
        inc dword ptr [{HANDLED:#x}]
        pop eax
        add esp, 4
        add dword ptr [esp], 2          ; past the ud2
        iretd
"""


def bad_gate(kernel, case):
    """Gate 6 (#UD) as the COS writes it, and the fault the CPU would raise instead."""
    code_limit = kernel.base - 1
    return {
        "handler in the kernel": (gate_words(kernel.base + kernel.image.dispatch), GP, 0),
        "handler past the limit": (gate_words(code_limit + 1), GP, 0),
        "kernel's selector": (gate_words(cos_layout.MODULE_CODE, layout.KERNEL_CODE_SEL), GP, layout.KERNEL_CODE_SEL),
        "not present": (gate_words(cos_layout.MODULE_CODE, present=False), NP, 6 * 8 + 2),
        "task gate": (gate_words(cos_layout.MODULE_CODE, type=0x5), GP, 6 * 8 + 2),
    }[case]


@pytest.mark.parametrize("case", ["handler in the kernel", "handler past the limit", "kernel's selector",
                                  "not present", "task gate"])
def test_a_cos_gate_the_cpu_would_refuse_is_that_fault_for_the_cos(displaced, case):
    board, cos, loader = displaced
    kernel = loader.kernel
    (lo, hi), vector, error = bad_gate(kernel, case)
    gate6 = cos_layout.COS_IDT + 6 * 8
    mark = run_module(board, cos, f"""
init:   {keep([6, 11, 13])}
        {set_gate(13, "gp")}
        {set_gate(11, "np")}
        mov dword ptr [{gate6:#x}], {lo:#x}
        mov dword ptr [{gate6 + 4:#x}], {hi:#x}
        mov eax, ud
        mov [{WHERE:#x}], eax
ud:     ud2                             ; #UD: the kernel reflects it through gate 6
        {put_back([6, 11, 13])}
        xor eax, eax
        ret
{HANDLERS}""")
    m = board.memory
    assert m.read_u32(HANDLED) == 1 and cos.var("FAULTS") == 0       # its handler, once; not fault_common
    assert (m.read_u32(VECTOR), m.read_u32(ERROR)) == (vector, error)  # the fault the CPU would raise
    assert m.read_u32(EIP) == m.read_u32(WHERE)                        # at the ud2
    assert cos.var("MODULE_RESULT") == 0 and board.cpu.shutdown is None
    refused = board.trace.since(mark, "kernel.cos_gate")
    assert [(e["vector"], e["fault"], e["error"]) for e in refused] == [(6, vector, error)]


def test_a_gate_past_the_cos_memory_is_a_gp_with_the_cpus_error_code(displaced):
    """Its IDT placed so that gates 0..13 lie in its memory and the timer's (0x20) in the
    kernel's: the timer's IRQ is #GP(0x20·8 + 2 + EXT) for the COS, through its gate 13."""
    board, cos, loader = displaced
    kernel = loader.kernel
    idt = kernel.base - 14 * 8                  # gate 14 onwards: the kernel's first bytes
    ptr = SAVE + 0x100
    m_kernel = board.memory.read(kernel.base, 0x200)
    mark = run_module(board, cos, f"""
init:   {set_gate(13, "gp", idt)}
        mov word ptr [{ptr:#x}], 0x7ff
        mov dword ptr [{ptr + 2:#x}], {idt:#x}
        lidt [{ptr:#x}]
        sti
wait:   cmp dword ptr [{HANDLED:#x}], 0
        je wait
        cli
        lidt [{cos_layout.IDT_PTR:#x}]  ; its own IDT back
        mov al, 0x20                    ; the timer's IRQ was taken: end it at the PIC
        out 0x20, al
        sti
        xor eax, eax
        ret
gp:     push eax
        mov eax, [esp + 4]
        mov [{ERROR:#x}], eax
        inc dword ptr [{HANDLED:#x}]
        pop eax
        add esp, 4
        iretd
""")
    m = board.memory
    assert m.read_u32(HANDLED) == 1
    assert m.read_u32(ERROR) == 0x20 * 8 + 2 + 1                     # the gate's index, IDT bit, EXT
    assert board.memory.read(kernel.base, 0x200) == m_kernel
    seen = board.trace.since(mark, "kernel.cos_limit")
    assert [(e["address"], e["what"]) for e in seen] == [(idt + 0x20 * 8, "the kernel's code")]
    ticks = cos.ticks()
    board.run(300_000)
    assert cos.ticks() > ticks and board.cpu.shutdown is None        # its own IDT: ticks again


def test_a_cos_whose_whole_idt_is_the_kernels_shuts_down_alone(displaced):
    """lidt of the kernel's own IDT (gates to the kernel's stubs, selector 0x20): every
    gate lies past its limit, so its next interrupt is #GP, then #DF, then a triple
    fault. The COS stops for good; the kernel (and a VM) go on."""
    board, cos, loader = displaced
    kernel = loader.kernel
    vm = kernel.install_vm("l: inc dword ptr [count]\njmp l\n.align 16\ncount: .long 0", 0x4000, cpu=0)
    ptr = SAVE + 0x100
    mark = board.trace.mark()
    cos.put_module(cos.make_module(f"""
init:   mov word ptr [{ptr:#x}], 0x7ff
        mov dword ptr [{ptr + 2:#x}], {kernel.base + layout.IDT:#x}
        lidt [{ptr:#x}]
        sti
spin:   jmp spin
"""))
    cos.type("insmod\n")
    seen = []
    for _ in range(300):                        # the COS's code never runs in the kernel's
        board.run(1000)
        if board.cpu.cpl == layout.COS_RPL:
            seen.append(board.cpu["eip"])
    assert seen and not any(kernel.contains(eip) for eip in seen)
    down = board.trace.since(mark, "kernel.cos_shutdown")
    assert len(down) == 1
    chain = [(e["vector"], e["fault"]) for e in board.trace.since(mark, "kernel.cos_gate")]
    assert chain == [(0x20, GP), (GP, GP), (DF, GP)]                 # the timer, #GP, #DF: all refused
    assert board.cpu.shutdown is None and kernel.vcpu.vif == 0
    ticks = cos.ticks()
    guest = vm.region[0] + 16                  # its count, wherever it is linked
    count = board.memory.read_u32(guest)
    board.run(1_000_000)
    assert cos.ticks() == ticks                                      # the COS: stopped
    assert board.memory.read_u32(guest) > count                      # the VM: scheduled, running
    assert len(board.trace.since(mark, "kernel.cos_shutdown")) == 1


def test_a_lidt_whose_operand_is_in_the_kernel_loads_nothing(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    before = (kernel.vcpu.idt_base, kernel.vcpu.idt_limit)
    operand = kernel.base + layout.TAKEOVER_IDTR    # the kernel's own IDTR operand
    mark = run_module(board, cos, f"""
init:   lidt [{operand:#x}]                 ; past its limit: skipped, as a load past it is
        xor eax, eax
        ret""")
    assert (kernel.vcpu.idt_base, kernel.vcpu.idt_limit) == before == (cos_layout.COS_IDT, 0x7FF)
    assert [e["what"] for e in board.trace.since(mark, "kernel.cos_limit")] == ["the kernel's memory"]
    ticks = cos.ticks()
    board.run(300_000)
    assert cos.ticks() > ticks


@pytest.mark.parametrize("selector", [layout.KERNEL_DATA_SEL, layout.VMM_DATA_SEL, layout.USER_DATA_SEL | 3])
def test_a_cos_load_of_a_selector_it_may_not_use_is_its_own_gp_not_a_kernel_panic(displaced, selector):
    """DPL 0 data at CPL 1 (the kernel's), or past its GDTR's limit (a VMM's, a VM's): the CPU's
    #GP(selector), which its own handler gets, as on a real CPU (the kernel neither panics nor
    skips the load as if it were a privileged instruction it emulates)."""
    board, cos, loader = displaced
    board.memory.write_u32(OUT, 0)
    cos.put_module(cos.make_module(f"""
init:   mov ax, {selector:#x}
        mov ds, ax                      ; #GP(selector), the CPU's own
        mov dword ptr [{OUT:#x}], 1     ; not reached: its #GP handler stops the COS
        xor eax, eax
        ret"""))
    mark = board.trace.mark()
    cos.type("insmod\n")
    board.run(1_000_000)
    assert board.cpu.shutdown is None                                  # the kernel goes on
    faults = board.trace.since(mark, "cpu.fault")
    assert (GP, selector & ~3) in [(e["vector"], e["error"]) for e in faults]
    assert not [e for e in faults if "past the limit" in e["why"]]    # the GDT read is the CPU's own
    assert not board.trace.since(mark, "kernel.refused")
    m = board.memory
    assert (m.read_u32(cos_layout.FAULT_VECTOR), m.read_u32(cos_layout.FAULT_ERROR)) == (GP, selector & ~3)
    assert m.read_u32(OUT) == 0
