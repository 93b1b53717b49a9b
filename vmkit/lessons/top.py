"""What `vmkit top` and the notebook's top widget show: per world and per
CPU, like esxtop, read from the machine.

From kernel memory: each world's ticks, switches in and instructions held
(its world block, Worlds.*_of), and its virtual CPU's traps and injected
interrupts (the COS's and each VM's, in the same block layout). From the one
trace (`board.trace`): the hardware interrupts and exceptions the CPU
delivered while a world ran, attributed to the world that `switch.begin`
events say ran on that CPU at the time; the frames the kernel's shared NIC
sorted to a world or sent for it, and the shared SCSI requests it completed
for it.

`Top.snapshot()` returns one row per world; `%` is the share of its CPU's
virtual time the world held since the previous snapshot. The CLI and the
widget both call it: there is no second computation of these numbers.
"""
COLUMNS = ("time", "cpu", "world", "kind", "state", "pct", "instructions", "switches", "ticks",
           "irqs", "injected", "traps", "gp", "bp", "pf", "other", "packets", "disk_io")
# The causes a displaced COS and a VM trap for: #GP (a privileged instruction at
# CPL 1 or 3), #BP (an iretd patched to int3), #PF (a VM's access outside its
# memory); "other": any other vector, a software `int` to the kernel included.
CAUSES = {13: "gp", 3: "bp", 14: "pf"}


def cause(vector):
    """The column a delivered exception or software interrupt is counted in."""
    return CAUSES.get(vector, "other")


# I/O done for a world, by the kernel's shared devices: event -> (world, column).
# A frame for "both" went to the COS and to the kernel.
IO = {"nic.share_rx": lambda e: ("cos" if e["to"] == "both" else e["to"], "packets"),
      "nic.share_tx": lambda e: (e["from"], "packets"),
      "scsi.share_done": lambda e: (e["owner"], "disk_io")}


class Top:
    """Snapshots of one running machine: call snapshot() between runs."""

    def __init__(self, board, kernel):
        self.board, self.kernel = board, kernel
        self._mark = 0
        self._running = {}                  # cpu -> name of the world it runs (from the trace)
        self._counts = {}                   # world name -> {"irqs": n, "gp": n, ...}
        self._held = {}                     # world name -> instructions at the last snapshot
        self._last = None                   # virtual time of the last snapshot

    def _worlds(self):
        """(world, cpu index) for every world, system worlds of other CPUs included."""
        w = self.kernel.worlds
        out = [(x, x.cpu) for x in w.all]
        out += [(p.system, p.index) for p in w.cpus if p.index]
        return out

    def _read_trace(self):
        w = self.kernel.worlds
        if not self._running:
            self._running = {p.index: ("cos" if p.index == 0 else p.system.name) for p in w.cpus}
        for e in self.board.trace.since(self._mark, "cpu.deliver", "switch.begin", *IO):
            cpu = e.cpu or 0
            if e.kind == "switch.begin":
                self._running[cpu] = e["to"]
                continue
            if e.kind in IO:
                who, column = IO[e.kind](e)
                counts = self._counts.setdefault(who, {})
                counts[column] = counts.get(column, 0) + 1
                continue
            who = self._running.get(cpu, "cos")
            counts = self._counts.setdefault(who, {})
            column = "irqs" if e["kind"] == "irq" else cause(e["vector"])
            counts[column] = counts.get(column, 0) + 1
        self._mark = self.board.trace.mark()

    def _held_now(self, world):
        """Instructions the world has held its CPU: its block's counter, plus the
        turn it is in now (the counter is added to when it is switched out)."""
        w = self.kernel.worlds
        held = w.instructions_of(world)
        for p in w.cpus:
            if p.current is world:
                held += self.board.now() - p.since
        return held

    def _vcpu(self, world):
        if world.kind == "cos":
            return self.kernel.vcpu
        return world.vmm.vcpu if world.vmm is not None else None

    def snapshot(self):
        """[{column: value}] per world, now."""
        self._read_trace()
        now, w = self.board.now(), self.kernel.worlds
        span = now - self._last if self._last is not None else now
        rows = []
        for world, cpu in self._worlds():
            held = self._held_now(world)
            delta = held - self._held.get(world.name, 0)
            self._held[world.name] = held
            v = self._vcpu(world)
            counts = self._counts.get(world.name, {})
            rows.append({
                "time": now, "cpu": cpu, "world": world.name, "kind": world.kind,
                "state": "idle loop" if world.kind == "system" else world.state,
                "pct": round(100 * delta / span, 1) if span else 0.0,
                "instructions": held, "switches": w.switches_of(world), "ticks": w.ticks_of(world),
                "irqs": counts.get("irqs", 0),
                "injected": v.injected if v else 0, "traps": v.traps if v else 0,
                **{c: counts.get(c, 0) for c in ("gp", "bp", "pf", "other", "packets", "disk_io")}})
        self._last = now
        return sorted(rows, key=lambda r: (r["cpu"], r["kind"] != "cos", r["world"]))


def table(rows):
    """The rows as esxtop-like text, one CPU after another."""
    head = (f"{'CPU':>3} {'world':8} {'kind':6} {'state':9} {'%VT':>6} {'instructions':>12} "
            f"{'switches':>8} {'ticks':>6} {'IRQs':>6} {'injected':>8} {'traps':>6} "
            f"{'#GP':>5} {'#BP':>5} {'#PF':>4} {'other':>5} {'pkts':>5} {'disk':>5}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['cpu']:>3} {r['world']:8} {r['kind']:6} {r['state']:9} {r['pct']:>6.1f} "
                     f"{r['instructions']:>12,} {r['switches']:>8} {r['ticks']:>6} {r['irqs']:>6} "
                     f"{r['injected']:>8} {r['traps']:>6} {r['gp']:>5} {r['bp']:>5} {r['pf']:>4} "
                     f"{r['other']:>5} {r['packets']:>5} {r['disk_io']:>5}")
    return "\n".join(lines)
