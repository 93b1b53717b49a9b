"""Claims 16-17, 37-38: two CPUs, each scheduled separately with its own system
world, TSS, stack and timer; VMs placed on CPUs; a mapping cache per CPU."""
import pytest

from vmkit.hw.board import Board
from vmkit.hw.mmu import LinearFault
from vmkit.hw.lapic import EOI, ICR_LOW, LVT_TIMER, TIMER_CURRENT, TIMER_INITIAL, PERIODIC
from vmkit.hw.x86 import TSS_ESP0, encode_gate
from vmkit.kernel import mapcache, save_area, smp, switch
from vmkit.kernel.mapcache import MappingCacheError
from vmkit.kernel.worlds import VMError
from vmkit.lessons import smp as lesson
from vmkit.lessons.takeover import takeover
from vmkit.vmm import guests

VM = lesson.VM_MEMORY


def lines(world):
    """The complete lines (a run may stop in the middle of one)."""
    return bytes(world.vmm.console).decode().split("\n")[:-1]


def expected(name, n):
    return [f"hello from {name}"] + [f"{name} {chr(97 + i % 26)}" for i in range(n)]


# ---- the local APIC (vmkit/hw/lapic.py) ------------------------------------------
def _cpu1_counting_ticks(period):
    """CPU 1 halted in a loop with an IDT whose vector 0x40 counts in memory and EOIs."""
    board = Board(cpus=2, keyboard=False, sensor=False)
    board.load(0x1000, "l: hlt\njmp l")
    board.load(0x2000, "sti\nl: hlt\njmp l")
    board.load(0x3000, "inc dword ptr [0x5000]\nnop\niretd")
    board.memory.write(0x4000 + 0x40 * 8, encode_gate(0x3000, 0x08))
    board.boot(0x1000, cpu=0)
    board.boot(0x2000, cpu=1)
    cpu1 = board.cpus[1]
    cpu1["idtr"] = (0, 0x4000, 0x7FF, 0)
    cpu1.on_execute(0x3006, lambda c: c.lapic.write(EOI, 0))   # the handler's EOI
    cpu1.lapic.program_timer(period, 0x40)
    return board, cpu1


def test_a_local_apic_timer_interrupts_its_own_cpu_every_period():
    board, cpu1 = _cpu1_counting_ticks(1000)
    board.run(10_500)
    assert board.memory.read_u32(0x5000) == 10
    delivered = [e for e in board.trace.of("cpu.deliver") if e["vector"] == 0x40]
    assert {e.cpu for e in delivered} == {1}
    assert [e.time for e in delivered][:3] == [1000, 2000, 3000]
    assert board.cpus[0].delivered == 0           # the PIC's CPU saw nothing
    assert 0 < cpu1.lapic.read(TIMER_CURRENT) <= 1000


def test_a_cpus_stores_at_0xfee00000_reach_its_own_local_apic_only():
    """Each CPU's registers are mapped in that CPU's own address map: the same store from
    CPU 0 programs CPU 0's timer; a vector the APIC refuses is dropped (lapic.error)."""
    board = Board(cpus=2, keyboard=False, sensor=False)
    board.load(0x1000, """
        mov dword ptr [0xfee00320], 0x200f0     ; LVT: vector 0xF0, periodic
        mov dword ptr [0xfee00380], 5000        ; initial count
        mov eax, [0xfee00020]                   ; its ID
        mov ebx, [0xfee00390]                   ; current count
        mov dword ptr [0xfee00320], 3           ; a reserved vector: refused
        l: hlt
        jmp l""")
    board.boot(0x1000, cpu=0)
    board.run(100)
    apic0, apic1 = board.cpus[0].lapic, board.cpus[1].lapic
    assert (apic0.read(LVT_TIMER), apic0.read(TIMER_INITIAL)) == (0xF0 | PERIODIC, 5000)
    assert (apic1.read(LVT_TIMER) & 0xFF, apic1.read(TIMER_INITIAL)) == (0, 0)   # CPU 1's: untouched
    cpu = board.cpus[0]
    assert cpu["eax"] == 0 and 0 < cpu["ebx"] <= 5000           # APIC ID 0; counting down
    assert [e["register"] for e in board.trace.of("lapic.error")] == [LVT_TIMER]
    assert apic0.last_store[TIMER_INITIAL] == (0, 0x100A)     # the second store


def test_without_eoi_the_next_tick_waits_and_masking_stops_it():
    board, cpu1 = _cpu1_counting_ticks(1000)
    board.cpus[1].lapic.isr |= 1 << 0x40          # the vector is "in service" and never EOIed
    board.run(5_500)
    assert board.memory.read_u32(0x5000) == 0
    cpu1.lapic.eoi()
    board.run(1000)
    assert board.memory.read_u32(0x5000) >= 1
    cpu1.lapic.write(LVT_TIMER, 0x40 | PERIODIC | (1 << 16))
    seen = board.memory.read_u32(0x5000)
    board.run(5000)
    assert board.memory.read_u32(0x5000) == seen


def test_an_ipi_reaches_the_other_cpu_through_its_idt():
    board, cpu1 = _cpu1_counting_ticks(10**9)
    board.run(100)
    board.cpus[0].lapic.send_ipi(1, 0x40)
    board.run(100)
    assert board.memory.read_u32(0x5000) == 1
    assert board.trace.of("lapic.ipi")[0]["to"] == 1 and cpu1.lapic.ipis_received == 1


def test_bad_local_apic_programming_is_refused():
    board = Board(cpus=2)
    with pytest.raises(ValueError, match="reserved"):
        board.cpus[0].lapic.write(LVT_TIMER, 3)
    with pytest.raises(ValueError, match="the board has 2 CPUs"):
        board.cpus[0].lapic.send_ipi(5, 0x40)
    with pytest.raises(ValueError, match="not modelled"):
        board.cpus[0].lapic.read(0x123)
    with pytest.raises(ValueError, match="fixed"):
        board.cpus[0].lapic.write(ICR_LOW, 0x40 | (5 << 8))
    assert board.cpus[0].lapic.read(TIMER_INITIAL) == 0


# ---- two CPUs under the kernel --------------------------------------------------------
@pytest.fixture(scope="module")
def running():
    board, cos, kernel, vms = lesson.two_cpus()
    board.run(600_000)
    return board, cos, kernel, vms


def test_each_cpu_has_its_own_system_world_tss_stack_and_timer(running):
    board, cos, kernel, vms = running
    rows = lesson.processors(board, kernel)
    assert [r["system world"] for r in rows] == ["system0", "system1"]
    assert rows[0]["TSS"] != rows[1]["TSS"] and rows[0]["ESP0"] != rows[1]["ESP0"]
    for r in rows:                                   # each TSS's ESP0 is in its CPU's stack, in kernel memory
        assert kernel.contains(r["ESP0"] - 4) and r["ESP0"] == smp.stack_top(kernel, r["cpu"])
    p1 = kernel.worlds.cpus[1]
    area = save_area.read_area(board.memory, p1.system.area)
    loop = kernel.base + kernel.image.system_world          # sti; hlt; jmp: 4 bytes
    assert area["cs"] & 3 == 0 and loop <= area["eip"] < loop + 4
    assert area["cr3"] == p1.system.cr3 != 0 and switch.tss_base(board.memory, area) == smp.cpu_tss(kernel, 1)[1]
    assert rows[1]["APIC ticks"] > 100 and board.cpus[0].lapic.ticks == 0
    assert board.trace.of("smp.start")[0].cpu == 1
    assert cos.ticks() > 50 and "cos: tick" in cos.console()


def test_the_cos_stays_on_cpu0_and_vms_are_placed_on_both(running):
    board, cos, kernel, vms = running
    assert kernel.worlds.all[0].cpu == 0
    assert [v.cpu for v in vms] == [1, 0, 1, 0]
    mine = {0: {"cos", "vm2", "vm4"}, 1: {"system1", "vm1", "vm3"}}
    for e in board.trace.of("switch.begin"):
        assert {e["frm"], e["to"]} <= mine[e.cpu], e
    assert {e["to"] for e in board.trace.of("switch.begin") if e.cpu == 1} == {"system1", "vm1", "vm3"}
    for v in vms:
        got = lines(v)
        assert len(got) > 10 and got == expected(v.name, len(got) - 1) and v.state != "crashed"
    # a VM on CPU 1 runs with CPU 1's VM TSS (ESP0 = CPU 1's stack), and CPU 1's window
    area = save_area.read_area(board.memory, vms[0].area)
    assert switch.tss_base(board.memory, area) == smp.vm_tss(kernel, 1)[1]
    assert board.memory.read_u32(switch.tss_base(board.memory, area) + TSS_ESP0) == smp.stack_top(kernel, 1)


def test_placement_by_hand_and_a_cpu_the_board_lacks():
    board, cos, loader = takeover(timer_period=2000, cpus=2)
    kernel = loader.kernel
    vm = kernel.install_vm(lambda base: guests.console(base, "x"), VM, "x", cpu=0)
    assert vm.cpu == 0
    left = len(kernel.worlds.all)
    with pytest.raises(VMError, match="no CPU 2: the board has CPUs 0..1"):
        kernel.install_vm(lambda base: guests.console(base, "y"), VM, "y", cpu=2)
    assert len(kernel.worlds.all) == left


def test_a_checksum_on_cpu1_survives_thousands_of_switches():
    # vm_tick=None: CPU 1 ticks every 1,000 instructions, so the checksum is cut by hundreds of switches
    board, cos, loader = takeover(timer_period=1000, cpus=2, vm_tick=None)
    kernel = loader.kernel
    kernel.worlds.quantum = 1
    n = 32_000
    vm = kernel.install_vm(lambda base: guests.checksum(base, n), VM, "sum", cpu=1)
    kernel.install_vm(lambda base: guests.checksum(base, 10**9), VM, "busy", cpu=1)
    for _ in range(20):
        board.run(200_000)
        if vm.vmm.console:
            break
    assert bytes(vm.vmm.console).decode() == guests.checksum_expected(n)
    assert kernel.worlds.switches_of(vm) >= 700


def test_a_guest_crashing_on_cpu1_stops_only_its_vm():
    # vm_tick=None: console guests print a line per tick; >10 lines each need single 2,000-instruction ticks
    board, cos, loader = takeover(timer_period=2000, cpus=2, vm_tick=None)
    kernel = loader.kernel
    good = kernel.install_vm(lambda base: guests.console(base, "good"), VM, "good", cpu=1)
    bad = kernel.install_vm(lambda base: guests.crasher(base, "bad"), VM, "bad", cpu=1)
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other", cpu=0)
    board.run(400_000)
    assert bad.state == "crashed" and bad.fault.startswith("vector 0x6 "), bad.fault
    for v in (good, other):
        assert v.state != "crashed" and len(lines(v)) > 10
    assert all(c.shutdown is None for c in board.cpus) and cos.ticks() > 50


# ---- the mapping caches ----------------------------------------------------------------
def _shootdowns_delivered(board, cpu=None):
    """Shootdown IPIs a CPU took through its IDT: the hardware's own delivery events."""
    return [e for e in board.trace.of("cpu.deliver")
            if e["vector"] == mapcache.SHOOTDOWN_VECTOR and cpu in (None, e.cpu)]


def test_each_cpu_maps_guest_pages_in_its_own_window_and_never_interrupts_the_other(running):
    board, cos, kernel, vms = running
    rows = lesson.cache_counters(kernel)
    for r in rows:
        assert r["hits"] > 50 and r["misses"] == 4 and r["ipis_sent"] == 0
        assert r["shootdowns_taken"] == 0
        assert r["local_flushes"] == r["misses"]     # each miss: CPU-executed invlpg, x86-counted
        # the PTEs map as many pages as the kernel counted misses, less evictions
        assert r["misses"] - r["evictions"] == len([s for s in r["slots"] if s is not None])
    assert not _shootdowns_delivered(board)
    sent = [e["vector"] for e in board.trace.of("lapic.ipi")]   # only "a VM of yours can run"
    assert set(sent) <= {smp.RESCHEDULE_VECTOR} and all(not c.lapic.irr for c in board.cpus)
    for p in kernel.worlds.cpus:                       # the slots map the pages of its own VMs only
        mine = [v for v in vms if v.cpu == p.index]
        for page in p.cache.slots:
            assert any(v.region[0] <= page < v.region[0] + v.region[1] for v in mine)
    # the window's page tables differ per CPU, and every address space on a CPU shares its CPU's
    tables = {p.index: p.cache.table for p in kernel.worlds.cpus}
    assert tables[0] != tables[1]
    for v in vms:
        pde = board.memory.read_u32(v.cr3 + 4 * (mapcache.WINDOW >> 22))
        assert pde & ~0xFFF == tables[v.cpu] and not pde & 4     # supervisor only
    # each CPU's own MMU, in the kernel, translates every slot to the page its PTE maps
    for p in kernel.worlds.cpus:
        lesson.in_kernel(board, p.index)
        for i, page in enumerate(p.cache.slots):
            assert p.cache.through_cpu(mapcache.WINDOW + i * 0x1000) == page


def test_the_window_is_reached_through_the_cpu_and_only_from_the_kernel(running):
    board, cos, kernel, vms = running
    cpu1, cache = board.cpus[1], kernel.worlds.cpus[1].cache
    lesson.in_kernel(board, 1)
    page = cache.slots[0]
    board.memory.write(page + 0x10, b"seen", code=False)
    assert cache.read(page + 0x10, 4) == b"seen" == cpu1.read_linear(mapcache.WINDOW + 0x10, 4)
    with pytest.raises(LinearFault, match=r"CPU 1 cannot read 4 bytes at linear 0xff804010: its MMU "
                                          r"refuses it \(not present or not for CPL 0; paging on"):
        cpu1.read_linear(mapcache.WINDOW + 4 * 0x1000 + 0x10, 4)     # past the 4 slots: no PTE
    while cpu1.cpl != 3:                               # a guest: the window is supervisor-only
        board.run(7)
    assert cpu1["cr0"] & 0x80000000
    with pytest.raises(LinearFault, match="not for CPL 3"):
        cpu1.read_linear(mapcache.WINDOW + 0x10, 4)
    before = (cache.slots, [cache.count(n) for n in mapcache.COUNTERS])
    with pytest.raises(MappingCacheError, match="out of reach: CPU 1 runs at CPL 3 with paging on"):
        cache.read(kernel.base, 4)                     # a miss: nothing may change
    assert (cache.slots, [cache.count(n) for n in mapcache.COUNTERS]) == before


def test_a_vmms_pushes_and_pops_are_one_lookup_per_word_and_cpu_accesses(running):
    """What inject and a patched iretd use: each word looked up (a hit counted) and stored or
    loaded by the CPU at the window address (a run of them in one access:
    test_mapcache_words.py); out of reach, nothing."""
    board, cos, kernel, vms = running
    cpu1, cache = board.cpus[1], kernel.worlds.cpus[1].cache
    lesson.in_kernel(board, 1)
    page = cache.slots[0]
    hits = cache.count("hits")
    cache.store_words((page + 0x28, 0x11111111), (page + 0x24, 0x22222222), (page + 0x20, 0x33333333))
    assert board.memory.read(page + 0x20, 12) == bytes.fromhex("333333332222222211111111")
    assert cpu1.read_linear(mapcache.WINDOW + 0x20, 12) == board.memory.read(page + 0x20, 12)
    assert cache.count("hits") == hits + 3
    board.memory.write(page + 0x30, bytes.fromhex("0100000002000000"), code=False)
    assert cache.load_words(page + 0x30, page + 0x34) == [1, 2] and cache.count("hits") == hits + 5
    while cpu1.cpl != 3:                               # a guest runs: the window is out of reach
        board.run(7)
    before = (cache.slots, [cache.count(n) for n in mapcache.COUNTERS], board.memory.read(page + 0x20, 12))
    with pytest.raises(MappingCacheError, match="out of reach: CPU 1 runs at CPL 3"):
        cache.store_words((page + 0x20, 0))
    with pytest.raises(MappingCacheError, match="out of reach: CPU 1 runs at CPL 3"):
        cache.load_words(page + 0x20)
    assert (cache.slots, [cache.count(n) for n in mapcache.COUNTERS],
            board.memory.read(page + 0x20, 12)) == before


def test_a_miss_is_read_right_only_because_the_cpu_flushes_its_own_tlb(monkeypatch):
    """One slot on CPU 1 (idle in its system world): page A, then page B in the same slot.
    CPU 1 executes window_invlpg (kernel image) for each remap."""
    board, cos, loader = takeover(timer_period=2000, cpus=2)
    kernel = loader.kernel
    p1, cpu1 = kernel.worlds.cpus[1], board.cpus[1]
    cache = mapcache.MappingCache(kernel, cpu1, p1.cache.table, p1.cache.counters, slots=1)
    a, b = kernel.base, kernel.base + 0x1000
    lesson.in_kernel(board, 1)
    assert cache.read(a, 16) == board.memory.read(a, 16)
    assert cache.read(b, 16) == board.memory.read(b, 16) != board.memory.read(a, 16)
    assert cache.count("local_flushes") == 2                  # bumped by the x86 after its invlpg
    monkeypatch.setattr(cache, "_flush", lambda at: None)      # a remap without the CPU's invlpg
    assert cache.read(a, 16) == board.memory.read(b, 16)       # stale: page B's bytes for A
    assert cache.slots == [a] and cache.through_cpu(mapcache.WINDOW) == b
    assert cache.count("local_flushes") == 2 and cache.count("misses") == 3


def test_a_shared_window_needs_a_shootdown_ipi_for_every_remap():
    figures = lesson.compare_windows(instructions=200_000)
    per_cpu, shared = figures["one window per CPU"], figures["one shared window"]
    for name in ("ipis_sent", "IPIs accepted", "shootdowns delivered", "shootdowns_taken"):
        assert per_cpu[name] == 0, name
    # every IPI the kernel counted was accepted by the other CPU's local APIC; every one the CPU
    # took through its IDT ran the x86 that invlpgs the window (its count, bumped by that x86)
    assert shared["ipis_sent"] == shared["IPIs accepted"] > 0
    assert 0 < shared["shootdowns delivered"] == shared["shootdowns_taken"] <= shared["IPIs accepted"]
    # the same VMs' work, less what the shootdowns cost (each, an IPI and an invlpg on the other CPU)
    assert 0 <= per_cpu["VM console lines"] - shared["VM console lines"] <= 2 and shared["VM console lines"] > 40


def test_skipping_the_shootdown_on_a_shared_window_reads_the_wrong_page():
    right, wrong = lesson.stale_window(shootdown=True), lesson.stale_window(shootdown=False)
    for r in (right, wrong):
        assert r["PTE maps"] == r["stack page"]          # the shared table says: the stack page
    assert right["CPU 1 translates to"] == right["stack page"] and right["read gives"] == "the stack page"
    assert right["IPIs sent"] >= right["shootdowns CPU 1 took"] > 0
    assert wrong["CPU 1 translates to"] == wrong["code page"] and wrong["read gives"] == "the code page"
    assert wrong["IPIs sent"] == wrong["shootdowns CPU 1 took"] == 0


def test_a_cpu_keeps_a_stale_translation_until_it_executes_invlpg():
    assert [seen for _, seen in lesson.stale_translation()] == ["OLD!", "OLD!", "NEW!"]


def test_the_cache_evicts_the_least_recently_used_slot_and_refuses_a_bad_slot(running):
    board, cos, kernel, vms = running
    cache = kernel.worlds.cpus[1].cache
    pages = [v.region[0] for v in vms] + [vms[0].region[0] + 0x1000]     # five pages, four slots
    before = {n: cache.count(n) for n in mapcache.COUNTERS}
    lesson.in_kernel(board, 1)
    for page in pages:
        assert cache.read(page, 4) == board.memory.read(page, 4)
    assert cache.count("evictions") > before["evictions"]
    assert pages[0] not in cache.slots and pages[-1] in cache.slots        # the oldest went
    cache.choose = lambda slots, used, page: (9, False)
    try:
        with pytest.raises(MappingCacheError, match="slot 9: the window has slots 0..3"):
            cache.read(pages[0], 4)
    finally:
        cache.choose = mapcache.choose_slot


def test_each_cpu_programs_its_own_local_apic_timer_with_its_own_x86():
    """CPU 1's timer is programmed by CPU 1: its kernel x86 stores to its local APIC's
    registers (memory-mapped at 0xFEE00000 in each CPU's own address map), as each CPU's
    kernel code does on a PC. Seen by a Unicorn store hook on each CPU, not by the APIC."""
    APIC_BASE = 0xFEE00000                      # the architectural default
    from unicorn import UC_HOOK_MEM_WRITE
    from unicorn.x86_const import UC_X86_REG_EIP
    from vmkit.hw.asm import disassemble_one
    from vmkit.lessons.takeover import booted_cos
    board, cos, loader = booted_cos(cpus=2, vm_tick=None)
    stores = []
    for cpu in board.cpus:
        cpu.uc.hook_add(UC_HOOK_MEM_WRITE,
                        lambda uc, _, address, size, value, index: stores.append(
                            (index, address - APIC_BASE, value, uc.reg_read(UC_X86_REG_EIP))),
                        cpu.index, APIC_BASE, APIC_BASE + 0xFFF)
    cos.put_module(loader.module)
    cos.run_command("insmod", 3_000_000)
    kernel = loader.kernel
    period = board.pit.period
    assert [s[:3] for s in stores] == [(1, LVT_TIMER, smp.TIMER_VECTOR | PERIODIC), (1, TIMER_INITIAL, period)]
    code = range(kernel.base, kernel.base + len(kernel.image.data))
    assert all(eip in code for *_, eip in stores)                  # the kernel's code, on CPU 1
    eip = stores[1][3]
    assert disassemble_one(board.memory.read(eip, 16), eip) == "mov dword ptr [0xfee00380], eax"
    apic1 = board.cpus[1].lapic
    assert (apic1.read(LVT_TIMER), apic1.read(TIMER_INITIAL)) == (smp.TIMER_VECTOR | PERIODIC, period)
    assert apic1.last_store[TIMER_INITIAL] == (1, eip)
    assert board.cpus[0].lapic.read(TIMER_INITIAL) == 0             # CPU 0's: untouched
    board.run(3 * period)
    assert apic1.ticks >= 2                                         # and it ticks
