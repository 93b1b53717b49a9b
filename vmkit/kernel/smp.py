"""Several CPUs (claims 16-17, 37-38): each CPU is scheduled separately and
represented by a system world, and each has its own mapping cache.

Both CPUs share memory, the kernel's code, GDT and IDT. What each CPU has of
its own lives in its per-CPU block of kernel memory (layout.PERCPU):

  a TSS              its ESP0 is this CPU's kernel stack, so two CPUs that
                     trap at once push their frames on different stacks
                     (CPU 0 keeps the loader's TSS, with the COS's I/O bitmap)
  a VM TSS           what its VM worlds run with: the same ESP0, no I/O bitmap
  a kernel stack     (CPU 0's is the loader's, under layout.STACK_TOP)
  its system world   a world block (save area) like any world's; its address
                     space, a page directory mapping the kernel's block
                     supervisor-only plus this CPU's mapping window; its
                     control thread, the image's `system_world` loop
                     (sti; hlt; jmp) at CPL 0, ESP at the top of its stack
  a mapping cache    mapcache.py: the window's page table and the counters
  a timer            its local APIC's (hw/lapic.py), vector TIMER_VECTOR:
                     the PIC reaches CPU 0 only

The COS stays on CPU 0, as on ESX, where the kernel idles and works in the
stub with the COS's frame kept (kernel.py's away mechanism): CPU 0's system
world has its block, directory and cache but is not switched to. Another
CPU starts in its system world and switches, with the claimed switch
(switch.py), between it and the VMs placed on it. A system world's frame
always sits at the top of its CPU's stack, like a CPL 3 world's (esp0), so
its ESP after the stub's iretd is where the switch says (switch.py puts a
CPL 0 world's frame where its stack ends).
"""
from vmkit.hw import lapic
from vmkit.hw.asm import assemble
from vmkit.hw.lapic import EOI, LVT_TIMER, PERIODIC, TIMER_INITIAL
from vmkit.hw.x86 import encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE, EFLAGS_IF
from . import layout, paging, save_area, switch
from .frame import Frame
from .mapcache import MappingCache, SHOOTDOWN_VECTOR, WINDOW
from .world import Processor, World

TIMER_VECTOR = 0xF0             # each CPU's local APIC timer
RESCHEDULE_VECTOR = 0xF3        # "a world of yours can run": the IPI that ends a CPU's idling (worlds.wake)
DEFAULT_TIMER = 10_000          # instructions per tick when the COS never programmed the PIT
GDT_LIMIT = layout.CPU1_VM_TSS_SEL + 7


# A starting CPU programs its own local APIC timer, as each CPU's kernel code does on a PC:
# the registers are memory-mapped at lapic.BASE in every CPU's address map, and a store
# there reaches the APIC of the CPU that makes it (hw/lapic.py). The firmware starts the
# CPU here, ESP at its first frame, whose EDX and ECX slots hold the LVT and the count;
# then the dispatcher, which finds GO_SWITCH in the frame. The stores are found in the
# loaded image by their bytes (they hold no address the loader relocates).
TIMER_STORES = f"""\
cpu_start:                      ; this CPU's own timer: the vector and mode, then the count
        mov eax, [esp + {Frame.OFFSET['edx']}]
        mov [{lapic.BASE + LVT_TIMER:#x}], eax
        mov eax, [esp + {Frame.OFFSET['ecx']}]
        mov [{lapic.BASE + TIMER_INITIAL:#x}], eax"""
KERNEL_SOURCE = TIMER_STORES + """
        jmp dispatch            ; its system world next (GO_SWITCH in the frame)"""
_TIMER_CODE = assemble(TIMER_STORES, 0)


def cpu_start(kernel):
    """Where `cpu_start` sits in the loaded kernel."""
    return kernel.routine(_TIMER_CODE)


def percpu(kernel, index):
    return kernel.base + layout.PERCPU + index * layout.PERCPU_SIZE


def stack_top(kernel, index):
    return kernel.base + layout.STACK_TOP if index == 0 else percpu(kernel, index) + layout.CPU_STACK_TOP


def cpu_tss(kernel, index):
    """(selector, base) of a CPU's own TSS."""
    if index == 0:
        return layout.KERNEL_TSS_SEL, kernel.base + layout.TSS
    return layout.CPU1_TSS_SEL, percpu(kernel, index) + layout.CPU_TSS


def vm_tss(kernel, index):
    """(selector, base) of the TSS the VM worlds of a CPU run with."""
    if index == 0:
        return layout.VM_TSS_SEL, kernel.base + layout.VM_TSS
    return layout.CPU1_VM_TSS_SEL, percpu(kernel, index) + layout.CPU_VM_TSS


def window(kernel, index):
    """(virtual address, page table) of a CPU's mapping window (paging.build)."""
    return WINDOW, percpu(kernel, index) + layout.WINDOW_TABLE


def kernel_tables(kernel):
    return {"gdtr.base": kernel.base + layout.GDT, "gdtr.limit": GDT_LIMIT,
            "idtr.base": kernel.base + layout.IDT, "idtr.limit": 256 * 8 - 1}


def write_gdt(kernel):
    """DPL 3 flat code/data, every CPU's VM TSS and CPU 1's TSS into the kernel's
    GDT (the loader wrote entries up to CPU 0's TSS). The TSS descriptors are
    available: `ltr` (switch.py) marks the one a CPU loads busy, and refuses one
    already busy. The COS's world keeps the GDTR limit the loader gave it, which
    ends before these: the flat DPL 3 data segment would let CPL 1 past its own
    limit (`mov ds` of a DPL 3 data selector is allowed at CPL 1), and a selector
    past the GDT's limit is a #GP the CPU itself raises. VM worlds load the whole
    GDT (kernel_tables)."""
    memory = kernel.memory
    entries = [encode_segment(0, 0xFFFFFFFF, CODE_RX, 3), encode_segment(0, 0xFFFFFFFF, DATA_RW, 3)]
    for index in range(2):
        sel, base = vm_tss(kernel, index)
        memory.write(base, encode_tss(stack_top(kernel, index), layout.KERNEL_DATA_SEL), code=False)
        entries.append(encode_segment(base, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
        if index == 0:
            sel, base = cpu_tss(kernel, 1)
            memory.write(base, encode_tss(stack_top(kernel, 1), layout.KERNEL_DATA_SEL), code=False)
            entries.append(encode_segment(base, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    memory.write(kernel.base + layout.GDT + layout.USER_CODE_SEL, b"".join(entries), code=False)
    for cpu in kernel.board.cpus:
        cpu.descriptors_changed()                 # the platform's limit checks read it again


def processor(kernel, cpu):
    """A CPU's system world, address space and mapping cache, written into its block."""
    index, block = cpu.index, percpu(kernel, cpu.index)
    system = World(f"system{index}", "system", block + layout.SYSTEM_WORLD, (block, layout.PERCPU_SIZE),
                   cpu=index)
    kernel.memory.write(system.area, bytes(layout.WORLD_SIZE), code=False)
    system.cr3 = paging.build(kernel.memory, block + layout.SYSTEM_PAGEDIR,
                              kernel.block, [],
                              window=window(kernel, index))
    state = dict.fromkeys(save_area.ITEMS, 0)
    state.update(kernel_tables(kernel))
    data = layout.KERNEL_DATA_SEL                 # the kernel's own (image.py's `common` loads it)
    state.update(eip=kernel.base + kernel.image.system_world, esp=stack_top(kernel, index) - 8,
                 eflags=EFLAGS_IF | 2, cs=layout.KERNEL_CODE_SEL, ss=layout.KERNEL_DATA_SEL,
                 ds=data, es=data, fs=data, gs=data, cr3=system.cr3,
                 **{"tr.sel": cpu_tss(kernel, index)[0]})
    save_area.write_area(kernel.memory, system.area, state)
    cache = MappingCache(kernel, cpu, block + layout.WINDOW_TABLE, block + layout.CACHE_COUNTERS)
    return Processor(index, system, cache)


def start_processors(kernel):
    """At initialisation (on CPU 0): every other CPU leaves the firmware's wait
    with a frame like a trap's on its stack, whose vector is GO_SWITCH. It
    starts at `cpu_start`, where its own x86 programs its local
    APIC timer (the frame's EDX and ECX: the LVT and the count CPU 0 chose),
    and jumps to the dispatcher: the switch's x86 loads its system world from its
    save area, as any world is loaded (switch.py), and the stub's iretd starts it."""
    board = kernel.board
    if len(board.cpus) == 1:
        return
    kernel.worlds._prepare_vm_support()
    period = kernel.worlds.vm_tick or board.pit.period or DEFAULT_TIMER   # it runs only VMs and its system world
    for p in kernel.worlds.cpus[1:]:
        state = save_area.read_area(kernel.memory, p.system.area)
        frame = Frame(kernel.memory, stack_top(kernel, p.index) - Frame.SIZE)
        kernel.memory.write(frame.address, bytes(Frame.SIZE), code=False)
        frame.vector, frame.edx, frame.ecx = layout.GO_SWITCH, TIMER_VECTOR | PERIODIC, period
        p.switching = switch.Switch(p.system, p.system, "start")
        board.boot(cpu_start(kernel), frame.address, cpu=p.index)   # CPL 0, flat
        p.since = board.now()
        kernel.trace.emit("smp.start", p.index, world=p.system.name, eip=state["eip"],
                          cr3=state["cr3"], timer=period)


LOCAL_VECTORS = frozenset((TIMER_VECTOR, SHOOTDOWN_VECTOR, RESCHEDULE_VECTOR))


def local_interrupt(kernel, frame, cpu, vector):
    """A CPU's local APIC vector entered the kernel: True if it was one (handled)."""
    if vector not in LOCAL_VECTORS:
        return False
    cpu.lapic.write(EOI, 0)
    worlds = kernel.worlds
    p = worlds.cpus[cpu.index]
    if vector == SHOOTDOWN_VECTOR:
        p.cache.take_shootdown(frame)              # the stub's x86 invlpgs the window (mapcache.py)
        return True
    if vector == RESCHEDULE_VECTOR:                # CPU 0 idling in the stub: back to the dispatcher
        if p.current.kind == "system":             # after this, where Kernel.resume picks the world
            worlds.switch_to(frame, worlds.pick(p), p)
        return True
    worlds.tick(frame, p)
    if frame.vector == layout.GO_SWITCH:
        return True                               # the rest is the switch's
    if frame.cs & 3 == 3 and p.current.kind == "vm":
        worlds.guard(frame, lambda: p.current.vmm.deliver_pending(frame), p)
    return True
