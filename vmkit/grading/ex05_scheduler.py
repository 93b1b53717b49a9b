"""Grades exercise 05: the learner's pick is the kernel's scheduler
(Worlds.chooser). Two busy VMs with quanta 3 and 1 must get CPU time about
3:1 with the COS keeping its turns, and with two console VMs and one that
crashes every runnable world must run and the crashed one never again."""
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
    board, cos, loader = takeover.takeover(timer_period=2000)
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
    return None


CHECKS = [("shares follow the quanta (3:1)", 2, check_shares),
          ("every runnable world runs, a crashed one never", 2, check_every_world_runs)]
FUNCTION = "pick_next"
