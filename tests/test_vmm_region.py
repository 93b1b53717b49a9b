"""A VM's VMM region (claims 21-22): its GDT, IDT and x86 are real bytes the CPU
uses, and the VMM reaches the kernel with the same CS and DS, read from the CPU."""
from vmkit.hw.x86 import decode_gate, decode_segment
from vmkit.kernel import layout, paging
from vmkit.kernel.frame import Frame
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests, region

VM_MEMORY = 0x8000


def displaced(**options):
    board, cos, loader = takeover(timer_period=2000, **options)
    assert loader.kernel is not None
    return board, cos, loader.kernel


def user_span(memory, cr3, address):
    """[first, end) of the user-writable pages around `address` in directory `cr3`."""
    user = lambda a: paging.mapping(memory, cr3, a) & (paging.PRESENT | paging.USER | paging.WRITABLE) == 7
    first = address & ~0xFFF
    while first and user(first - layout.PAGE):
        first -= layout.PAGE
    end = first
    while user(end):
        end += layout.PAGE
    return first, end


def checksum_loop(board, vm):
    """The guest address of the checksum guest's loop (its `imul eax, eax, 31`): linear,
    its guest linked at 0 (a breakpoint there also sees the COS at that physical address:
    callers keep what ran under the VM's CR3)."""
    return board.memory.read(vm.region[0], 0x100).index(bytes.fromhex("6bc01f"))


def wrap(cpu, hooks, index, address, before):
    """Put `before(cpu)` ahead of the kernel's own handler hooks[index] at `address`."""
    cpu.remove(hooks[index])
    handler = hooks[index][1]
    hooks[index] = cpu.on_execute(address, lambda c: (before(c), handler(c)))


def test_a_vm_runs_on_its_own_gdt_and_idt_in_its_vmm_region():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM_MEMORY, "vm1")
    seen = []
    board.cpu.on_execute(checksum_loop(board, vm), lambda cpu: cpu["cr3"] == vm.cr3 and seen.append((cpu["gdtr"], cpu["idtr"], cpu["cr3"])))
    board.run(300_000)
    assert seen, "the guest never ran"
    host, vmm_base = vm.vmm_region, layout.vmm_base(kernel.base)
    gdtr, idtr, cr3 = seen[0]
    assert gdtr[1:3] == (host + layout.VMM_GDT, layout.VMM_GDT_LIMIT)     # identity addresses
    assert idtr[1:3] == (host + layout.VMM_IDT, 256 * 8 - 1)
    assert host >= kernel.end                         # taken from the top of RAM
    # mapped supervisor-only at VMM_BASE (to the region's pages) and at the host address
    for linear, physical in ((vmm_base, host), (host, host), (vmm_base + layout.VMM_CODE, host + layout.VMM_CODE)):
        pte = paging.mapping(board.memory, cr3, linear)
        assert pte & ~0xFFF == physical and pte & paging.PRESENT and not pte & paging.USER, hex(linear)
    for v in (3, 13, 14, 0x20, 0xF0):                  # gates to the VMM's stubs, types/DPLs the kernel's
        mine = decode_gate(board.memory.read(idtr[1] + 8 * v, 8))
        kernels = decode_gate(board.memory.read(kernel.base + layout.IDT + 8 * v, 8))
        assert (mine.selector, mine.offset) == (layout.VMM_CODE_SEL, vmm_base + layout.VMM_CODE + 16 * v)
        assert (mine.type, mine.dpl, mine.present) == (kernels.type, kernels.dpl, kernels.present)
    for sel in (layout.VMM_CODE_SEL, layout.VMM_DATA_SEL):
        d = decode_segment(board.memory.read(gdtr[1] + sel, 8))
        assert (d.base, d.limit, d.dpl, d.g) == (0, kernel.end - 1, 0, 1)
    for sel in (layout.KERNEL_CODE_SEL, layout.KERNEL_DATA_SEL):          # the kernel's, unchanged
        assert board.memory.read(gdtr[1] + sel, 8) == board.memory.read(kernel.base + layout.GDT + sel, 8)


def test_the_vmm_reaches_the_kernel_on_the_same_cs_and_ds_read_from_the_cpu():
    """Claim 22: for an interrupt taken while a guest runs, CS and DS (selectors and
    the hidden base and limit, read from the CPU) at the VMM's entry are those at the
    kernel's dispatcher: the VMM's, not the kernel's; the guest's own end at its memory."""
    board, cos, kernel = displaced(vm_tick=None)        # the PIT's IRQ 0 while the guest computes
    vm = kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM_MEMORY, "vm1")
    entries, in_guest = [], []          # ("vmm" | "kernel", esp, vector, CPL of the frame, segments), in order
    segs = lambda cpu: {n: cpu.segment(n)[:3] for n in ("cs", "ds")}

    def entry(who):
        def record(cpu):
            f = Frame(board.memory, cpu["esp"])
            entries.append((who, cpu["esp"], f.vector, f.cs & 3, segs(cpu)))
        return record
    wrap(board.cpu, kernel.vmm_hooks, 0, layout.vmm_base(kernel.base) + region.ENTRY, entry("vmm"))
    wrap(board.cpu, kernel.hooks, 0, kernel.base + kernel.image.dispatch, entry("kernel"))
    board.cpu.on_execute(checksum_loop(board, vm), lambda cpu: cpu["cr3"] == vm.cr3 and in_guest.append((segs(cpu), cpu["cr3"], cpu["eip"])))
    board.run(400_000)
    irqs = [i for i, e in enumerate(entries) if e[0] == "vmm" and e[2] == 0x20 and e[3] == 3]
    assert len(irqs) > 5 and in_guest
    end = kernel.end - 1
    for i in irqs:                                     # the kernel's dispatcher, next, for the same frame
        _, esp, _, _, vmm_segs = entries[i]
        assert entries[i + 1][:3] == ("kernel", esp, 0x20)
        assert entries[i + 1][4] == vmm_segs == {"cs": (layout.VMM_CODE_SEL, 0, end),
                                                 "ds": (layout.VMM_DATA_SEL, 0, end)}
    from_cos = [e[4] for e in entries if e[0] == "kernel" and e[3] == 1]    # the COS's entries: the kernel's own
    assert from_cos and all(s["cs"][0] == layout.KERNEL_CODE_SEL and s["ds"][0] == layout.KERNEL_DATA_SEL
                            for s in from_cos)
    segments, cr3, eip = in_guest[0]
    first, after_last = user_span(board.memory, cr3, eip)        # the guest's memory, from its page directory
    assert after_last - first == VM_MEMORY
    for name in ("cs", "ds"):                          # truncated: its first byte past its memory is past the limit
        sel, base, limit = segments[name]
        assert sel & 3 == 3 and base == 0 and limit == after_last - 1


def test_a_guest_fault_is_decided_by_its_vmm_and_never_reaches_the_dispatcher():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(lambda base: guests.console(base, "vm1"), VM_MEMORY, "vm1")
    guest_faults = []

    def dispatcher(cpu):
        f = Frame(board.memory, cpu["esp"])
        if f.cs & 3 == 3 and f.vector < 32:
            guest_faults.append(f.vector)
    wrap(board.cpu, kernel.hooks, 0, kernel.base + kernel.image.dispatch, dispatcher)
    board.run(400_000)
    emulated = board.trace.of("vmm.emulate")
    assert len(emulated) > 5 and len(bytes(vm.vmm.console).splitlines()) > 3   # its cli/sti/hlt, its out
    assert guest_faults == []                          # the VMM decided each: it jumped past the dispatcher
    entries = board.memory.read_u32(vm.vmm_region + layout.VMM_ENTRIES)       # counted by the VMM's x86
    through_its_idt = [e for e in board.trace.of("cpu.deliver") if e["idt"] == vm.vmm_region + layout.VMM_IDT]
    assert entries == len(through_its_idt) > len(emulated)
    (first,) = board.trace.of("vmm.entered")
    assert (first["cs"], first["ds"]) == (layout.VMM_CODE_SEL, layout.VMM_DATA_SEL)
    assert first["cs_limit"] == first["ds_limit"] == kernel.end - 1
    assert board.cpu.shutdown is None


def test_the_address_space_read_from_the_page_directory_and_gdt():
    from vmkit.kernel import address_space
    board, cos, kernel = displaced()
    vm = kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM_MEMORY, "vm1")
    spans = address_space.spans(kernel, vm)
    by = {}
    for s in spans:
        by.setdefault(s.name, []).append(s)
    (guest,) = by["guest memory"]
    assert guest.end - guest.first == VM_MEMORY and guest.host == vm.region[0] and guest.writable
    (vmm,) = by["VMM region"]
    assert (vmm.first, vmm.end, vmm.host, vmm.user) == (layout.vmm_base(kernel.base), kernel.base,
                                                        vm.vmm_region, False)
    (k,) = by["kernel"]
    assert (k.first, k.end, k.host) == (kernel.base, kernel.end, kernel.base)
    assert by["VMM region (host)"][0].first == vm.vmm_region
    assert [s for s in spans if s.user and s.writable] == [guest]      # nothing else the guest may touch
    segs = {s.name: s for s in address_space.segments(kernel, vm)}
    assert (segs["guest data"].base, segs["guest data"].limit) == (0, guest.end - 1)
    assert segs["VMM code"].limit == segs["VMM data"].limit == k.end - 1 and segs["VMM code"].dpl == 0
