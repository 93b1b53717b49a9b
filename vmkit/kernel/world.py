"""A world, what the kernel schedules (claims 13, 27, 34), and a Processor, one CPU as
the scheduler sees it (claim 16). Their own module so that smp.py, which makes each
CPU's Processor and system world, and worlds.py, which schedules them, both import
them from below instead of from each other."""


class World:
    def __init__(self, name, kind, area, region, vmm=None, cpu=0):
        self.name, self.kind, self.area, self.region, self.vmm = name, kind, area, region, vmm
        self.cpu = cpu                  # the CPU it is placed on (the COS: 0)
        self.state, self.fault = "ready", None
        self.quantum = None             # ticks per turn; None: the scheduler's default (shares)
        self.cr3 = 0

    def __repr__(self):
        return f"<world {self.name} {self.kind} {self.state}>"


class _Told:
    """An attribute of a Processor whose every assignment calls its `on_change` (a data
    descriptor without __get__: a read finds the instance's own value, nearly at a plain
    attribute's cost; the kernel reads `current` and `switching` on every entry)."""
    def __set_name__(self, owner, name):
        self.name = name

    def __set__(self, p, value):
        p.__dict__[self.name] = value
        if p.on_change is not None:
            p.on_change(p)


class Processor:
    """One CPU as the scheduler sees it (claim 16): its system world, the world
    it runs now, how much of that world's quantum is used, its own mapping
    cache (claim 17), and the switch its x86 is in the middle of. Made by smp.py.
    Whoever follows the world it runs and its switch (vmm/region.py: the counter's pass of
    the VMM's entry depends on both) hears of every change through `on_change`."""
    current, switching = _Told(), _Told()

    def __init__(self, index, system, cache):
        self.index, self.system, self.cache = index, system, cache
        self.on_change = None           # on_change(self) after `current` or `switching` changes
        self.current, self.used, self.since = system, 0, 0
        self.switching = None
