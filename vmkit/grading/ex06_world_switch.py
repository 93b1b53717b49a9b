"""Grades exercise 06: the learner's loading step is the kernel's world
switch (Worlds.loader). Two VMs and the COS must produce their expected
console output over many quanta, and a guest computing a checksum through
thousands of switches must get the right answer.

All worlds share the kernel's GDT and IDT and none has an LDT, so a loader
that skipped a table would go unnoticed; the grader therefore gives vm2's
saved state its own LDT (base and limit) and longer GDTR/IDTR limits
(harmless: no guest uses them), so every table differs between worlds.
(CR3 is not graded here: the kernel sets CR3 and CR0.PG together after the loader runs,
switch.set_address_space, so a loader that skipped CR3 would be masked.)"""
from vmkit.kernel import layout, switch
from vmkit.lessons import worlds as lesson
from vmkit.vmm import guests


def _expected(name, n):
    return [f"hello from {name}"] + [f"{name} {chr(97 + i % 26)}" for i in range(n)]


def _crashed(kernel):
    for w in kernel.worlds.all:
        if w.state == "crashed":
            return f"{w.name} was stopped: {w.fault}"
    return None


def _distinct_tables(kernel, vm):
    state = switch.read_area(kernel.memory, vm.area)
    state.update({"ldtr.base": vm.region[0], "ldtr.limit": 0xFF,
                  "gdtr.limit": state["gdtr.limit"] + 8, "idtr.limit": 0xFFF})
    switch.write_area(kernel.memory, vm.area, state)


def _run(board, kernel, n):
    """Run; a kernel that could load no world at all is reported with what each world hit."""
    try:
        board.run(n)
    except NotImplementedError:
        raise                             # the untouched stub: "not attempted"
    except RuntimeError as e:
        return f"{e} ({_crashed(kernel) or 'no world stopped'})"
    return None


def check_consoles(load_state):
    board, cos, kernel, vms = lesson.two_vms(quantum=1)
    _distinct_tables(kernel, vms[1])
    kernel.worlds.loader = load_state
    ticks = cos.ticks()
    problem = _run(board, kernel, 1_500_000) or _crashed(kernel)
    if problem:
        return problem
    for vm in vms:
        got = bytes(vm.vmm.console).decode().splitlines()
        if len(got) < 20:
            return f"{vm.name} printed {len(got)} lines in 1,500,000 instructions; expected over 20"
        if got != _expected(vm.name, len(got) - 1):
            wrong = next(i for i, (a, b) in enumerate(zip(got, _expected(vm.name, len(got) - 1))) if a != b)
            return f"{vm.name}'s console line {wrong + 1} is {got[wrong]!r}, expected {_expected(vm.name, wrong)[wrong]!r}"
    if cos.ticks() < ticks + 50:
        return f"the COS took {cos.ticks() - ticks} timer ticks; expected over 50"
    few = [w.name for w in kernel.worlds.all if kernel.worlds.switches_of(w) < 20]
    if few:
        return f"{', '.join(few)} was switched in fewer than 20 times"
    if board.cpu.shutdown:
        return f"the CPU stopped: {board.cpu.shutdown}"
    return None


def check_checksum(load_state):
    board, cos, kernel, vms = lesson.two_vms(timer_period=1000, quantum=1)
    _distinct_tables(kernel, vms[1])
    board.memory.write_u32(kernel.base + layout.WORK_LENGTH, 200)
    kernel.worlds.loader = load_state
    n = 32_000
    vm = kernel.install_vm(lambda base: guests.checksum(base, n), lesson.VM_MEMORY, "sum")
    problem = None
    for _ in range(20):
        problem = _run(board, kernel, 200_000)
        if problem or vm.vmm.console or vm.state == "crashed":
            break
    problem = problem or _crashed(kernel)
    if problem:
        return problem
    got, want = bytes(vm.vmm.console).decode(), guests.checksum_expected(n)
    if got != want:
        return f"the checksum guest printed {got!r}, expected {want!r} (its registers did not survive a switch?)"
    if kernel.worlds.switches_of(vm) < 300:
        return f"the checksum guest was switched in only {kernel.worlds.switches_of(vm)} times"
    return None


CHECKS = [("two VMs and the COS keep their consoles", 2, check_consoles),
          ("a checksum survives hundreds of switches", 2, check_checksum)]
FUNCTION = "load_state"
