"""The displaced COS cannot run the kernel's code: a jump past its code segment's limit
is a #GP(0) at the jump's target, before the instruction there runs (the platform checks
each fetch against CS's limit, hw/limits.py), delivered into the kernel."""
from vmkit.kernel import layout
from test_cos_contained import displaced, run_module   # noqa: F401 (a fixture)


def test_a_cos_jump_into_the_kernels_code_faults_at_its_target(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    target = kernel.base + kernel.image.entry + 0x20
    mark = run_module(board, cos, f"""
init:   mov eax, {target:#x}
        jmp eax""")
    faults = [e for e in board.trace.since(mark, "cpu.fault") if e["eip"] == target]
    assert [(e["vector"], e["error"]) for e in faults] == [(13, 0)]
    assert "of CS" in faults[0]["why"] and "past the limit" in faults[0]["why"]
    delivered = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 13]
    assert delivered and kernel.contains(delivered[0]["handler"])     # into the kernel's IDT
    assert board.cpu.shutdown is None                                  # the kernel runs on


def test_a_cos_jump_into_the_kernel_is_the_coss_own_gp_not_a_kernel_instruction_skipped(displaced):
    """The kernel's code at the target (`dispatched` begins with a `mov`, which the COS's
    privileged-instruction emulation would "refuse" and skip) is not the COS's instruction:
    the CPU refused to fetch it. The COS's own #GP handler gets #GP(0) at the target, once,
    as a real CPU would deliver it; the kernel and a VM run on."""
    from vmkit.cos import layout as cos_layout
    from vmkit.vmm import guests
    board, cos, loader = displaced
    kernel = loader.kernel
    vm = kernel.install_vm(lambda base: guests.console(base, "vm"), 0x8000, "vm")
    target = kernel.base + kernel.image.dispatched
    mark = board.trace.mark()
    cos.put_module(cos.make_module(f"""
init:   mov eax, {target:#x}
        jmp eax"""))
    cos.type("insmod\n")
    board.run(1_500_000)
    assert not [e for e in board.trace.since(mark, "kernel.refused") if e["eip"] >= kernel.base]
    at_target = [e for e in board.trace.since(mark, "cpu.fault") if e["eip"] >= kernel.base and e["eip"] < kernel.base + layout.STACK_TOP]
    assert [(e["vector"], e["eip"]) for e in at_target] == [(13, target)]      # once: not skipped on
    m = board.memory
    assert (m.read_u32(cos_layout.FAULT_VECTOR), m.read_u32(cos_layout.FAULT_ERROR),
            m.read_u32(cos_layout.FAULT_EIP)) == (13, 0, target)                 # the COS's own handler
    seen = board.trace.since(mark, "kernel.cos_limit")
    assert [(e["address"], e["what"]) for e in seen] == [(target, "the kernel's code")]
    count = len(bytes(vm.vmm.console))
    board.run(1_000_000)
    assert len(bytes(vm.vmm.console)) > count and board.cpu.shutdown is None
