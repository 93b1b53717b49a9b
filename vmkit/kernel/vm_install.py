"""Installing a VM (claims 12, 13): its place in host memory and on a CPU, its memory,
page tables, VMM region and first registers, checked before anything changes.

VM memory (and just above it the VM's page tables, above them its VMM region) comes from the top of RAM,
down to the end of the kernel's block: all of it past the COS's segment limit
and its allocator's RAM top (the loader set both to the kernel's base), so the
COS can neither hand those pages out nor store into them.

The world table and its scheduler, whose methods these are (Worlds inherits them): worlds.py.
"""
from vmkit.hw.asm import assemble
from vmkit.hw.x86 import EFLAGS_IF
from . import layout, paging, save_area, smp
from .errors import GuestFault
from .world import World


class VMError(ValueError):
    """A VM cannot be installed (not enough memory, too many worlds)."""


class Installing:
    """Worlds' part that makes VM worlds (self: the Worlds; uses its kernel, memory, trace,
    the world table `all`, `vm_top`, `_block` and `wake`)."""

    def _vmm_mappings(self, host):
        """The VMM region's two supervisor mappings: at
        VMM_BASE, and at its host address."""
        return [(layout.vmm_base(self.kernel.base), host, layout.VMM_SIZE), (host, host, layout.VMM_SIZE)]

    def vm_base(self, memory_bytes):
        """Where in host memory the next VM of this size would be placed (its guest
        sees those pages from its address 0: paging.py). From the top down: its VMM
        region, its page tables, its memory."""
        size = -(-memory_bytes // layout.PAGE) * layout.PAGE
        top, floor = self.vm_top - layout.VMM_SIZE, self.kernel.end
        tables = 0
        for _ in range(2):                     # the tables' count may depend on where the region lands
            tables = max(tables, paging.table_pages(self.kernel.block, self.vm_mappings(
                top - tables - size, size, top)) * layout.PAGE if size > 0 else 0)
        if size <= 0 or top - tables - size < floor:
            left = max(0, top - floor)
            raise VMError(f"a VM of {memory_bytes} bytes does not fit: {left} bytes of memory are left "
                          f"(between the kernel's end at {floor:#x} and the last VM's base {self.vm_top:#x})")
        if size > layout.vmm_base(self.kernel.base):          # its guest sees it from 0 up to the VMM
            raise VMError(f"a VM of {memory_bytes} bytes does not fit below its VMM at "
                          f"{layout.vmm_base(self.kernel.base):#x} in its address space")
        return top - tables - size             # its page tables go above it (paging.py)

    def vm_mappings(self, base, size, region):
        """A VM's address space besides the kernel's block (paging.build's mappings): its
        memory, host [base, base + size), at linear 0 .. size, user read/write; its VMM
        region (host `region`), supervisor-only, at VMM_BASE and at its host address."""
        return [(0, base, size)] + [(linear, host, length, paging.WRITABLE)
                                    for linear, host, length in self._vmm_mappings(region)]

    def place(self, cpu=None):
        """The CPU a new VM goes to: `cpu`, or the one with the fewest worlds
        placed (the COS counts on CPU 0)."""
        n = len(self.cpus)
        if cpu is None:
            load = [sum(1 for w in self.all if w.cpu == i) for i in range(n)]
            cpu = load.index(min(load))
        if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < n:
            raise VMError(f"no CPU {cpu!r}: the board has CPUs 0..{n - 1}")
        return cpu

    def install_vm(self, guest, memory_bytes, name=None, cpu=None, entry=0):
        """A VM of `memory_bytes` whose guest sees that memory from address 0 (its
        pages come from the top of RAM, host [base, base + size): paging.py).
        guest: x86 text, bytes (a flat binary linked at 0), or a function of the
        address it is linked at (always 0) giving either; entry: the guest address
        of its first instruction (inside its image). It starts with EIP = entry
        and ESP = size, the top of its memory."""
        if self.kernel.monitor is None:
            raise VMError("this kernel was built without a VMM to run VMs (Kernel(monitor=...))")
        cpu = self.place(cpu)
        if not isinstance(name, (str, type(None))):
            raise VMError(f"a VM's name is text, not {name!r}")
        if not isinstance(memory_bytes, int) or isinstance(memory_bytes, bool) or memory_bytes <= 0:
            raise VMError(f"a VM's memory is a positive number of bytes, not {memory_bytes!r}")
        size = -(-memory_bytes // layout.PAGE) * layout.PAGE
        base = self.vm_base(memory_bytes)
        if size > self.kernel.base:              # its linear 0..size would run into the kernel's block
            raise VMError(f"a VM's memory is seen from its address 0 and must end below the kernel "
                          f"at {self.kernel.base:#x}, not {memory_bytes:#x} bytes")
        name = name or f"vm{len(self.all)}"
        if any(w.name == name for w in self.all):
            raise VMError(f"there is already a world named {name!r}: a schedule names worlds")
        code = self._guest_code(guest, size, name)              # all checked before anything changes
        if not isinstance(entry, int) or isinstance(entry, bool) or not 0 <= entry < len(code):
            raise VMError(f"{name}'s entry {entry!r} is not an address inside its image "
                          f"(guest addresses 0..{len(code) - 1:#x})")
        try:
            self.kernel.monitor.check_guest(code, entry)        # e.g. its patch table would overflow
        except GuestFault as e:
            raise VMError(f"{name} cannot run under its VMM: {e}") from None
        area = self._block(len(self.all))
        region = self.vm_top - layout.VMM_SIZE                  # its VMM region: above its tables
        self.vm_top = base                                      # the next VM goes below it
        self.memory.write(base, bytes(size), code=False)
        cr3 = paging.build(self.memory, base + size, self.kernel.block, self.vm_mappings(base, size, region),
                           window=smp.window(self.kernel, cpu))
        self.memory.write(base, code)
        self._prepare_vm_support()
        self.kernel.monitor.build_region(self.kernel, region, 0, size)   # GDT, IDT, x86: its guest from 0
        self.kernel.enter_vmms()
        vmm = self.kernel.monitor(self.kernel, name, base, size, region, cpu)
        vmm.patch(entry)                                        # from its entry point
        world = World(name, "vm", area, (base, size), vmm, cpu)
        world.vmm_region = region                               # host address (vmm/region.py)
        user_data = layout.USER_DATA_SEL | layout.USER_RPL
        state = dict.fromkeys(save_area.ITEMS, 0)
        state.update(eip=entry, esp=size, eflags=EFLAGS_IF | 2,
                     cs=layout.USER_CODE_SEL | layout.USER_RPL, ss=user_data,
                     ds=user_data, es=user_data, fs=user_data, gs=user_data)
        state.update(self.kernel.monitor.tables(region))     # its VMM's GDT and IDT (identity addresses)
        state.update({"tr.sel": smp.vm_tss(self.kernel, cpu)[0],  # ESP0: its CPU's kernel stack
                      "cr3": cr3})                              # its own address space
        save_area.write_area(self.memory, area, state)
        self.all.append(world)
        self.trace.emit("vm.installed", vm=name, base=base, size=size, code=len(code), area=area, cpu=cpu,
                        entry=entry, vmm=region)
        world.cr3 = cr3
        self.wake(vmm)                                          # an idle CPU starts it now
        return world

    @staticmethod
    def _guest_code(guest, size, name):
        """The guest's bytes, linked at 0 (its memory's first byte): x86 text, bytes,
        or a function of the address it is linked at (0) giving either. Anything
        else, nothing, or too much is refused here, before the RAM top is lowered
        or a world block taken."""
        if callable(guest):
            try:
                guest = guest(0)
            except Exception as e:
                raise VMError(f"{name}'s guest function failed (linked at 0): "
                              f"{type(e).__name__}: {e}") from e
        if isinstance(guest, str):
            code = assemble(guest, 0)
        elif isinstance(guest, (bytes, bytearray, memoryview)):
            code = bytes(guest)
        else:
            raise VMError(f"{name}'s guest must be x86 source (str), bytes (a flat binary linked at 0), "
                          f"or a function of its link address giving either, not "
                          f"{type(guest).__name__} {guest!r:.40}")
        if not code:
            raise VMError(f"{name}'s guest is empty: there is no instruction to start it at")
        if len(code) > size:
            raise VMError(f"{name}'s guest is {len(code)} bytes, its memory {size}")
        return code

    def _prepare_vm_support(self):
        """Once: DPL 3 flat code/data and the TSSs in the kernel's GDT (smp.py)."""
        if not self._vm_support:
            smp.write_gdt(self.kernel)
            self._vm_support = True
