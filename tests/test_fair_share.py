"""The COS's fair share at the VM tick: VMs tick at 100 Hz of the virtual clock (1,000,000
instructions), the COS at its PIT's period; a quantum is virtual time whichever clock counts
it, so a busy COS and two busy VMs with equal quanta get equal virtual time, read from the
world blocks' instruction counters in kernel memory. An idle COS still yields CPU 0 at once."""
from vmkit.cos.cos import COS
from vmkit.lessons import takeover
from vmkit.vmm import guests

SPINS = 0x5000          # the COS's module counts its loop here


def machine():
    """The default PIT period; VMs at a tenth of the default VM tick (a tenth of the time)."""
    board, cos, loader = takeover.takeover(timer_period=10_000, vm_tick=100_000)
    k = loader.kernel
    vms = [k.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}") for i in range(2)]
    return board, cos, k, vms


def test_a_busy_cos_and_two_busy_vms_get_virtual_time_in_proportion_to_their_quanta():
    board, cos, k, vms = machine()
    worlds = k.worlds
    cos.put_module(COS.make_module("init: sti\nspin: inc dword ptr [0x5000]\n jmp spin"))
    cos.type("insmod\n")                                   # its init never returns: a busy COS
    now = lambda name: lambda: worlds.current.name == name
    board.run_until(now("busy0"), 3_000_000, "busy0's turn")
    before = {w.name: worlds.instructions_of(w) for w in worlds.all}
    spun = board.memory.read_u32(SPINS)
    for _ in range(2):                                     # two whole rounds: busy0, busy1, the COS
        board.run_until(now("busy1"), 3_000_000, "busy1's turn")
        board.run_until(now("busy0"), 3_000_000, "busy0's turn")
    got = {w.name: worlds.instructions_of(w) - before[w.name] for w in worlds.all}
    assert board.memory.read_u32(SPINS) - spun > 100_000   # the COS did spin, at CPL 1
    assert worlds.quantum_of(worlds.all[0]) * board.pit.period == worlds.quantum * worlds.vm_tick
    for vm in vms:                                         # 1:1:1 (the COS's count includes the
        assert 0.9 < got["cos"] / got[vm.name] < 1.3, got  # kernel's work on its frame), not 1:10:10


def test_an_idle_cos_yields_cpu0_at_once():
    board, cos, k, vms = machine()
    board.run(500_000)
    mark = board.trace.mark()
    board.run(1_000_000)
    starts = board.trace.since(mark, "switch.start")
    turns = [(a, b) for a, b in zip(starts, starts[1:]) if a["world"] == "cos"]
    assert len(turns) >= 2
    for a, b in turns:                 # its pending tick (and any of the kernel's work due), then
        assert b.time - a.time < 8_000, (str(a), str(b))   # hlt: a VM runs, not at a tick
