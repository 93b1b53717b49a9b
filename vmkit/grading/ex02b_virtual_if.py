"""Grades exercise 02b: the kernel emulates the displaced COS's cli/sti/
pushfd/popfd with the learner's function. The COS must keep taking its
timer ticks, and a tick that arrives inside its critical section must wait
until the section ends."""
from vmkit.cos import layout as cos_layout
from vmkit.lessons import takeover

# ticks before, inside (after a long spin with interrupts off) and after the section
CRITICAL = f"""
init:   mov eax, [{cos_layout.TICKS:#x}]
        mov [0x5000], eax
        pushfd
        cli
        mov ecx, 40000          ; several timer periods with the COS's interrupts off
spin:   loop spin
        mov eax, [{cos_layout.TICKS:#x}]
        mov [0x5004], eax
        popfd
        mov ecx, 2000
wait:   loop wait
        mov eax, [{cos_layout.TICKS:#x}]
        mov [0x5008], eax
        ret
"""


def check_ticks_go_on(emulate):
    board, cos, loader = takeover.takeover(emulate=emulate)
    if loader.kernel is None:
        return "the load was refused"
    before = cos.ticks()
    board.run(1_000_000)
    gained = cos.ticks() - before
    if gained < 50:
        return f"the COS took {gained} timer ticks in 1,000,000 instructions after the takeover; expected about 100"
    if board.cpu.shutdown:
        return f"the CPU stopped: {board.cpu.shutdown}"
    return None


def check_critical_section(emulate):
    board, cos, loader = takeover.takeover(emulate=emulate)
    if loader.kernel is None:
        return "the load was refused"
    takeover.run_module(board, cos, CRITICAL)
    read = board.memory.read_u32
    before, inside, after = read(0x5000), read(0x5004), read(0x5008)
    if inside != before:
        return f"a timer tick reached the COS inside its pushfd/cli ... popfd section ({before} -> {inside})"
    if after <= inside:
        return f"the ticks that waited during the section were not delivered after popfd ({inside} -> {after})"
    return None


CHECKS = [("the COS keeps taking timer ticks", 1, check_ticks_go_on),
          ("a tick waits for the end of a critical section", 2, check_critical_section)]
FUNCTION = "emulate_if"
