"""The kernel's own pushes and pops on the displaced COS's stack (an interrupt it
injects, the COS's patched pushfd/popfd/iretd) are Python writes that no segment
check sees: they honour the COS's stack limit as the CPU would, so a COS that
points ESP into the kernel cannot have the kernel write its own IDT for it."""
from vmkit.cos import layout as cos_layout
from vmkit.kernel import layout
from test_cos_contained import displaced, run_module  # noqa: F401 (a fixture)

SAVED = cos_layout.MODULE_AREA + 0x800          # the COS's own memory: where it keeps its ESP


def kernel_idt(board, kernel):
    return board.memory.read(kernel.base + layout.IDT, 256 * 8)


def limit_events(board, mark):
    return [e for e in board.trace.since(mark, "kernel.cos_limit")]


def test_an_interrupt_for_a_cos_whose_stack_is_in_the_kernel_is_held_not_pushed(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    before = kernel_idt(board, kernel)
    esp = kernel.base + layout.IDT + 0x20 * 8 + 12          # pushes would land on gates 0x20-0x21
    mark = run_module(board, cos, f"""
init:   mov [{SAVED:#x}], esp
        mov esp, {esp:#x}
        sti
        mov ecx, 300000                 ; long enough for timer ticks to come
spin:   loop spin
        mov esp, [{SAVED:#x}]
        xor eax, eax
        ret""")
    assert kernel_idt(board, kernel) == before                      # not a byte of it changed
    assert board.cpu.shutdown is None
    refused = limit_events(board, mark)
    assert refused and all(e["what"] == "the kernel's IDT" and e["insn"].startswith("IRQ")
                           for e in refused)
    ticks = cos.var("TICKS")
    board.run(300_000)                                              # its own stack back: ticks again
    assert cos.var("TICKS") > ticks


def test_a_patched_pushfd_with_esp_in_the_kernel_stores_nothing_there(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    before = kernel_idt(board, kernel)
    esp = kernel.base + layout.IDT + 0x40
    mark = run_module(board, cos, f"""
init:   mov [{SAVED:#x}], esp
        cli
        mov esp, {esp:#x}
        pushfd                          ; patched to int3: the kernel's Python pushes for it
        mov [{SAVED + 4:#x}], esp
        mov esp, [{SAVED:#x}]
        sti
        xor eax, eax
        ret""")
    assert kernel_idt(board, kernel) == before
    assert board.memory.read_u32(SAVED + 4) == esp                  # ESP as it was: nothing pushed
    assert any(e["insn"] == "pushfd" for e in limit_events(board, mark))
