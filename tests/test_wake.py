"""A halted VM is woken when the kernel raises a line for it: where its CPU idles, the
CPU is told with a reschedule IPI (its local APIC) and switches to the VM at once, not at
its next timer tick (Worlds.wake)."""
from vmkit import bench_net
from vmkit.hw.nic import Wire
from vmkit.kernel import smp
from vmkit.lessons import takeover
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import install_vm_with_net


def _stream(frames=300, batch=1):
    board, cos, loader = takeover.takeover(nics=2, cpus=2)
    k = loader.kernel
    Wire(board.nics[0], board.nics[1])
    sink = install_vm_with_net(k, net_guest.program("sink", [("sink", frames)]), net_guest.MEMORY,
                               "sink", "nic1", cpu=1)
    sender = install_vm_with_net(k, net_guest.program("src", [("stream", sink.vmm.net.port.mac, batch,
                                                                frames // batch, 60)]),
                                 net_guest.MEMORY, "src", "nic0", cpu=0)
    board.run(400_000)
    return board, k, sink, sender


def test_a_line_raised_for_a_vm_halted_on_an_idle_cpu_is_injected_within_a_few_hundred_instructions():
    board, k, sink, sender = _stream()
    latencies, raised, on_cpu1 = [], None, None
    for e in board.trace.of("vmm.raise", "vmm.inject", "switch.start"):
        if e.kind == "switch.start":
            on_cpu1 = e["world"] if e.cpu == 1 else on_cpu1
        elif e["vm"] != "sink":
            continue
        elif e.kind == "vmm.raise" and raised is None and on_cpu1 == "system1":   # halted, CPU 1 idle
            raised = e.time
        elif e.kind == "vmm.inject" and e["vector"] == 0x20 + 10 and raised is not None:
            latencies.append(e.time - raised)
            raised = None
    assert latencies and max(latencies) < 1000           # not the ~19,000 of the next tick
    ipis = [e for e in board.trace.of("cpu.deliver") if e.cpu == 1 and e["vector"] == smp.RESCHEDULE_VECTOR]
    assert ipis and {e["cpl"] for e in ipis} == {"0->0"}  # taken in CPU 1's system world
    assert sink.vmm.net.port.counters().frames_received == 300


def test_the_receiving_vm_of_a_stream_drops_nothing():
    *_, got, dropped, _, _ = bench_net.stream(1, frames=300)
    assert (got, dropped) == (300, 0)
