"""The kernel's way in and out, measured (`./kit bench`, with bench.py).

Every figure is a ratio or a difference taken side by side in one run, since
these machines are noisy: raw Unicorn and the kit alternate in short chunks
and the median of the chunk ratios is printed, with min and max.
"""
import statistics
import time

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32
from unicorn import x86_const as X

from vmkit.hw.asm import assemble
from vmkit.vmm import guests

GUEST_BASE = 0x100000
CHUNK = 1_000_000


class RawGuest:
    """Raw Unicorn (count=) on the busy guests' checksum loop, flat at CPL 0, no kernel."""
    def __init__(self):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map(0, 4 << 20)
        self.uc.mem_write(GUEST_BASE, assemble(guests.checksum(GUEST_BASE, 10**9), GUEST_BASE))
        self.uc.reg_write(X.UC_X86_REG_ESP, GUEST_BASE + 0x10000)
        self.eip = GUEST_BASE

    def seconds(self, instructions):
        t = time.perf_counter()
        self.uc.emu_start(self.eip, 0xFFFFFFFF, count=instructions)
        elapsed = time.perf_counter() - t
        self.eip = self.uc.reg_read(X.UC_X86_REG_EIP)
        return elapsed


def spread(values):
    return statistics.median(values), min(values), max(values)


def vm_alone(pairs=15):
    """A VM alone at CPL 3 with paging, under the full kernel, against raw Unicorn:
    the COS displaced and idle, the timer stopped, so no kernel entry at all:
    what is left is what the machine costs every guest instruction."""
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover(timer_period=10_000, vm_tick=None)   # (only the PIT to stop)
    vm = loader.kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, "alone")
    board.run_until(lambda: loader.kernel.worlds.current is vm and board.cpu.cpl == 3, 1_000_000,
                    "the VM's turn")
    board.ports.write(0x21, 1, board.ports.read(0x21, 1) | 1)     # the timer line masked ...
    board.pit.program(0x10000, mode=0)                          # ... and the PIT one-shot
    raw, before = RawGuest(), board.cpu.delivered
    ratios = []
    for _ in range(pairs):
        r = raw.seconds(CHUNK)
        t = time.perf_counter()
        board.run(CHUNK)
        ratios.append(r / (time.perf_counter() - t))
    if board.cpu.delivered != before or board.cpu.cpl != 3:
        raise RuntimeError("the VM did not run alone: the kernel was entered")
    return spread(ratios)


def _per_entry(build, loop_instructions, rounds=5):
    """Wall time per kernel entry: run a machine whose every `loop_instructions`
    instructions make one kernel entry, minus what raw Unicorn needs for as
    many guest instructions, divided by the entries (CPU.delivered)."""
    board, cpu = build()
    raw, costs = RawGuest(), []
    for _ in range(rounds):
        before, start = cpu.delivered, board.clock
        t = time.perf_counter()
        board.run(200_000)
        elapsed = time.perf_counter() - t
        entries = cpu.delivered - before
        guest = raw.seconds(board.clock - start)
        if entries:
            costs.append(max(0.0, elapsed - guest) / entries)
    return costs


def _cos_eoi_machine():
    """The displaced COS sending EOI to its PIC in a loop: each `out 0x20` is a #GP
    into the kernel, which emulates the COS's virtual PIC."""
    from vmkit.cos.cos import COS
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover(timer_period=0x10000)
    cos.put_module(COS.make_module("init:\nmov al, 0x20\nl: out 0x20, al\njmp l"))
    cos.type("insmod\n")
    board.run(50_000)
    return board, board.cpu


def _vm_iretd_machine():
    """A VM returning with iretd in a loop: each iretd was patched to int3 at install
    and traps to the VMM, which emulates it on the virtual CPU. (It pops IF clear:
    the guest has no IDT for its ticks.)"""
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover(timer_period=0x10000, vm_tick=None)
    src = lambda base: "l: push 2\npush 0x3b\ncall next\nnext: add dword ptr [esp], 5\niretd\njmp l"
    loader.kernel.install_vm(src, 64 << 10, "iretd")
    board.run(100_000)
    return board, board.cpu


def _busy_vm_machine():
    """Two busy VMs under a 10,000-instruction tick: an IRQ from CPL 3, the guest's
    EOI and iretd, world switches: every kind of entry, mixed."""
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover(timer_period=10_000, vm_tick=None)   # (the teaching tick's entries)
    for i in range(2):
        loader.kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}")
    board.run(100_000)
    return board, board.cpu


ENTRY_CAUSES = {"a COS EOI (out 0x20, #GP)": _cos_eoi_machine,
                "a VM's patched iretd (int3)": _vm_iretd_machine,
                "busy VMs: IRQ from CPL 3, EOI, iretd, switches": _busy_vm_machine}


def kernel_entries():
    """{cause: (median, min, max) seconds per kernel entry}."""
    return {cause: spread(_per_entry(build, 0)) for cause, build in ENTRY_CAUSES.items()}


def notebook_seconds(folder="notebooks", timeout=300):
    """Wall seconds of each notebook's Run All on a fresh kernel (nbclient), kernel start included."""
    import pathlib
    import nbformat
    from nbclient import NotebookClient
    seconds = {}
    for path in sorted(pathlib.Path(folder).glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t = time.perf_counter()
        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds[path.name] = time.perf_counter() - t
    return seconds


def main(notebooks=True):
    med, lo, hi = vm_alone()
    print(f"a VM alone at CPL 3 with paging ÷ raw Unicorn (count mode), same loop: "
          f"{med:.2f}  (min {lo:.2f}, max {hi:.2f}; aim ≥ 0.9)")
    medians = []
    for cause, (med, lo, hi) in kernel_entries().items():
        medians.append(med)
        print(f"one kernel entry, {cause:48} {med * 1e6:6.1f} µs  (min {lo * 1e6:.1f}, max {hi * 1e6:.1f})")
    print(f"one kernel entry, median over the causes: {statistics.median(medians) * 1e6:.1f} µs (aim ≤ 30)")
    if notebooks:
        seconds = notebook_seconds()
        slowest = max(seconds, key=seconds.get)
        print("Run All, each notebook: " + ", ".join(f"{n[:2]} {s:.1f} s" for n, s in seconds.items())
              + f"; slowest {slowest} {seconds[slowest]:.1f} s (aim ≤ 10)")


if __name__ == "__main__":
    main()
