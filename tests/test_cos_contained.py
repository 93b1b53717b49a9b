"""The displaced COS stays displaced: its segments end below the kernel, the
platform checks the limit, and a COS store into the kernel never lands."""
import pytest

from vmkit.cos.cos import COS
from vmkit.cos import layout as cos_layout
from vmkit.kernel import layout, save_area
from test_takeover import booted, insmod


@pytest.fixture
def displaced():
    board, cos, loader = booted()
    insmod(board, cos, loader)
    assert loader.kernel is not None, board.trace.text(0, "load.refused")
    return board, cos, loader


def run_module(board, cos, source):
    mark = board.trace.mark()
    cos.put_module(COS.make_module(source))
    cos.run_command("insmod", 3_000_000)
    return mark


def test_a_cos_store_into_the_kernels_idt_faults_into_the_kernel_and_lands_nowhere(displaced):
    board, cos, loader = displaced
    kernel = loader.kernel
    idt = kernel.base + layout.IDT
    gate = idt + 13 * 8
    before = board.memory.read(idt, 256 * 8)
    mark = run_module(board, cos, f"""
init:   mov dword ptr [{gate:#x}], 0xdeadbeef       ; the kernel's #GP gate, at CPL 1
        mov dword ptr [{gate + 4:#x}], 0x0000ee00
        mov dword ptr [{cos_layout.MODULE_AREA + 0x800:#x}], 0x600d     ; its own memory still works
        xor eax, eax
        ret""")
    assert board.memory.read(idt, 256 * 8) == before               # not a byte of the IDT changed
    assert board.memory.read_u32(cos_layout.MODULE_AREA + 0x800) == 0x600d
    gp = [e for e in board.trace.since(mark, "cpu.fault") if "limit" in e["why"]]
    assert [(e["vector"], e["error"]) for e in gp] == [(13, 0), (13, 0)]
    seen = board.trace.since(mark, "kernel.cos_limit")
    assert [e["address"] for e in seen] == [gate, gate + 4]
    assert seen[0]["what"] == "the kernel's IDT"
    delivered = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 13]
    assert delivered and all(kernel.contains(e["handler"]) for e in delivered)   # the kernel's IDT
    assert cos.var("MODULE_RESULT") == 0                            # its init ran to the end
    ticks = cos.ticks()
    board.run(500_000)
    assert cos.ticks() > ticks and board.cpu.shutdown is None       # the COS still runs


def test_the_cos_segments_end_below_the_kernel(displaced):
    board, cos, loader = displaced
    base = loader.kernel.base
    assert board.cpu.limits.ranges and board.cpu.limits.ranges[0][1] == 0xFFFFFFFF
    assert board.cpu.limits.ranges[0][0] <= base
    assert board.memory.read_u32(cos_layout.RAM_TOP) == base        # its allocator stops there too


def test_a_vm_goes_above_the_kernel_past_the_cos_limit(displaced):
    board, cos, loader = displaced
    vm = loader.kernel.install_vm("l: jmp l", 0x4000)
    assert vm.region[0] >= loader.kernel.end
    mark = run_module(board, cos, f"""
init:   mov dword ptr [{vm.region[0]:#x}], 0xdeadbeef
        xor eax, eax
        ret""")
    assert board.memory.read_u32(vm.region[0]) != 0xdeadbeef
    assert [e["what"] for e in board.trace.since(mark, "kernel.cos_limit")] == ["vm1's memory"]


def test_the_cos_cannot_borrow_a_vms_flat_segment(displaced):
    """`mov ds` of a DPL 3 data selector is legal at CPL 1, and the VMs' is flat: the
    COS's GDTR limit ends before the VMs' descriptors, so the CPU refuses the load."""
    board, cos, loader = displaced
    kernel = loader.kernel
    kernel.install_vm("l: jmp l", 0x4000)              # the DPL 3 descriptors now exist
    gate = kernel.base + layout.IDT + 13 * 8
    before = board.memory.read(gate, 8)
    user_data = layout.USER_DATA_SEL | layout.USER_RPL
    mark = run_module(board, cos, f"""
init:   mov ax, {user_data:#x}
        mov ds, ax
        mov dword ptr [{gate:#x}], 0xdeadbeef
        mov ax, {layout.COS_DATA_SEL:#x}
        mov ds, ax
        xor eax, eax
        ret""")
    assert board.memory.read(gate, 8) == before
    faults = [(e["vector"], e["error"]) for e in board.trace.since(mark, "cpu.fault")]
    assert (13, layout.USER_DATA_SEL) in faults                    # the selector load itself,
    m = board.memory                                               # for the COS's own handler
    assert (m.read_u32(cos_layout.FAULT_VECTOR), m.read_u32(cos_layout.FAULT_ERROR)) == (13, layout.USER_DATA_SEL)
    assert not board.trace.since(mark, "kernel.cos_limit")         # (the store after it never ran)
    cos_world = kernel.worlds.all[0]                                # the VM runs once the COS idles:
    limit = (board.cpu["gdtr"][2] if kernel.worlds.current is cos_world  # then its sgdt, saved
             else save_area.read_area(board.memory, cos_world.area)["gdtr.limit"])   # at the switch
    assert limit < layout.USER_CODE_SEL                             # while the COS runs


def test_a_cos_load_from_the_kernel_leaves_its_register_as_it_was(displaced):
    board, cos, loader = displaced
    idt = loader.kernel.base + layout.IDT
    out = cos_layout.MODULE_AREA + 0x800
    mark = run_module(board, cos, f"""
init:   mov eax, 0x1234
        mov eax, [{idt:#x}]                  ; past its limit: skipped
        mov [{out:#x}], eax
        xor eax, eax
        ret""")
    assert board.memory.read_u32(out) == 0x1234
    assert [e["what"] for e in board.trace.since(mark, "kernel.cos_limit")] == ["the kernel's IDT"]


def test_the_limit_hooks_follow_the_world_the_cpu_runs():
    """A VM's world runs with paging on, where Unicorn's memory hooks see physical
    addresses: it has no limit hook (its guest's limit, at its memory's end, is checked
    where its access page-faults: hw/limits.py), so its accesses cost nothing; the COS's
    world (paging off) gets the COS's hooks back."""
    from vmkit.hw.limits_prepared import STRADDLE
    from vmkit.hw.x86 import decode_segment
    # vm_tick=None: turns of PIT ticks, so 200,000 instructions sampled every 100 catch
    # the COS at CPL 1 between the VM's turns (at 100 Hz the VM's one turn is 2M; the COS
    # mostly idles, so a coarser sampling may meet it at CPL 1 once or never)
    board, cos, loader = booted(vm_tick=None)
    insmod(board, cos, loader)
    kernel = loader.kernel
    vm = kernel.install_vm("l: jmp l", 0x4000)
    ranges = {}
    for _ in range(2000):
        board.run(100)
        world = kernel.worlds.current.kind
        if board.cpu.cpl != 0:
            ranges.setdefault(world, set()).add(board.cpu.limits.ranges)
    guest = decode_segment(board.memory.read(vm.vmm_region + layout.VMM_GDT + layout.USER_DATA_SEL, 8))
    assert guest.limit == 0x4000 - 1 and ranges["vm"] == {()}
    assert len(ranges["cos"]) == 1 and () not in ranges["cos"]
    assert kernel.worlds.switches_of(vm) > 0


def test_a_cos_store_into_a_vms_vmm_region_or_page_tables_lands_nowhere_and_is_named(displaced):
    """The VM's GDT (its guest's and VMM's segments), its VMM's x86 and its page directory
    lie above the kernel: past the COS's limit, each store refused and reported by name."""
    board, cos, loader = displaced
    kernel = loader.kernel
    vm = kernel.install_vm("l: jmp l", 0x4000, "vm")
    gdt, stubs = vm.vmm_region + layout.VMM_GDT + layout.VMM_CODE_SEL, vm.vmm_region + layout.VMM_CODE
    before = {a: board.memory.read_u32(a) for a in (gdt, stubs, vm.cr3)}
    mark = run_module(board, cos, f"""
init:   mov dword ptr [{gdt:#x}], 0xffff            ; the VMM's code segment
        mov dword ptr [{stubs:#x}], 0xdeadbeef      ; its first entry stub
        mov dword ptr [{vm.cr3:#x}], 0x87           ; its page directory's first entry
        xor eax, eax
        ret""")
    m = board.memory                                 # (the CPU sets accessed bits as the VM runs)
    assert m.read_u32(gdt) == before[gdt] != 0xFFFF and m.read_u32(stubs) == before[stubs]
    assert m.read_u32(vm.cr3) & ~0x60 == before[vm.cr3] & ~0x60 != 0x87
    assert [e["what"] for e in board.trace.since(mark, "kernel.cos_limit")] == [
        "vm's VMM region", "vm's VMM region", "vm's page tables"]
    assert cos.var("MODULE_RESULT") == 0 and board.cpu.shutdown is None


def test_a_cos_load_past_its_limit_from_memory_the_machine_lacks_is_the_limits_gp(displaced):
    """0xff800000 is past the COS's limit and past the end of RAM: a CPU checks the limit
    first, so the #GP is the limit's (the platform's own #GP for memory it lacks comes after)."""
    board, cos, loader = displaced
    mark = run_module(board, cos, """
init:   mov eax, [0xff800000]
        xor eax, eax
        ret""")
    faults = [e["why"] for e in board.trace.since(mark, "cpu.fault")
              if e["vector"] == 13 and e["eip"] >= cos_layout.MODULE_AREA]
    assert faults == ["4-byte access at 0xff800000 past the limit 0x3fffff of DS"], faults
    assert [e["address"] for e in board.trace.since(mark, "kernel.cos_limit")] == [0xFF800000]
    assert cos.var("MODULE_RESULT") == 0 and board.cpu.shutdown is None
