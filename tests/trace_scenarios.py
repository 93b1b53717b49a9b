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

from vmkit.lessons import takeover
from vmkit.vmm import guests

FIXTURES = pathlib.Path(__file__).with_name("fixtures")
INSTRUCTIONS = 600_000


def busy_vms(cpus):
    """The displaced COS and two busy VMs per CPU, a 10,000-instruction tick:
    takeover, IRQ forwarding, traps, injections, world switches (and on two
    CPUs the local APIC timer and the mapping caches)."""
    board, cos, loader = takeover.takeover(timer_period=10_000, cpus=cpus)
    kernel = loader.kernel
    for i in range(2 * cpus):
        kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}", cpu=i % cpus)
    board.run(INSTRUCTIONS)
    return [str(e) for e in board.trace.events]


SCENARIOS = {"1cpu": lambda: busy_vms(1), "2cpu": lambda: busy_vms(2)}


def fixture(name):
    return FIXTURES / f"trace_{name}.txt"


if __name__ == "__main__":
    FIXTURES.mkdir(exist_ok=True)
    for name, run in SCENARIOS.items():
        lines = run()
        fixture(name).write_text("\n".join(lines) + "\n")
        print(f"{fixture(name)}: {len(lines)} events")
