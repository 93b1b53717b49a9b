"""`./kit bench`: figures, side by side in one run. Asserts nothing.

These machines are noisy, so what matters is the ratios taken in the same
run: raw Unicorn on a loop against the board running the same loop with the
timer interrupting it, and the cost of one interrupt delivery.
"""
import statistics
import time

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32
from unicorn import x86_const as X

from vmkit.hw.asm import assemble
from vmkit.hw.board import Board, KERNEL_CS
from vmkit.hw.x86 import encode_gate

LOOP = "l: inc eax\nadd ebx, eax\nxor ecx, ebx\njmp l"
N = 20_000_000


def best(fn, repeat=3):
    return min(fn() for _ in range(repeat))


def raw_unicorn():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 1 << 20)
    uc.mem_write(0x1000, assemble(LOOP, 0x1000))
    t = time.perf_counter()
    uc.emu_start(0x1000, 0xFFFFFFFF, count=N)
    return time.perf_counter() - t


def board_loop(timer_period=None, instructions=N):
    board = Board()
    board.boot(0x1000)
    idt = 0x2000
    board.memory.write(idt + 0x20 * 8, encode_gate(0x6000, KERNEL_CS))
    board.cpu["idtr"] = (0, idt, 0x7FF, 0)
    board.load(0x6000, "push eax\nmov al, 0x20\nout 0x20, al\npop eax\niretd")
    board.load(0x1000, "mov al, 0x11\nout 0x20, al\nmov al, 0x20\nout 0x21, al\nmov al, 4\nout 0x21, al\n"
                       "mov al, 1\nout 0x21, al\nmov al, 0xfe\nout 0x21, al\nsti\n" + LOOP)
    if timer_period:
        board.pit.program(timer_period)
    t = time.perf_counter()
    board.run(instructions)
    return time.perf_counter() - t, board.cpu.delivered


def main():
    raw = best(raw_unicorn)
    quiet, _ = min(board_loop(None) for _ in range(3))
    timed, ticks = min(board_loop(10_000) for _ in range(3))
    busy_n = 2_000_000
    calm, _ = min(board_loop(None, busy_n) for _ in range(3))
    busy, irqs = min(board_loop(1_000, busy_n) for _ in range(3))
    print(f"raw Unicorn, {N:,} instructions of a loop:      {N / raw / 1e6:6.1f} M instr/s")
    print(f"board, same loop, no interrupts:               {N / quiet / 1e6:6.1f} M instr/s  ({raw / quiet:.2f} of raw)")
    print(f"board, same loop, timer every 10,000 instr:    {N / timed / 1e6:6.1f} M instr/s  ({raw / timed:.2f} of raw; {ticks} IRQs)")
    print(f"one IRQ delivered and returned from (timer every 1,000): "
          f"{(busy - calm) / irqs * 1e6:5.1f} µs  ({irqs} IRQs)")


def cos_rate(displaced, instructions=2_000_000):
    """Virtual instructions per wall second with the COS running its idle loop and ticks."""
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover() if displaced else takeover.booted_cos()
    t = time.perf_counter()
    board.run(instructions)
    return instructions / (time.perf_counter() - t), len(board.trace.of("kernel.emulate"))


def trap_cost(count=2000):
    """One trapped-and-emulated COS `cli`+`sti` pair, end to end."""
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover()
    src = f"init:\nmov ecx, {count}\nl: cli\nsti\nloop l\nret"
    t = time.perf_counter()
    takeover.run_module(board, cos, src)
    return (time.perf_counter() - t) / (2 * count)


def main_cos():
    native, _ = max(cos_rate(False) for _ in range(2))
    displaced, traps = max(cos_rate(True) for _ in range(2))
    print(f"COS at CPL 0 (native), 2M instructions of its life:   {native / 1e6:6.1f} M instr/s")
    print(f"COS displaced at CPL 1 under the kernel, same:         {displaced / 1e6:6.1f} M instr/s  "
          f"({displaced / native:.2f} of native)")
    print(f"one COS privileged instruction trapped and emulated:  {trap_cost() * 1e6:6.1f} µs")


GUEST_BASE = 0x100000


def raw_guest(instructions=N):
    """Raw Unicorn (count=) running the busy VMs' guest, the checksum loop, flat at
    CPL 0 with nothing else: no kernel, no paging, no interrupts (its lidt, sti and
    out run natively and do nothing here)."""
    from vmkit.vmm import guests
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20)
    uc.mem_write(GUEST_BASE, assemble(guests.checksum(GUEST_BASE, 10**9), GUEST_BASE))
    uc.reg_write(X.UC_X86_REG_ESP, GUEST_BASE + 0x10000)
    t = time.perf_counter()
    uc.emu_start(GUEST_BASE, 0xFFFFFFFF, count=instructions)
    return instructions / (time.perf_counter() - t)


def vm_rate(instructions=4_000_000, timer_period=10_000, cpus=1, per_cpu=2, vm_tick=None):
    """Guest instructions per wall second in busy VMs (`per_cpu` on each CPU)
    under the full kernel (the COS displaced, timer on), the share of virtual
    time they got, and the world switches made. vm_tick: the VMs' own tick
    (None: the COS's `timer_period`, the teaching tick)."""
    from vmkit.lessons import takeover
    from vmkit.vmm import guests
    board, cos, loader = takeover.takeover(timer_period=timer_period, cpus=cpus, vm_tick=vm_tick)
    kernel = loader.kernel
    vms = [kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}", cpu=i % cpus)
           for i in range(per_cpu * cpus)]
    board.run(50_000)
    before = sum(kernel.worlds.instructions_of(vm) for vm in vms)
    switches = len(board.trace.of("switch.begin"))
    t = time.perf_counter()
    board.run(instructions)
    board.run(1)                                   # (accounting is written at switches)
    elapsed = time.perf_counter() - t
    guest = sum(kernel.worlds.instructions_of(vm) for vm in vms) - before
    switched = len(board.trace.of("switch.begin")) - switches
    return guest / elapsed, guest / (instructions * cpus), switched, elapsed


def switch_cost(instructions=2_000_000):
    """One world switch in the 1-CPU busy-VM run: (Python per switch, wall time per
    switch from the scheduler's decision to the stub's iretd, switches, wall time per
    switch from the decision to its last event). The switch is x86 that comes back to
    the dispatcher (switch.py): its Python is Worlds.switch_to plus every
    Worlds.switch_step, timed where they are called; the wall time also holds the x86
    and the returns through the hook. Its last event, switch.sti, is emitted by
    switch.started; what follows it before the iretd is the world's, not the switch's
    (the VMM's injection of a pending virtual tick, the COS's of its forwarded IRQs)."""
    from vmkit.kernel import switch as switch_module
    from vmkit.kernel.worlds import Worlds
    spent, wall, count, own = [0.0], [0.0], [0], [0.0]
    began = {}
    real = Worlds.switch_to, Worlds.switch_step
    real_started = switch_module.started

    def started(kernel, frame, cpu, nxt, cr0=None):
        try:
            return real_started(kernel, frame, cpu, nxt, cr0)
        finally:
            p = kernel.worlds.cpus[cpu.index]
            if id(p) in began:
                own[0] += time.perf_counter() - began[id(p)]

    def switch_to(self, frame, nxt, p=None, away=None):
        t = time.perf_counter()
        try:
            return real[0](self, frame, nxt, p, away)
        finally:
            began[id(p or self.cpus[0])] = t
            spent[0] += time.perf_counter() - t

    def switch_step(self, frame, cpu, vector):
        t = time.perf_counter()
        try:
            return real[1](self, frame, cpu, vector)
        finally:
            now = time.perf_counter()
            spent[0] += now - t
            p = self.cpus[cpu.index]
            if p.switching is None and id(p) in began:
                wall[0] += now - began.pop(id(p))
                count[0] += 1
    Worlds.switch_to, Worlds.switch_step = switch_to, switch_step
    switch_module.started = started
    try:
        vm_rate(instructions)
    finally:
        Worlds.switch_to, Worlds.switch_step = real
        switch_module.started = real_started
    n = max(1, count[0])
    return spent[0] / n, wall[0] / n, count[0], own[0] / n


def main_vms():
    raw = max(raw_guest() for _ in range(3))
    print(f"raw Unicorn on the guests' checksum loop:               {raw / 1e6:6.1f} M instr/s")
    for cpus, period in ((1, 10_000), (1, 50_000), (2, 10_000), (2, 50_000)):
        rate, share, switches, elapsed = max(vm_rate(timer_period=period, cpus=cpus) for _ in range(2))
        print(f"{cpus} CPU{'s' if cpus > 1 else ' '}, {2 * cpus} busy VMs + the displaced COS, timer every "
              f"{period:>7,}: {rate / 1e6:5.1f} M guest instr/s ({rate / raw:.2f} of raw; guests got "
              f"{share:.0%} of virtual time; {switches} switches in {elapsed:.2f} s)")
    cost, wall, n, _ = min(switch_cost() for _ in range(2))
    print(f"one world switch (Python, save to verify):              {cost * 1e6:6.1f} µs  ({n} timed)")
    print(f"one world switch (wall, decision to iretd, x86 included): {wall * 1e6:6.1f} µs")
    from vmkit.lessons import smp
    t = time.perf_counter()
    figures = smp.compare_windows(instructions=300_000)
    print(f"mapping caches, 300,000 instructions on two CPUs ({time.perf_counter() - t:.1f} s for both runs):")
    for design, f in figures.items():
        print(f"  {design:20} misses {f['misses']:4}  IPIs sent {f['ipis_sent']:4}  shootdowns taken "
              f"{f['shootdowns_taken']:4}")


def _busy_ratio(timer_period, raw_rates, vm_tick=None, instructions=4_000_000):
    """Two busy VMs + the displaced COS (1 CPU) ÷ raw Unicorn on the same loop, raw measured
    just before and just after the kit (side by side, in one run)."""
    raw_rates.append(raw_guest(4_000_000))
    rate, share, switches, elapsed = vm_rate(instructions, timer_period=timer_period, vm_tick=vm_tick)
    raw_rates.append(raw_guest(4_000_000))
    return rate / statistics.mean(raw_rates[-2:]), rate, switches


def table(notebooks=True, kit_test=False, runs=3):
    """The issue's table, every row measured now next to raw Unicorn: (median, min, max) of `runs`."""
    from vmkit import bench_entry
    from vmkit.hw.clock import VIRTUAL_HZ, hz
    rows, spread = [], bench_entry.spread
    alone = [bench_entry.vm_alone(pairs=6)[0] for _ in range(runs)]
    rows.append(("a VM alone at CPL 3 with paging ÷ raw Unicorn (count mode), same loop",
                 "{:.2f}", spread(alone), "≥ 0.9"))
    raw = []
    real_tick = hz(100)                                  # 100 Hz of the virtual clock
    try:
        real = spread([_busy_ratio(10_000, raw, real_tick, 12_000_000)[0] for _ in range(runs)])
    except AttributeError:                             # (a kernel without ticks per world)
        real = None
    rows.append((f"two busy VMs + the COS ÷ raw, VM ticks at 100 Hz of {VIRTUAL_HZ:,} instr/s "
                 f"({real_tick:,}; the COS's 10,000)", "{:.2f}", real, "≥ 0.8"))
    pit_longest = 0x10000
    slow = [_busy_ratio(pit_longest, raw)[0] for _ in range(runs)]
    rows.append((f"  the same, every world's tick the PIT's longest ({pit_longest:,})", "{:.2f}",
                 spread(slow), ""))
    teach = [_busy_ratio(10_000, raw)[0] for _ in range(runs)]
    rows.append(("the same at the teaching tick (10,000)", "{:.2f}", spread(teach), "≥ 0.25"))
    costs = [switch_cost(1_000_000) for _ in range(runs)]
    rows.append(("one world switch, decision to iretd (seven events, CRC, verify), µs",
                 "{:.0f}", spread([c[1] * 1e6 for c in costs]), "≤ 30"))
    rows.append(("  of which decision to its last event, switch.sti (the rest: the world's injection), µs",
                 "{:.0f}", spread([c[3] * 1e6 for c in costs]), ""))
    causes = {cause: [] for cause in bench_entry.ENTRY_CAUSES}
    for _ in range(runs):
        for cause, build in bench_entry.ENTRY_CAUSES.items():
            causes[cause].append(statistics.median(bench_entry._per_entry(build, 0)) * 1e6)
    medians = [statistics.median([causes[c][i] for c in causes]) for i in range(runs)]
    rows.append(("one kernel entry (median over the causes), µs", "{:.0f}", spread(medians), "≤ 30"))
    for cause, values in causes.items():
        rows.append((f"  {cause}, µs", "{:.0f}", spread(values), ""))
    if notebooks:
        seconds = bench_entry.notebook_seconds()
        slowest = max(seconds, key=seconds.get)
        rows.append((f"the slowest notebook's Run All ({slowest[:2]}), s", "{:.1f}",
                     (seconds[slowest],) * 3, "≤ 10"))
    else:
        rows.append(("the slowest notebook's Run All, s (not run: --no-notebooks)", "", None, "≤ 10"))
    if kit_test:
        import pathlib
        import subprocess
        kit = pathlib.Path(__file__).resolve().parents[1] / "kit"
        t = time.perf_counter()
        subprocess.run([str(kit), "test", "-q"], check=False, cwd=kit.parent)
        rows.append(("`./kit test`, s (one run)", "{:.0f}", (time.perf_counter() - t,) * 3, "≤ 60"))
    else:
        rows.append(("`./kit test`, s (not run: --kit-test)", "", None, "≤ 60"))
    print(f"\nthe figures of the kernel's way in and out, {runs} runs each, raw Unicorn "
          f"{statistics.median(raw) / 1e6:.1f} M instr/s on the guests' loop in this run; "
          f"load {_load()}")
    print(f"{'figure':92} {'median':>7} {'min':>7} {'max':>7}  aim")
    for name, fmt, values, aim in rows:
        cells = [fmt.format(v) for v in values] if values else ["-"] * 3
        print(f"{name:92} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7}  {aim}")


def _load():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    import sys
    from vmkit import bench_entry
    if "--table" not in sys.argv:                  # the detail first, then the table
        main()
        main_cos()
        main_vms()
        from vmkit import bench_net, bench_unload, vmfs_bench
        vmfs_bench.main()
        bench_unload.main()
        bench_net.main()
        bench_entry.main(notebooks=False)
    table(notebooks="--no-notebooks" not in sys.argv, kit_test="--kit-test" in sys.argv)
