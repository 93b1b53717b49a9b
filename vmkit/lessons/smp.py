"""The machines of notebook 07: two CPUs, each with its system world and its
own mapping cache; the stale translation that makes a shared window costly.

Everything here is read from the machine: each CPU's registers (TR, CR3,
its TSS's ESP0 in memory), the world blocks and save areas, the mapping
caches' counters in kernel memory and the trace's `switch.*`, `lapic.*` and
`mapcache.*` events.
"""
import struct

from vmkit.hw.board import Board
from vmkit.hw.x86 import TSS_ESP0, encode_gate
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from vmkit.hw.asm import assemble
from vmkit.kernel import mapcache
from vmkit.kernel.mapcache import COUNTERS, MappingCache, SHOOTDOWN_VECTOR, SLOTS, WINDOW
from vmkit.kernel.layout import PAGE
from vmkit.kernel.smp import RESCHEDULE_VECTOR
from vmkit.hw.x86 import CR0_PG
from vmkit.lessons import takeover
from vmkit.lessons.worlds import Turn
from vmkit.vmm import guests

VM_MEMORY = 0x8000
NAMES = ("vm1", "vm2", "vm3", "vm4")


def two_cpus(timer_period=2000, quantum=2, vms=NAMES):
    """A displaced COS on a two-CPU board and console VMs placed by the kernel:
    (board, cos, kernel, [vm, ...])."""
    # vm_tick=None: every world ticks at timer_period, so the lesson's turns and shootdowns come in a short run
    board, cos, loader = takeover.takeover(timer_period=timer_period, cpus=2, vm_tick=None)
    kernel = loader.kernel
    kernel.worlds.quantum = quantum
    placed = [kernel.install_vm(lambda base, n=name: guests.console(base, n), VM_MEMORY, name)
              for name in vms]
    return board, cos, kernel, placed


def processors(board, kernel):
    """Per CPU, from its registers and memory: the system world, what runs now,
    its TSS and ESP0, CR3, and its local APIC timer's ticks."""
    rows = []
    for p in kernel.worlds.cpus:
        cpu = board.cpus[p.index]
        tr_sel, tss, _, _ = cpu["tr"]
        rows.append({"cpu": p.index, "system world": p.system.name, "running": p.current.name,
                     "TR": tr_sel, "TSS": tss, "ESP0": board.memory.read_u32(tss + TSS_ESP0),
                     "CR3": cpu["cr3"], "CPL": cpu.cpl, "APIC ticks": cpu.lapic.ticks,
                     "system world CR3": p.system.cr3})
    return rows


def placement(kernel):
    """Every world, the CPU it is placed on, and its accounting."""
    w = kernel.worlds
    rows = [{"world": x.name, "kind": x.kind, "cpu": x.cpu, "state": x.state,
             "instructions": w.instructions_of(x), "switches in": w.switches_of(x),
             "ticks": w.ticks_of(x)} for x in w.all]
    for p in w.cpus:
        s = p.system
        rows.append({"world": s.name, "kind": "system", "cpu": p.index, "state": "idle loop",
                     "instructions": w.instructions_of(s), "switches in": w.switches_of(s),
                     "ticks": w.ticks_of(s)})
    return rows


def cache_counters(kernel):
    """Each CPU's mapping-cache counters, read from kernel memory, and its slots."""
    return [{"cpu": p.index, **{n: p.cache.count(n) for n in COUNTERS},
             "slots": [None if s is None else s for s in p.cache.slots]} for p in kernel.worlds.cpus]


def timeline(events, cpu, first):
    """The turns CPU `cpu` gave its worlds, from its switch.begin events among
    `events` (a stretch of the trace); `first` is the world it ran when the
    stretch began."""
    if not events:
        return []
    turns, who, start = [], first, events[0].time
    for e in events:
        if e.kind == "switch.begin" and e.cpu == cpu:
            turns.append(Turn(who, start, e.time))
            who, start = e["to"], e.time
    turns.append(Turn(who, start, max(start, events[-1].time)))
    return [t for t in turns if t.end > t.start]


def window(board, kernel, cpu):
    """CPU `cpu`'s window as its MMU sees it, from inside the kernel: per slot, the
    window address, the page its PTE maps, the page the CPU translates it to (its
    TLB first), and the first bytes the CPU reads there."""
    in_kernel(board, cpu)
    cache, c = kernel.worlds.cpus[cpu].cache, board.cpus[cpu]
    rows = []
    for i, page in enumerate(cache.slots):
        at = WINDOW + i * PAGE
        rows.append({"slot": i, "window address": at, "PTE maps": page,
                     "CPU translates to": None if page is None else cache.through_cpu(at),
                     "CPU reads": None if page is None else c.read_linear(at, 8)})
    return rows


def cache_code(kernel):
    """The mapping cache's x86 in the kernel image, found in the kernel's memory by
    its bytes and disassembled: [(address, text)], each routine under its label."""
    image = kernel.memory.read(kernel.base, len(kernel.image.data))
    cs, rows = Cs(CS_ARCH_X86, CS_MODE_32), []
    for label, source in (("window_shootdown", mapcache.SHOOTDOWN_SOURCE),
                          ("window_invlpg", mapcache.INVLPG_SOURCE)):
        code = assemble(source, 0)
        at = kernel.base + image.index(code)
        rows.append((at, label + ":"))
        rows += [(i.address, "    " + f"{i.mnemonic} {i.op_str}".strip()) for i in cs.disasm(code, at)]
    return rows


# ---- why one window per CPU ---------------------------------------------------------
def share_window(kernel, shootdown=True, slots=2 * SLOTS):
    """Turn the per-CPU caches into ONE window both CPUs use (the design the
    claims avoid), by default with as many slots as the two had together: CPU
    1's address spaces are repointed at CPU 0's window table, both CPUs share
    the slots, and every remap must shoot the other CPU's TLB down with an IPI
    (mapcache.py). shootdown=False skips the IPIs, to see what goes wrong."""
    p0, p1 = kernel.worlds.cpus
    table = p0.cache.table
    for world in [p1.system] + [w for w in kernel.worlds.all if w.cpu == 1]:
        kernel.memory.write(world.cr3 + 4 * (WINDOW >> 22), struct.pack("<I", table | 3), code=False)
    cpu0, cpu1 = kernel.board.cpus
    shared0 = MappingCache(kernel, cpu0, table, p0.cache.counters, shared_by=[cpu1], slots=slots)
    shared1 = MappingCache(kernel, cpu1, table, p1.cache.counters, shared_by=[cpu0], slots=slots)
    shared1.state = shared0.state               # one recency clock (the slots: the one table)
    shared0.shootdown = shared1.shootdown = shootdown
    cpu0.flush_tlb()
    cpu1.flush_tlb()
    p0.cache, p1.cache = shared0, shared1


def in_kernel(board, cpu, step=16, limit=400_000):
    """Run the board until CPU `cpu` is where the kernel can use its window
    (CPL 0, paging on: the dispatcher's stub, or a system world's idle loop)."""
    c = board.cpus[cpu]
    for _ in range(limit // step):
        if c.cpl == 0 and c["cr0"] & CR0_PG:
            return
        board.run(step)
    raise RuntimeError(f"CPU {cpu} never reached the kernel with paging on in {limit} instructions")


def stale_window(shootdown, timer_period=2000):
    """A shared window on the running kernel, with and without the shootdown.
    One VM, on CPU 0; CPU 1 idles in its system world (one address space, so
    nothing else flushes its TLB). The window has 2 slots. The kernel on CPU 1
    reads the VM's code page through the window; CPU 0's VMM then injects
    ticks, evicting that slot for the VM's stack page; the kernel on CPU 1
    reads the stack page, a hit in the shared table. Returns what CPU 1's MMU
    did: {slot, "PTE maps", "CPU 1 translates to", "read gives", ...}."""
    # vm_tick=None: every world ticks at timer_period, so the lesson's turns and shootdowns come in a short run
    board, cos, loader = takeover.takeover(timer_period=timer_period, cpus=2, vm_tick=None)
    kernel = loader.kernel
    vm = kernel.install_vm(lambda base: guests.console(base, "vm1"), VM_MEMORY, "vm1", cpu=0)
    share_window(kernel, shootdown=shootdown, slots=2)
    board.run(60_000)
    cache1 = kernel.worlds.cpus[1].cache
    code_page, stack_page = vm.region[0], vm.region[0] + VM_MEMORY - 0x1000
    in_kernel(board, 1)
    cache1.read(code_page, 4)
    slot = cache1.slots.index(code_page)
    mark = board.trace.mark()
    while cache1.slots[slot] != stack_page:            # CPU 0's VMM needs the slot for the stack
        board.run(500)
    in_kernel(board, 1)
    seen = cache1.read(stack_page, PAGE)
    window = WINDOW + slot * PAGE
    events = board.trace.since(mark)
    return {"slot": slot, "PTE maps": cache1.translate(window), "CPU 1 translates to": cache1.through_cpu(window),
            "read gives": ("the stack page" if seen == board.memory.read(stack_page, PAGE) else
                           "the code page" if seen == board.memory.read(code_page, PAGE) else "?"),
            "IPIs sent": len([e for e in events if e.kind == "lapic.ipi" and e.cpu == 0]),
            "shootdowns CPU 1 took": len([e for e in events if e.kind == "cpu.deliver" and e.cpu == 1
                                          and e["vector"] == SHOOTDOWN_VECTOR]),
            "code page": code_page, "stack page": stack_page}


def compare_windows(instructions=300_000, timer_period=2000):
    """The same two-CPU run with per-CPU windows and with one shared window:
    {design: {counter: total over both CPUs, "IPIs accepted", "shootdowns delivered",
    "VM console lines"}} (the last three read from the local APICs, the CPUs' delivery
    events and the VMs' consoles)."""
    out = {}
    for design in ("one window per CPU", "one shared window"):
        board, cos, kernel, vms = two_cpus(timer_period=timer_period)
        if design == "one shared window":
            share_window(kernel)
        mark = board.trace.mark()
        board.run(instructions)
        totals = {n: sum(p.cache.count(n) for p in kernel.worlds.cpus) for n in COUNTERS}
        woken = len([e for e in board.trace.of("lapic.ipi") if e["vector"] == RESCHEDULE_VECTOR])
        totals["IPIs accepted"] = sum(c.lapic.ipis_received for c in board.cpus) - woken   # not "a VM
                                                                        # can run" (worlds.wake)
        totals["shootdowns delivered"] = len([e for e in board.trace.since(mark, "cpu.deliver")
                                              if e["vector"] == SHOOTDOWN_VECTOR])
        totals["VM console lines"] = sum(bytes(v.vmm.console).count(b"\n") for v in vms)
        out[design] = totals
    return out


def stale_translation():
    """What a shootdown is for, on the bare board: both CPUs translate a window
    address through ONE page table; CPU 1 reads it in a loop; the PTE is
    changed to another page (as CPU 0's kernel would on an eviction). CPU 1
    keeps reading the old page from its TLB until it executes `invlpg` itself:
    here in its handler for the shootdown IPI CPU 0's local APIC sends.
    Returns [(what happened, the value CPU 1 read)]."""
    board = Board(cpus=2, keyboard=False, sensor=False)
    mem = board.memory
    pagedir, table, window_table, idt = 0x20000, 0x21000, 0x22000, 0x24000
    old_page, new_page, result = 0x30000, 0x31000, 0x32000
    mem.write(pagedir, struct.pack("<I", table | 3), code=False)
    mem.write(pagedir + 4 * (WINDOW >> 22), struct.pack("<I", window_table | 3), code=False)
    mem.write(table, b"".join(struct.pack("<I", (i << 12) | 3) for i in range(256)), code=False)
    last_table = 0x23000                    # emu_start's `until` page must translate (kernel/paging.py)
    mem.write(pagedir + 4 * 0x3FF, struct.pack("<I", last_table | 3), code=False)
    mem.write(last_table + 4 * 0x3FF, struct.pack("<I", 0x0 | 1), code=False)
    mem.write(window_table, struct.pack("<I", old_page | 3), code=False)
    mem.write(old_page, b"OLD!", code=False)
    mem.write(new_page, b"NEW!", code=False)
    board.load(0x1000, "l: hlt\njmp l")
    board.load(0x2000, f"sti\nl: mov eax, [{WINDOW:#x}]\nmov [{result:#x}], eax\njmp l")
    board.load(0x3000, f"shootdown: invlpg [{WINDOW:#x}]\niretd")      # CPU 1's IPI handler
    mem.write(idt + SHOOTDOWN_VECTOR * 8, encode_gate(0x3000, 0x08), code=False)
    board.boot(0x1000, cpu=0)
    board.boot(0x2000, cpu=1)
    board.cpus[1]["idtr"] = (0, idt, 0x7FF, 0)
    for cpu in board.cpus:
        cpu["cr3"] = pagedir
        cpu["cr0"] = cpu["cr0"] | CR0_PG
    seen = lambda: mem.read(result, 4).decode()
    board.run(1000)
    rows = [("CPU 1 reads the window; the PTE maps the page holding OLD!", seen())]
    mem.write(window_table, struct.pack("<I", new_page | 3), code=False)
    board.cpus[0].flush_tlb()
    board.run(1000)
    rows.append(("PTE changed to the page holding NEW!, CPU 0's TLB flushed", seen()))
    board.cpus[0].lapic.send_ipi(1, SHOOTDOWN_VECTOR)
    board.run(1000)
    taken = [e for e in board.trace.of("cpu.deliver") if e.cpu == 1 and e["vector"] == SHOOTDOWN_VECTOR]
    rows.append((f"CPU 0's local APIC sends the shootdown IPI; CPU 1 takes it ({len(taken)}x) "
                 "and executes invlpg", seen()))
    return rows
