"""The VMM patches a guest's iretd (it would not trap at CPL 3) only in code
the guest can execute: reached from its entry point, or from a handler its
IDT names when it executes lidt, following direct jumps, calls and branches.
A 0xCF byte in the guest's data is not an instruction and stays as it is."""
from vmkit.vmm import guests

from test_worlds import VM_MEMORY, displaced

DATA = bytes([0xCF, 0x90, 0xCF, 0xCF])


def data_with_cf(base):
    """Prints its data bytes as they are, waits for 3 virtual ticks (its timer
    handler returns with iretd), says so. Its data follows its code."""
    v = base + guests.VARS
    return guests._prologue(base) + f"""
        mov ecx, {len(DATA)}
        lea esi, [data]
show:   mov al, [esi]
        out dx, al
        inc esi
        loop show
        mov al, 10
        out dx, al
wait:   hlt
        cmp dword ptr [{v:#x}], 3
        jb wait
""" + guests._print("ticked\n") + f"""
stop:   hlt
        jmp stop
data:   .byte {", ".join(str(b) for b in DATA)}
"""


def test_a_guests_data_keeps_its_0xcf_bytes_and_its_iretd_still_traps():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(data_with_cf, VM_MEMORY, "cf")
    board.run(400_000)
    assert vm.state != "crashed", vm.fault
    assert bytes(vm.vmm.console) == DATA + b"\nticked\n"        # read back intact, by the guest
    data = board.memory.read(vm.region[0], 0x1000).rindex(DATA)
    assert data and not set(vm.vmm.patches) & set(range(data, data + 4))    # patches: guest addresses
    # its one iretd (the timer handler's, reached through its IDT) is patched and traps:
    # without that, the virtual IF would stay clear after the first tick and "ticked" never come
    (iretd,) = vm.vmm.patches
    assert board.memory.read(vm.region[0] + iretd, 1) == b"\xcc" and vm.vmm.vcpu.injected >= 3
    patched = [(e["count"], e.data.get("at")) for e in board.trace.of("vmm.patch")]
    assert patched == [(0, None), (1, "lidt")]     # none from the entry; the handler's at lidt
    patched = [(e["count"], e.data.get("at")) for e in board.trace.of("vmm.patch")]
    assert patched == [(0, None), (1, "lidt")]     # none from the entry; the handler's at lidt


def gate_after_lidt(base):
    """Loads its IDT, then writes its timer gate: the VMM never sees that handler."""
    v, idt = base + guests.VARS, base + guests.IDT
    return f"""
start:  jmp setup
timer:  inc dword ptr [{v:#x}]
        iretd
setup:  mov word ptr [{v + 8:#x}], 0x107
        mov dword ptr [{v + 10:#x}], {idt:#x}
        lidt [{v + 8:#x}]
        lea eax, [timer]
        mov word ptr [{idt + 0x100:#x}], ax
        mov word ptr [{idt + 0x102:#x}], 0x3b
        mov word ptr [{idt + 0x104:#x}], 0x8e00
        shr eax, 16
        mov word ptr [{idt + 0x106:#x}], ax
        sti
wait:   hlt
        jmp wait
"""


def test_an_iretd_the_vmm_cannot_see_leaves_that_vm_deaf_and_no_one_else():
    """reach.py's documented limit: an unpatched iretd returns but cannot set IF at CPL 3."""
    board, cos, kernel = displaced()
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM_MEMORY, "other")
    deaf = kernel.install_vm(gate_after_lidt, VM_MEMORY, "deaf")
    board.run(600_000)
    assert not deaf.vmm.patches and deaf.state != "crashed"
    v = deaf.vmm.vcpu
    assert v.injected == 1 and v.vif == 0                # one tick in; its iretd left IF clear
    assert board.memory.read_u32(deaf.region[0] + guests.VARS) == 1
    assert len(bytes(other.vmm.console).splitlines()) > 10 and cos.ticks() > 0
