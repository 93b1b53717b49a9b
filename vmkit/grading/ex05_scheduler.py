"""Grades exercise 05: the learner's pick is the kernel's scheduler
(Worlds.chooser). Two busy VMs with quanta 3 and 1 must get CPU time about
3:1 with the COS keeping its turns; with two console VMs and one that
crashes every runnable world must run and the crashed one never again (and
with each of those worlds in turn the only one that can run, the pick finds it, and
with no other world able to run it gives None); and
three busy VMs must take their turns in the order they were installed, as
the CPU shows it (its CR3, sampled as it runs: each VM has its own)."""
from vmkit.lessons import worlds as lesson
from vmkit.lessons import takeover
from vmkit.vmm import guests


class Checked:
    """Wraps the learner's pick: remembers the first pick that could not be right."""
    def __init__(self, pick):
        self.pick, self.problem = pick, None

    def __call__(self, worlds, current, runnable):
        got = self.pick(list(worlds), current, runnable)
        if self.problem is None:
            if got is current:
                self.problem = f"it returned the running world {current.name} (pick another, or None)"
            elif got is not None and got not in worlds:
                self.problem = f"it returned {got!r}, not one of the worlds"
            elif got is not None and not runnable(got):
                self.problem = f"it picked {got.name}, which cannot run ({got.state})"
        if got is current or got not in worlds or (got is not None and not runnable(got)):
            return None
        return got


def _machine(pick, quantum):
    # vm_tick=None: the VMs' turns are quanta of PIT ticks, many in the grader's short run
    board, cos, loader = takeover.takeover(timer_period=2000, vm_tick=None)
    kernel = loader.kernel
    kernel.worlds.quantum = quantum
    kernel.worlds.chooser = checked = Checked(pick)
    return board, cos, kernel, checked


def check_shares(pick):
    board, cos, kernel, checked = _machine(pick, 1)
    heavy, light = (kernel.install_vm(lambda base: guests.checksum(base, 10**9), lesson.VM_MEMORY, n)
                    for n in ("heavy", "light"))
    heavy.quantum = 3
    ticks = cos.ticks()
    board.run(1_500_000)
    if checked.problem:
        return checked.problem
    h, l = kernel.worlds.instructions_of(heavy), kernel.worlds.instructions_of(light)
    if l < 50_000 or h < 50_000:
        return f"a busy VM hardly ran: heavy {h:,} and light {l:,} instructions in 1,500,000"
    if not 2.5 < h / l < 3.5:
        return f"heavy (quantum 3) got {h:,} instructions, light (quantum 1) {l:,}: ratio {h / l:.2f}, expected about 3"
    if cos.ticks() < ticks + 50:
        return f"the COS took {cos.ticks() - ticks} timer ticks; it must keep its turns"
    return None


def check_every_world_runs(pick):
    board, cos, kernel, checked = _machine(pick, 2)
    vms = [kernel.install_vm(lambda base, n=n: guests.console(base, n), lesson.VM_MEMORY, n)
           for n in ("vm1", "vm2")]
    bad = kernel.install_vm(lambda base: guests.crasher(base, "bad"), lesson.VM_MEMORY, "bad")
    ticks = cos.ticks()
    board.run(1_000_000)
    if checked.problem:
        return checked.problem
    for vm in vms:
        got = bytes(vm.vmm.console).decode().splitlines()
        if len(got) < 10:
            return f"{vm.name} printed {len(got)} lines in 1,000,000 instructions; expected over 10 (did it get turns?)"
    if cos.ticks() < ticks + 50:
        return f"the COS took {cos.ticks() - ticks} timer ticks; it must keep its turns"
    if bad.state != "crashed":
        return "the crashing VM never ran (it must run to crash)"
    crashed_at = board.trace.of("vm.crashed")[0].time
    if any(e["to"] == "bad" and e.time > crashed_at for e in board.trace.of("switch.begin")):
        return "the crashed VM was picked again after it crashed"
    return _only_one_can_run(pick, kernel.worlds.all) or _none_can_run(pick)


def _none_can_run(pick):
    """The COS and one VM that halts with its interrupts off: from then on no world but the
    COS can run, and every pick at the end of the COS's turn must be None (the runs above
    always had a VM woken by the tick, so they never asked for nothing)."""
    board, cos, kernel, checked = _machine(pick, 1)
    asleep = kernel.install_vm(lambda base: "cli\nh: hlt\njmp h", lesson.VM_MEMORY, "asleep")
    ticks = cos.ticks()
    board.run(200_000)
    if checked.problem:
        return (f"with the COS running and the only VM ({asleep.name}) halted with its interrupts off, no "
                f"other world could run, and {checked.problem}: return None when no other world can run "
                f"(then the current world goes on)")
    if cos.ticks() < ticks + 20:
        return f"with the only VM halted, the COS took {cos.ticks() - ticks} timer ticks; it must go on"
    return None


def _only_one_can_run(pick, worlds):
    """The machine's worlds, each in turn the only one that can run: whichever is current,
    the pick must find it (a pick that gives up before the world just behind the current
    one looks right while every world is runnable, as the runs above mostly are)."""
    for current in worlds:
        for target in worlds:
            if target is not current:
                got = pick(list(worlds), current, lambda w, target=target: w is target)
                if got is not target:
                    return (f"with {target.name} the only world that can run, your pick after {current.name} "
                            f"returned {getattr(got, 'name', got)} (the worlds: "
                            f"{', '.join(w.name for w in worlds)}): try every world after the current one, "
                            f"wrapping around, before giving up")
    return None


def _ran(board, kernel, instructions, every=10):
    """The worlds the CPU ran, in order: its CR3 sampled every `every` instructions."""
    by_cr3 = {w.cr3: w for w in kernel.worlds.all}
    ran = []
    for _ in range(instructions // every):
        board.run(every)
        world = by_cr3.get(board.cpu["cr3"])
        if world is not None and (not ran or ran[-1] is not world):
            ran.append(world)
    return ran


def check_turn_order(pick):
    board, cos, kernel, checked = _machine(pick, 1)
    # (named so that their names' order is neither the installation order nor its reverse: a
    # pick that sorts the worlds by name, not by `worlds`' order, shows)
    vms = [kernel.install_vm(lambda base: guests.checksum(base, 10**9), lesson.VM_MEMORY, n)
           for n in ("red", "amber", "green", "blue")]
    ran = [w for w in _ran(board, kernel, 150_000) if w in vms]
    ran = [w for i, w in enumerate(ran) if i == 0 or ran[i - 1] is not w]
    if checked.problem:
        return checked.problem
    if len(ran) < 6:
        return f"in 150,000 instructions the VMs took {len(ran)} turns between them; expected over a dozen"
    order = " -> ".join(w.name for w in ran[:8])
    pairs = list(zip(ran, ran[1:]))
    for a, b in pairs:
        want = vms[(vms.index(a) + 1) % len(vms)]
        if b is not want:
            named = sorted(vms, key=lambda w: w.name)
            if all(y is vms[vms.index(x) - 1] for x, y in pairs):
                why = "The turns go round in reverse: "
            elif all(y is named[(named.index(x) + 1) % len(named)] for x, y in pairs):
                why = "The turns follow the worlds' names in alphabetical order, not `worlds`' own order: "
            else:
                why = ""
            return (f"the CPU ran {order} ...: after {a.name} came {b.name}, not {want.name}. " + why
                    + f"pick the first runnable world AFTER the current one in `worlds` "
                    f"({', '.join(w.name for w in kernel.worlds.all)}), wrapping around")
    return None


CHECKS = [("shares follow the quanta (3:1)", 2, check_shares),
          ("every runnable world runs, a crashed one never", 2, check_every_world_runs),
          ("turns go round in the order of the worlds", 1, check_turn_order)]
FUNCTION = "pick_next"
