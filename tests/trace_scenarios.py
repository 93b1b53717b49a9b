"""The runs whose whole trace is kept as a fixture (tests/fixtures/trace_*.txt).

An optimisation of the kernel's way in and out must not change what the
machine does: the same events, in the same order, with the same data, at
the same virtual times. tests/test_trace_equality.py replays these runs and
compares them line by line with the fixture. A change that is meant to move
the trace (a new event, a step that now costs instructions) re-records the
fixtures — `python tests/trace_scenarios.py` — and says in its commit what
moved and why.
"""
import pathlib

from vmkit.kernel.worlds import VM_TICK
from vmkit.lessons import takeover
from vmkit.vmm import guests

FIXTURES = pathlib.Path(__file__).with_name("fixtures")
INSTRUCTIONS = 600_000              # at the teaching tick: dozens of ticks and switches
REAL_TICK_INSTRUCTIONS = 4_500_000  # at 100 Hz: each VM's turn of two ticks, then the COS with its held tick


def busy_vms(cpus, vm_tick=None, instructions=INSTRUCTIONS):
    """The displaced COS and two busy VMs per CPU, the COS's 10,000-instruction
    PIT tick: takeover, IRQ forwarding, traps, injections, world switches (and
    on two CPUs the local APIC timer and the mapping caches). vm_tick None: the
    VMs tick with the PIT, as where a lesson shows single IRQs; VM_TICK: a real
    kernel's tick from the local APIC while a VM runs, the COS's ticks held
    pending at the masked line (the default machine)."""
    board, cos, loader = takeover.takeover(timer_period=10_000, cpus=cpus, vm_tick=vm_tick)
    kernel = loader.kernel
    for i in range(2 * cpus):
        kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}", cpu=i % cpus)
    board.run(instructions)
    return [str(e) for e in board.trace.events]


SCENARIOS = {"1cpu": lambda: busy_vms(1), "2cpu": lambda: busy_vms(2),
             "1cpu_100hz": lambda: busy_vms(1, VM_TICK, REAL_TICK_INSTRUCTIONS),
             "2cpu_100hz": lambda: busy_vms(2, VM_TICK, REAL_TICK_INSTRUCTIONS)}


def fixture(name):
    return FIXTURES / f"trace_{name}.txt"


if __name__ == "__main__":
    FIXTURES.mkdir(exist_ok=True)
    for name, run in SCENARIOS.items():
        lines = run()
        fixture(name).write_text("\n".join(lines) + "\n")
        print(f"{fixture(name)}: {len(lines)} events")
