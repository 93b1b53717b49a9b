"""A denied in/out is a #GP even when a breakpoint (CPU.on_execute) stands on the next
instruction: Unicorn's emu_stop inside the I/O hook ends the run only after the
instruction, by which time the C counter may report the breakpoint; the fault must
win, or the instruction is skipped with neither its port access nor its fault."""
from vmkit.hw.asm import assemble

from test_worlds import VM_MEMORY, displaced

GUEST = """
        mov edx, 0x3f8
        mov al, 0x41
        out dx, al              ; CPL 3, no I/O bitmap: #GP, its VMM writes the console
after:  mov al, 0x0a
        out dx, al
idle:   hlt
        jmp idle
"""


def test_a_denied_out_before_a_breakpoint_still_faults():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(GUEST, VM_MEMORY, "io")
    hits = []
    board.cpu.on_execute(assemble(GUEST, 0).index(bytes.fromhex("b00a")),
                         lambda cpu: cpu["cr3"] == vm.cr3 and hits.append(cpu["eip"]))
    board.run(200_000)
    assert bytes(vm.vmm.console) == b"A\n" and len(hits) == 1
    assert [e["insn"] for e in board.trace.of("vmm.emulate") if e["vm"] == "io"][:1] == ["hlt"]
