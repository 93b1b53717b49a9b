"""A VMM's own data is bytes in its VMM region (claim 21): its patch list and its
virtual PIC's in-service bitmap, read there -- at the host address and through the
VM's own address space at VMM_BASE, by the CPU's MMU -- are what the VMM acts on."""
import pytest

from vmkit.hw.asm import assemble
from vmkit.hw.mmu import LinearFault
from vmkit.hw.x86 import encode_gate, GATE_INT32
from vmkit.kernel import layout, patches
from vmkit.kernel.cos_vcpu import CosVcpu
from vmkit.kernel.frame import Frame
from vmkit.kernel.worlds import VMError
from vmkit.vmm import guests, region
from vmkit.vmm.vmm import PATCH_CAPACITY

from test_vmm_patch import data_with_cf
from test_worlds import VM_MEMORY, displaced

IRETD, INT3 = 0xCF, 0xCC


def at_vmm_entry(board, kernel, vm, seen):
    """At each entry of `vm`'s VMM on CPU 0, `seen(cpu)` (the VM's CR3 loaded)."""
    hooks, cpu = kernel.vmm_hooks, board.cpu
    cpu.remove(hooks[0])
    handler = hooks[0][1]
    hooks[0] = cpu.on_execute(layout.vmm_base(kernel.base) + region.ENTRY,
                              lambda c: (c["cr3"] == vm.cr3 and seen(c), handler(c)))


def table_bytes(n):
    return patches.HEADER + n * patches.ENTRY.size


def test_the_patch_list_after_lidt_is_a_table_in_the_vmm_region_seen_at_vmm_base():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(data_with_cf, VM_MEMORY, "cf")
    host = vm.vmm_region + layout.VMM_PATCHES
    assert board.memory.read_u32(host) == 0                # nothing reachable from its entry
    through_mmu = []
    at_vmm_entry(board, kernel, vm, lambda c: through_mmu.append(
        c.read_linear(layout.vmm_base(kernel.base) + layout.VMM_PATCHES, table_bytes(1))))
    board.run(400_000)
    assert vm.state != "crashed", vm.fault
    raw = board.memory.read(host, table_bytes(1))
    count = int.from_bytes(raw[:4], "little")
    address, original, mnemonic = patches.ENTRY.unpack_from(raw, patches.HEADER)
    assert count == 1 and original == IRETD and patches.MNEMONICS[mnemonic] == "iretd"
    assert board.memory.read(vm.region[0] + address, 1) == bytes([INT3])   # a guest address, patched
    assert through_mmu and through_mmu[-1] == raw         # the same bytes at VMM_BASE, by the CPU's MMU
    assert list(vm.vmm.patches) == [address]              # the VMM's list is that table


def test_the_vmm_acts_on_the_bytes_a_corrupted_entry_stops_its_vm_only():
    """The entry's address changed in memory: the guest's int3 there is no longer a
    patch the VMM knows, so it is the guest's own int3 (a #GP through the DPL 0 gate
    3, at CPL 3), which the VMM does not emulate: that VM stops, no one else."""
    board, cos, kernel = displaced()
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM_MEMORY, "other")
    vm = kernel.install_vm(data_with_cf, VM_MEMORY, "cf")
    host = vm.vmm_region + layout.VMM_PATCHES
    for _ in range(40):
        board.run(20_000)
        if board.memory.read_u32(host):
            break
    (address,) = vm.vmm.patches
    board.memory.write_u32(host + patches.HEADER, address + 1)     # the entry's address field
    board.run(400_000)
    assert vm.state == "crashed" and vm.fault.startswith(f"#GP at {address:#x} (int3")
    assert other.state != "crashed" and bytes(other.vmm.console).count(b"other") > 3
    assert board.cpu.shutdown is None


def test_the_virtual_isr_is_the_vcpus_bitmap_as_the_coss():
    """Line 1 raised for a VM: when its handler's EOI enters the VMM, the vCPU's
    in_service bytes (read at VMM_BASE by the CPU's MMU) hold bit 1, as the COS's
    virtual ISR would; the EOI clears it. The guest, at CPL 3, cannot read them
    there: its MMU refuses (supervisor pages)."""
    def guest(base):
        gate = lambda vector, label: f"""
        lea eax, [{label}]
        mov word ptr [{guests.IDT + 8 * vector:#x}], ax
        mov word ptr [{guests.IDT + 8 * vector + 2:#x}], 0x3b
        mov word ptr [{guests.IDT + 8 * vector + 4:#x}], 0x8e00
        shr eax, 16
        mov word ptr [{guests.IDT + 8 * vector + 6:#x}], ax"""
        return f"""
start:  jmp setup
disk:   push eax
        mov al, 0x20
        out 0x20, al
eoied:  pop eax
        iretd
timer:  push eax
        mov al, 0x20
        out 0x20, al
        pop eax
        iretd
setup:  {gate(0x20, "timer")}
        {gate(0x21, "disk")}
        {guests.load_idt(0, 0x10f)}
idle:   hlt
        jmp idle
"""
    board, cos, kernel = displaced(quantum=1000)
    vm = kernel.install_vm(guest, VM_MEMORY, "isr")
    code = assemble(guest(0), 0)
    eoi = code.index(bytes.fromhex("e620"), 2)            # the disk handler's `out 0x20, al`
    assert code[2] == 0x50 and eoi == 5                   # disk: push eax; mov al, 0x20; out
    isr = layout.vmm_base(kernel.base) + layout.VMM_VCPU + CosVcpu.OFFSET["in_service"]
    seen, refused = [], []                                # (guest EIP, in_service) at each VMM entry
    at_vmm_entry(board, kernel, vm, lambda c: seen.append(
        (Frame(board.memory, c["esp"]).eip, int.from_bytes(c.read_linear(isr, 4), "little"))))
    board.cpu.on_execute(code.index(0xF4), lambda c: c["cr3"] == vm.cr3 and refused.append(
        guest_reads(c, isr)))                              # the guest's hlt: at CPL 3
    board.run(100_000)
    vm.vmm.raise_line(1)
    board.run(100_000)
    assert vm.state != "crashed", vm.fault
    at = [i for i, (eip, _) in enumerate(seen) if eip == eoi]
    assert len(at) == 1 and seen[at[0]][1] == 0b10        # its EOI trapped with line 1 in service
    assert seen[at[0] + 1] == (eoi + 3, 0)                # its iretd next: the EOI cleared bit 1
    assert refused and not any(refused)                   # supervisor pages: not the guest's
    assert vm.vmm.vcpu.in_service == 0


def guest_reads(cpu, linear):
    try:
        cpu.read_linear(linear, 4)
        return True
    except LinearFault:
        return False


def many_iretd_in_line(count):
    """A guest whose code reachable from its entry holds `count` iretd (each branched over)."""
    return "".join(f"jz skip{i}\niretd\nskip{i}:\n" for i in range(count)) + "idle: hlt\njmp idle\n"


def test_a_guest_with_more_iretd_than_its_patch_table_holds_is_refused_at_install():
    board, cos, kernel = displaced()
    before = (kernel.worlds.vm_top, len(kernel.worlds.all), board.memory.read(0, board.memory.size))
    with pytest.raises(VMError, match=f"patch table .* holds {PATCH_CAPACITY}"):
        kernel.install_vm(many_iretd_in_line(PATCH_CAPACITY + 1), VM_MEMORY, "many")
    assert (kernel.worlds.vm_top, len(kernel.worlds.all), board.memory.read(0, board.memory.size)) == before
    vm = kernel.install_vm(many_iretd_in_line(PATCH_CAPACITY), VM_MEMORY, "full")   # exactly full: runs
    assert len(vm.vmm.patches) == PATCH_CAPACITY == board.memory.read_u32(vm.vmm_region + layout.VMM_PATCHES)


def handlers_past_capacity(base):
    """An IDT of PATCH_CAPACITY + 8 gates, each to its own iretd, then lidt."""
    gates = PATCH_CAPACITY + 8
    code = bytearray(assemble(f"lidt [0x1000]\nsti\nidle: hlt\njmp idle\n", 0))
    code += bytes(0x1000 - len(code))
    code += (gates * 8 - 1).to_bytes(2, "little") + (0x1100).to_bytes(4, "little")
    code += bytes(0x1100 - len(code))
    code += b"".join(encode_gate(0x2000 + v, 0x3B, GATE_INT32, 3) for v in range(gates))
    code += bytes(0x2000 - len(code)) + bytes([IRETD]) * gates
    return bytes(code)


def test_a_lidt_naming_more_handlers_than_the_table_holds_stops_that_vm_only():
    board, cos, kernel = displaced()
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM_MEMORY, "other")
    vm = kernel.install_vm(handlers_past_capacity(0), VM_MEMORY, "lidt")
    board.run(400_000)
    assert vm.state == "crashed" and "patch table" in vm.fault and str(PATCH_CAPACITY) in vm.fault
    assert len(vm.vmm.patches) == 0                                       # nothing half done:
    assert INT3 not in board.memory.read(vm.region[0] + 0x2000, PATCH_CAPACITY + 8)   # no byte patched
    assert other.state != "crashed" and bytes(other.vmm.console).count(b"other") > 3
    assert board.cpu.shutdown is None


def test_a_tick_through_a_gate_that_is_not_present_stops_that_vm_only():
    """Its IDT (loaded by lidt) has no gate 0x20: a CPU would fault delivering
    the tick; the VMM stops the VM rather than jump to the empty gate's offset 0."""
    source = f"""
        {guests.load_idt(0, 0x10f)}
idle:   hlt
        jmp idle
"""
    board, cos, kernel = displaced()
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM_MEMORY, "other")
    vm = kernel.install_vm(source, VM_MEMORY, "nogate")
    board.run(400_000)
    assert vm.state == "crashed" and "gate 0x20" in vm.fault and "not a present" in vm.fault
    assert vm.vmm.vcpu.injected == 0
    assert other.state != "crashed" and bytes(other.vmm.console).count(b"other") > 3
