"""Grades exercise 07: the learner's choose_slot is every CPU's mapping-cache
policy (MappingCache.choose) on a two-CPU machine running console VMs. Their
VMMs reach the guests' IDTs and stacks only through the window, so the VMs
print the right lines only if each answer names the slot that maps the page.
The counters must match least-recently-used exactly: first with room for
every page (no evictions), then with three VMs on CPU 1 (six pages, four
slots: evictions every turn), then with two VMs on CPU 1 of which one moves
its stack between two pages by turns (five pages, four slots). Turns that
each use only their own VM's pages evict in the order the pages came in, so
first-in-first-out gives least-recently-used's counters there; only a page
used again while others came in (the IDT page of the VM whose stack moved)
tells them apart."""
import functools

from vmkit.kernel.mapcache import COUNTERS, MappingCacheError, choose_slot as reference
from vmkit.lessons import smp
from vmkit.vmm import guests

RUN = 300_000


ROOM, EVICTION, REUSE = "room", "eviction", "reuse"
MACHINES = {ROOM: (("vm1", False), ("vm2", False), ("vm3", False), ("vm4", False)),   # (VM, two stacks)
            EVICTION: (("vm1", False), ("vm2", False), ("vm3", False)),                 # all on CPU 1
            REUSE: (("vm1", True), ("vm2", False))}                                     # all on CPU 1


def _run(choose, machine):
    board, cos, kernel, vms = smp.two_cpus(vms=())
    for p in kernel.worlds.cpus:
        p.cache.choose = choose
    for name, two_stacks in MACHINES[machine]:
        kernel.install_vm(lambda base, n=name, t=two_stacks: guests.console(base, n, two_stacks=t),
                          smp.VM_MEMORY, name, cpu=None if machine == ROOM else 1)
    board.run(RUN)
    counters = {n: sum(p.cache.count(n) for p in kernel.worlds.cpus) for n in COUNTERS}
    return kernel, counters


@functools.lru_cache(maxsize=None)
def _least_recently_used(machine):
    """The reference's counters on the same machine. Virtual time is retired
    instructions, so they are the same on every run: measured once per process
    (every wrong answer of the tests compares with them), handed out as a copy."""
    return _run(reference, machine)[1]


def _problem(choose, machine):
    try:
        kernel, got = _run(choose, machine)
    except MappingCacheError as e:          # the kernel refused the answer, or the CPU could not use it
        if "out of reach" in str(e):
            return (f"the VMM's read through the window faulted ({e}): you answered hit=True "
                    "for a slot whose page-table entry maps nothing; a hit is a slot that holds the page")
        return f"{e} (return an index into `slots`)" if "chose slot" in str(e) else str(e)
    for vm in kernel.worlds.all[1:]:
        if vm.state == "crashed":
            return f"{vm.name} crashed: {vm.fault} (did a slot you called a hit map another page?)"
        text = bytes(vm.vmm.console).decode("latin-1")
        lines = text[:text.rfind("\n") + 1].splitlines()      # a line cut off by the run's end is not wrong
        want = [f"hello from {vm.name}"] + [f"{vm.name} {chr(97 + i % 26)}" for i in range(len(lines) - 1)]
        if len(lines) < 10 or lines != want:
            return (f"{vm.name}'s console is wrong: {lines[:4]} ... ({len(lines)} lines): the kernel "
                    "reads the guest's IDT and stack through the window: did a slot you called a hit "
                    "map another page?")
    want = dict(_least_recently_used(machine))
    if got == want:
        return None
    said = ", ".join(f"{n} {got[n]} (least-recently-used: {want[n]})" for n in ("hits", "misses", "evictions"))
    if got["hits"] == 0:
        return f"{said}: no lookup was a hit; a page already in a slot is that slot, hit=True"
    if got["misses"] > want["misses"] and machine == ROOM:
        return (f"{said}: with room for every page, pages already mapped were mapped again; "
                "look the page up in `slots` first, then take an empty slot")
    if machine == EVICTION:
        return (f"{said}: with 6 pages on 4 slots your evictions differ; evict the least recently "
                "used slot (the smallest last_used), not the most recent or a fixed one")
    if machine == REUSE:
        return (f"{said}: with vm1's stack on two pages by turns and vm2 beside it on CPU 1 (5 pages on "
                "4 slots) your evictions differ: a page used again while others came in (vm1's IDT page, "
                "each turn of vm1) is recent, whenever it was mapped. Evict the least recently used slot "
                "(the smallest last_used), not the one mapped first")
    return f"{said}: the counters in kernel memory differ from least-recently-used"


def check_room(choose):
    return _problem(choose, ROOM)


def check_eviction(choose):
    return _problem(choose, EVICTION) or _problem(choose, REUSE)


CHECKS = [("hits and misses with room for every page", 2, check_room),
          ("least-recently-used eviction past 4 slots", 3, check_eviction)]
FUNCTION = "choose_slot"
