"""A hostile guest at CPL 3 against its VMM region, the kernel and the machine: each attempt
is refused by the CPU (a fault taken, read from the trace and the machine's memory), that VM
alone stops, the COS and another VM run on. The VMM region lies at VMM_BASE (just below the
kernel) and at its host address, supervisor pages past the guest's truncated segments."""
import pytest

from vmkit.hw.x86 import GP, SS_FAULT
from vmkit.kernel import layout
from vmkit.vmm import guests, region

from test_worlds import displaced, lines

VM = 0x8000
POISON = 0xDEADBEEF


def hostile(body):
    """Prints "before", runs `body`, prints "after" (it must not), halts."""
    return (guests._prologue(0) + guests._print("before\n") + f"\n{body}\n        mov edx, 0x3f8\n"
            + guests._print("after\n") + "\nstop:   hlt\n        jmp stop\n")


def attempt(body):
    """Runs a hostile guest (body: x86, or a function of the kernel and the VM's VMM region's
    host address giving it) beside a console VM; returns the machine and the two VMs."""
    board, cos, kernel = displaced()
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other")
    if callable(body):                       # where its region will be: the next VM's, from the top
        body = body(kernel, kernel.worlds.vm_top - layout.VMM_SIZE)
    bad = kernel.install_vm(hostile(body), VM, "bad")
    before = {a: board.memory.read(a, 16) for a in (kernel.base + layout.IDT, bad.vmm_region,
                                                    bad.vmm_region + layout.VMM_CODE)}
    board.run(300_000)
    assert lines(bad) == ["before"] and bad.state == "crashed"
    seen, ticks = len(lines(other)), cos.ticks()
    board.run(300_000)
    assert len(lines(other)) > seen and cos.ticks() > ticks and board.cpu.shutdown is None
    assert board.memory.read(kernel.base + layout.IDT, 16) == before[kernel.base + layout.IDT]
    assert board.memory.read(bad.vmm_region + layout.VMM_CODE, 16) == before[bad.vmm_region + layout.VMM_CODE]
    return board, kernel, bad


def fault_of(board, bad):
    """(vector, error) of the CPU's fault that stopped the VM: the last before its crash."""
    events = board.trace.of("cpu.fault", "vm.crashed")
    crashed = next(i for i, e in enumerate(events) if e.kind == "vm.crashed" and e["vm"] == bad.name)
    fault = [e for e in events[:crashed] if e.kind == "cpu.fault"][-1]
    return fault["vector"], fault["error"]


@pytest.mark.parametrize("name, body, fault", [
    ("store into its VMM's GDT at VMM_BASE", lambda k, h: f"mov dword ptr [{layout.vmm_base(k.base):#x}], {POISON:#x}", (GP, 0)),
    ("store into its VMM's stubs at their host address", lambda k, h: f"mov dword ptr [{h + layout.VMM_CODE:#x}], {POISON:#x}", (GP, 0)),
    ("read its VMM's vCPU at its host address", lambda k, h: f"mov eax, [{h + layout.VMM_VCPU:#x}]", (GP, 0)),
    ("jump to vmm_entry", lambda k, h: f"mov eax, {layout.vmm_base(k.base) + region.ENTRY:#x}\njmp eax", (GP, 0)),
    ("store into the kernel's IDT", lambda k, h: f"mov dword ptr [{k.base + layout.IDT:#x}], {POISON:#x}", (GP, 0)),
    ("store into the mapping window", f"mov dword ptr [0xff800000], {POISON:#x}", (GP, 0)),
    ("read the last page", "mov eax, [0xfffff000]", (GP, 0)),
    ("far jump to the VMM's code segment", lambda k, h: f"jmp {layout.VMM_CODE_SEL:#x}:{layout.vmm_base(k.base) + layout.VMM_CODE:#x}", (GP, layout.VMM_CODE_SEL)),
    ("far call to the kernel's code segment", lambda k, h: f"call {layout.KERNEL_CODE_SEL:#x}:{k.base:#x}", (GP, layout.KERNEL_CODE_SEL)),
    ("the VMM's data segment into DS", f"mov ax, {layout.VMM_DATA_SEL:#x}\nmov ds, ax", (GP, layout.VMM_DATA_SEL)),
    ("the kernel's data segment into SS", f"mov ax, {layout.KERNEL_DATA_SEL:#x}\nmov ss, ax", (GP, layout.KERNEL_DATA_SEL)),
    ("rep stosd across its memory's end", f"mov eax, {POISON:#x}\nmov edi, {VM - 8:#x}\nmov ecx, 8\ncld\nrep stosd", (GP, 0)),
    ("a push at ESP 0", "xor esp, esp\npush eax", (SS_FAULT, 0)),
])
def test_a_guest_escape_is_the_cpus_fault_and_stops_that_vm_alone(name, body, fault):
    board, kernel, bad = attempt(body)
    assert fault_of(board, bad) == fault, name


@pytest.mark.parametrize("cs", [layout.USER_CODE_SEL | 3, 0x100])
def test_a_guest_iretd_into_virtual_8086_mode_stops_that_vm_not_the_machine(cs):
    """Unicorn enters virtual-8086 mode on an iretd at CPL 3 whose popped EFLAGS has VM (a real
    CPU ignores the bit there). An iretd the VMM never saw (written at run time) does it; the
    platform then delivers the guest's next fault as a CPU does from that mode (hw/delivery.py),
    and its monitor stops the VM, whatever its real-mode CS (0x100: low bits 0, which must not
    be taken for CPL 0)."""
    board, kernel, bad = attempt(f"""
        mov byte ptr [0x6000], 0xcf     ; iretd, at an address the VMM never scanned
        push 0
        push 0
        push 0
        push 0
        push 0x100                      ; SS, ESP, then EFLAGS with VM, CS, EIP
        push 0x2000
        pushfd
        or dword ptr [esp], 0x20000
        push {cs:#x}
        push 0x10
        mov eax, 0x6000
        jmp eax""")
    assert bad.fault.startswith("virtual-8086 mode at ") and f"{cs:#x}:" in bad.fault
    delivered = [e for e in board.trace.of("cpu.deliver") if e["cpl"] == "3->0"]
    assert delivered and board.cpu.shutdown is None
