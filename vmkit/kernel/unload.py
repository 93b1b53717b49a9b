"""The unload (claims 24-25): the kernel halts and the COS gets its machine
back, at the most-privileged level, with nothing lost.

The COS asks as it asked for the load: its load-call module's exit (the
COS's `rmmod`) raises int 0x90 with EAX = 4 and EBX = where to write a
refusal's reason. One trace event per step, each carrying what it changed,
in claim 25 C's order (interrupt and fault handling, devices, the kernel
removed):

  unload.called    who asked, from where;
  unload.refused   a VM still runs (the kernel does not stop VMs for the COS:
                   it refuses; a crashed VM no longer runs): EAX = 1 and the
                   reason at EBX, nothing changed;
  unload.wait      something must finish first: a SCSI request queued or at
                   the real controller, an interrupt the COS may take now
                   (injected first), another CPU not parked yet. The COS's
                   int 0x90 runs again (EIP back by its 2 bytes), after the
                   kernel idled to the next interrupt: the COS retries until
                   nothing is in flight;
  unload.park      CPU 1 gets the park IPI and (unload.parking) stops its
                   local timer; its x86 `park` turns paging off, loads the
                   firmware's GDT and no IDT, and halts with IF clear -- as
                   the firmware left it before the kernel started it;
  unload.unpatch   every int3 the kernel wrote is its original byte again
                   (the patch table in kernel memory, patches.py);
  unload.tables    the record below is written and the dispatcher sends the
                   stub to `unload` (GO_UNLOAD): the CPU executes lgdt and lidt
                   of the COS's own tables, ltr of the COS's TSS, the COS's
                   data segments, and an iretd from CPL 0 to CPL 0 (a frame on
                   the COS's stack) to the instruction after its int 0x90,
                   with the COS's own IF;
  unload.resumed   (the module's exit calls the loading module, loader.py:
                   `Loader.unloaded`, at CPL 0) the CPU read back;
  unload.devices   the real 8259A gets the masks of the COS's virtual PIC
                   (including masks it set while displaced); lines still
                   pending for it are left latched in the real PIC's IRR; the
                   SCSI controller gets the COS's interrupt enable; the NIC is
                   reset onto the COS's own rings, the kernel's queued frames
                   counted;
  unload.freed     the kernel's block and the VMs' memory cleared and given
                   back to the COS's allocator (give_back).

The steps park, unpatch, tables, devices, free are taken in the order of
kernel.unload_order (ORDER above by default; exercise 11 plugs in its own):
those before "tables" in the kernel, those after it at CPL 0. A step that
cannot be done where it is placed is not done (unload.skipped says why):
"park" after "tables" (only the kernel's dispatcher parks a CPU, and the
COS has left it) and "free" before "tables" (the kernel would clear the
code it runs and the IDT it takes interrupts through).

The record (layout.UNLOAD in kernel memory) the x86 reads is `UnloadRecord`
below: lgdt's and lidt's operands (u16 limit, u32 base) for the COS's tables and
for a parking CPU's, the COS's TR, CS and data segments, and its ESP.
"""
from vmkit.hw.board import FIRMWARE_GDT
from vmkit.hw.lapic import EOI, LVT_TIMER, MASKED, TIMER_INITIAL
from vmkit.hw.x86 import EFLAGS_IF, EFLAGS_IOPL
from vmkit.cos import layout as cos_layout
from . import layout
from .frame import Frame
from .record import Record

CALL = 4                        # int 0x90, EAX = 4: unload
OK, REFUSED = 0, 1
INT_LENGTH = 2                  # `int 0x90` is CD 90: a retry executes it again
PARK_VECTOR = 0xF2              # the IPI that parks another CPU (its local APIC)
WHY_SIZE = 160
FIRMWARE_GDT_LIMIT = 5 * 8 - 1       # the firmware's five descriptors (hw/board.py)


class UnloadRecord(Record):
    """What the unload's x86 loads into the CPU, at layout.UNLOAD (the x86 names its offsets)."""
    FIELDS = (("gdt_limit", "H", "lgdt's operand: the COS's GDT"),             # 0x00
              ("gdt_base", "I"),
              ("gap0", "2s"),
              ("idt_limit", "H", "lidt's operand: the COS's IDT"),             # 0x08
              ("idt_base", "I"),
              ("gap1", "2s"),
              ("tss_desc", "I", "linear address of the COS's TSS descriptor (made available for ltr)"),
              ("tr", "I", "TR selector"),                                      # 0x14
              ("cs", "I"),                                                     # 0x18
              ("esp", "I", "the COS's ESP for the iretd (the x86 writes it)"), # 0x1C
              ("ds", "I"), ("es", "I"), ("fs", "I"), ("gs", "I"), ("ss", "I"),  # 0x20
              ("park_gdt_limit", "H", "lgdt's operand when a CPU parks: the firmware's GDT"),  # 0x34
              ("park_gdt_base", "I"),
              ("gap2", "2s"),
              ("park_idt_limit", "H", "no IDT (base 0, limit 0)"),            # 0x3C
              ("park_idt_base", "I"),
              ("gap3", "2s"))                                                  # 0x44


_AT = {name: layout.UNLOAD + offset for name, offset in UnloadRecord.OFFSET.items()}
GDTR, IDTR, TSS_DESC, TR, CS, ESP, PARK_GDTR, PARK_IDTR = (_AT[n] for n in (
    "gdt_limit", "idt_limit", "tss_desc", "tr", "cs", "esp", "park_gdt_limit", "park_idt_limit"))
SEGS = {name: _AT[name] for name in ("ds", "es", "fs", "gs", "ss")}
if layout.UNLOAD + UnloadRecord.SIZE > layout.DEVICES:
    raise AssertionError("the unload record runs into the device list (layout.DEVICES)")

_F = Frame.OFFSET["eip"]        # the frame's eip cs eflags esp ss
X86_DISPATCH = f"""\
        cmp eax, {layout.GO_UNLOAD}
        je unload
        cmp eax, {layout.GO_PARK}
        je park"""
X86 = f"""
unload:                         ; the COS's own tables again, then a return to it at CPL 0
        lgdt [{GDTR:#x} + base]
        lidt [{IDTR:#x} + base]
        mov eax, [{TSS_DESC:#x} + base]
        and byte ptr [eax + 5], 0xfd    ; its TSS descriptor available (ltr refuses a busy one)
        ltr word ptr [{TR:#x} + base]   ; the CPU reads it from the COS's GDT and marks it busy
        mov esi, [esp + {_F + 12}]      ; the COS's ESP, from the frame its int 0x90 left
        sub esi, 12                     ; an iretd frame for the same level: EIP, CS, EFLAGS
        mov eax, [esp + {_F}]
        mov [esi], eax
        mov eax, [{CS:#x} + base]
        mov [esi + 4], eax
        mov eax, [esp + {_F + 8}]
        mov [esi + 8], eax
        mov [{ESP:#x} + base], esi
        mov ax, [{SEGS['ds']:#x} + base]
        mov ds, ax
        mov ax, [{SEGS['es']:#x} + base]
        mov es, ax
        mov ax, [{SEGS['fs']:#x} + base]
        mov fs, ax
        mov ax, [{SEGS['gs']:#x} + base]
        mov gs, ax
        mov ax, [{SEGS['ss']:#x} + base]
        mov ss, ax
        popad                           ; the COS's registers, from the frame
        mov esp, [{ESP:#x} + base]
        iretd                           ; CPL 0 to CPL 0: EIP, CS (the COS's 0x08), EFLAGS
park:                           ; another CPU leaves the kernel: as the firmware left it
        mov eax, cr0
        and eax, 0x7fffffff             ; paging off (the kernel is identity-mapped)
        mov cr0, eax
        xor eax, eax
        mov cr3, eax
        lgdt [{PARK_GDTR:#x} + base]
        lidt [{PARK_IDTR:#x} + base]
parked: cli
        hlt
        jmp parked
"""


class Refused(Exception):
    """The unload cannot go ahead: the reason goes to the COS."""


class Wait(Exception):
    """Something must finish first: the COS's int 0x90 runs again."""


STEPS = ("park", "unpatch", "tables", "devices", "free")
ORDER = STEPS                   # claim 25 C's order: the kernel halted (CPU 1 parked), interrupt and
                                # fault handling back (unpatch, tables), the devices, the kernel removed
KERNEL_SIDE, COS_SIDE = "the kernel, the COS displaced", "the COS at CPL 0"


def check_order(order):
    """The reinstatement steps as a tuple, or ValueError naming what is wrong
    with them (exercise 11 plugs its order in at kernel.unload_order). Steps
    may be missing: a missing step is a state the COS does not get back."""
    if isinstance(order, str) or not isinstance(order, (list, tuple)):
        raise ValueError(f"the unload order is a list of step names from {', '.join(STEPS)}, "
                         f"not {order!r:.60}")
    for name in order:
        if name not in STEPS:
            raise ValueError(f"no unload step called {name!r:.40}: the steps are {', '.join(STEPS)}")
    twice = sorted({n for n in order if order.count(n) > 1})
    if twice:
        raise ValueError(f"step(s) {', '.join(twice)} listed twice: each state is reinstated once")
    return tuple(order)


def request(kernel, frame, cpu):
    """int 0x90, EAX = 4, from the COS (CPL 1) on CPU 0: the steps of
    kernel.unload_order before "tables" run here, in the kernel; "tables"
    returns to the COS at CPL 0, and give_back runs the steps after it."""
    trace = kernel.trace
    if kernel.unloading is None:
        trace.emit("unload.called", cpu.index, eip=frame.eip, cpl=frame.cs & 3)
        kernel.unloading = "waiting"
    try:
        _check(kernel, cpu)
        try:
            order = check_order(kernel.unload_order)
        except ValueError as e:
            raise Refused(str(e)) from None
        _finish_in_flight(kernel, frame)
        while kernel.unload_next < len(order) and order[kernel.unload_next] != "tables":
            _step(kernel, order[kernel.unload_next], frame, cpu, KERNEL_SIDE)
            kernel.unload_next += 1
    except Refused as e:
        kernel.unloading = None
        trace.emit("unload.refused", cpu.index, why=str(e))
        text = str(e).encode("ascii", "replace")[:WHY_SIZE - 2] + b"\n\0"
        if cos_layout.COS_CODE <= frame.ebx and not kernel.contains(frame.ebx):
            kernel.memory.write(frame.ebx, text, code=False)
        frame.eax = REFUSED
        return
    except Wait as e:
        trace.emit("unload.wait", cpu.index, why=str(e))
        if frame.vector == layout.GO_BACK:           # nothing injected: the kernel idles (sti; hlt)
            kernel.go_away(frame, "idle")            # until the next interrupt, then the COS retries
        return
    kernel.unloading = "done"
    if kernel.unload_next < len(order):              # "tables": the x86 returns to the COS at CPL 0
        kernel.unload_next += 1
        _tables(kernel, frame, cpu)
    else:                                            # no "tables": the COS goes on, displaced
        frame.eax = OK


def _step(kernel, name, frame, cpu, side):
    """One reinstatement step, from the kernel (before "tables") or at CPL 0 (after)."""
    if name == "park":
        if side == COS_SIDE:                         # only the kernel's dispatcher parks a CPU
            kernel.trace.emit("unload.skipped", cpu.index, step=name, why=(
                "CPU 1 is parked by the kernel, before the COS leaves it: the kernel is gone"))
            return
        _park_others(kernel, frame)
    elif name == "unpatch":
        kernel.trace.emit("unload.unpatch", cpu.index, restored=kernel.patches.restore())
    elif name == "devices":
        _devices_back(kernel)
    elif name == "free" and side == KERNEL_SIDE:  # it would clear the code it runs and its own IDT
        kernel.trace.emit("unload.skipped", cpu.index, step=name, why=(
            "the kernel's block is freed only after the COS has left it (after \"tables\")"))
    elif name == "free":
        _free(kernel, cpu, *kernel.ram)


def _check(kernel, cpu):
    if cpu.index != 0:
        raise Refused("the unload is asked on CPU 0, where the COS runs")
    v = kernel.vcpu
    for name, table in (("IDT", v.idt_base), ("GDT", v.gdt_base)):
        if kernel.contains(table):
            raise Refused(f"the COS's {name} ({table:#x}) is in the kernel's memory: it would be "
                          f"cleared (an sidt/sgdt at CPL 1 does not trap and gives the kernel's)")
    running = [w.name for w in kernel.worlds.all if w.kind == "vm" and w.state != "crashed"]
    if running:
        raise Refused(f"{len(running)} VM(s) still run ({', '.join(running)}): stop them first")


def _retry(frame):
    frame.eip -= INT_LENGTH


def _finish_in_flight(kernel, frame):
    for name, front in kernel.shared.items():
        if getattr(front, "in_flight", None) is not None or getattr(front, "queue", None):
            _retry(frame)
            raise Wait(f"{name}: a request in flight at the real controller")
    if kernel.cos_wants_interrupt():
        _retry(frame)                               # its handler returns to the int 0x90
        kernel.deliver_pending(frame)
        raise Wait("an interrupt the COS may take now: injected first")


def _park_others(kernel, frame):
    for p in kernel.worlds.cpus[1:]:
        cpu = kernel.board.cpus[p.index]
        if parked(kernel, cpu):
            continue
        if kernel.unloading != "parking":
            kernel.unloading = "parking"
            kernel.trace.emit("unload.park", p.index, ipi=PARK_VECTOR)
            kernel.board.cpus[0].lapic.send_ipi(p.index, PARK_VECTOR)
        _retry(frame)
        raise Wait(f"CPU {p.index} not parked yet")


PARKED = bytes.fromhex("faf4ebfc")      # parked: cli; hlt; jmp parked -- found in the image by its bytes


def parked(kernel, cpu):
    """Halted at `park`'s hlt, IF clear: only an INIT or NMI would wake it."""
    at = kernel.base + kernel.image.data.find(PARKED) + 1
    return cpu.halted and not cpu.interrupts_enabled and cpu["eip"] in (at, at + 1)


def park(kernel, frame, cpu):
    """The park IPI entered the kernel on another CPU: stop its timer, then x86 `park`."""
    lapic = cpu.lapic
    lapic.write(EOI, 0)
    lapic.write(LVT_TIMER, MASKED | (lapic.read(LVT_TIMER) & 0xFF))
    lapic.write(TIMER_INITIAL, 0)
    memory, at = kernel.memory, kernel.base + layout.UNLOAD
    record = UnloadRecord.unpack(memory.read(at, UnloadRecord.SIZE))
    memory.write(at, record.replace(park_gdt_limit=FIRMWARE_GDT_LIMIT, park_gdt_base=FIRMWARE_GDT,
                                    park_idt_limit=0, park_idt_base=0).pack(), code=False)
    frame.vector = layout.GO_PARK
    kernel.trace.emit("unload.parking", cpu.index, timer="stopped", gdtr=FIRMWARE_GDT, cr3=0)


def _devices_back(kernel):
    """The PIC, the SCSI controller and the NIC, as the COS's own drivers expect them."""
    v, board = kernel.vcpu, kernel.board
    ports = board.ports
    imr = v.imr
    ports.write(0x21, 1, imr & 0xFF)                # OCW1: the COS's masks, on the real 8259A
    ports.write(0xA1, 1, imr >> 8)
    pending = v.pending
    for chip in board.pic.chips:                    # still pending for the COS: latched, not lost
        chip.irr |= (pending >> chip.first_line) & 0xFF
    v.pending = 0
    scsi = nic = None
    for name, front in kernel.shared.items():
        if hasattr(front, "cos_control"):
            ports.write(front.device.base + 0xC, 4, front.cos_control)
            scsi = f"{name} idle, interrupts {'on' if front.cos_control else 'off'}"
        elif hasattr(front, "kernel_rx"):
            nic = _nic_back(front)
    vectors = (board.pic.master.vector_base, board.pic.slave.vector_base)
    kernel.trace.emit("unload.devices", 0, imr=f"{imr:#06x}", pending_left=f"{pending:#06x}",
                      vectors=f"{vectors[0]:#x}/{vectors[1]:#x}", scsi=scsi, nic=nic)


def _nic_back(front):
    """The real NIC stops using the kernel's rings (reset), then gets the registers
    the COS programmed into its virtual NIC: its rings in its own memory. Frames
    the kernel had not taken (for the kernel's MAC) go with the kernel: counted."""
    from vmkit.hw.nic import CTRL, CTRL_RESET, IMR, TX_BASE, TX_COUNT, RX_BASE, RX_COUNT, RX_TAIL
    regs = front.regs
    front._out(CTRL, CTRL_RESET)
    for reg in (TX_BASE, TX_COUNT, RX_BASE, RX_COUNT, RX_TAIL, IMR):
        if regs.get(reg):
            front._out(reg, regs[reg])
    if regs.get(CTRL):
        front._out(CTRL, regs[CTRL])
    return (f"{front.device.name}: reset, COS's rings {regs.get(RX_BASE, 0):#x}/{regs.get(TX_BASE, 0):#x}, "
            f"{len(front.kernel_rx)} frame(s) queued for the kernel counted")


def _tables(kernel, frame, cpu):
    """The record the x86 reads, the frame it returns from, and GO_UNLOAD."""
    v, cos = kernel.vcpu, kernel.cos_state
    tr = cos["tr"][0]
    record = UnloadRecord(gdt_limit=v.gdt_limit, gdt_base=v.gdt_base, idt_limit=v.idt_limit,
                          idt_base=v.idt_base, tss_desc=v.gdt_base + (tr & ~7), tr=tr, cs=cos["cs"],
                          park_gdt_limit=FIRMWARE_GDT_LIMIT, park_gdt_base=FIRMWARE_GDT,
                          **{s: cos[s] for s in SEGS})
    kernel.memory.write(kernel.base + layout.UNLOAD, record.pack(), code=False)
    flags = frame.eflags & ~(EFLAGS_IF | EFLAGS_IOPL)
    frame.eflags = flags | (EFLAGS_IF if v.vif else 0) | (cos["eflags"] & EFLAGS_IOPL)
    frame.eax = OK
    frame.vector = layout.GO_UNLOAD
    kernel.trace.emit("unload.tables", cpu.index, gdtr=f"{v.gdt_base:#x}/{v.gdt_limit:#x}",
                      idtr=f"{v.idt_base:#x}/{v.idt_limit:#x}", tr=f"{tr:#x}",
                      cs=f"{frame.cs:#x}->{cos['cs']:#x}", eip=frame.eip, vif=v.vif)


def give_back(kernel, cpu):
    """After the x86 `unload` returned to the COS (the module's exit calls the
    loading module at CPL 0): read the CPU back, stop entering the kernel's
    dispatcher, clear the kernel's block and the VMs' memory, and give both back
    to the COS's allocator.

    The COS's allocator is a bump pointer (cos/library.py) with no free: the
    block goes back by moving NEXT_FREE_PAGE down to it when nothing was
    allocated after it (the usual case: the pointer is exactly the block's
    end), and RAM_TOP (lowered to the kernel's base at the load: the kernel, the
    VMs' memory and the pages the kernel took for itself all lie above it, placed
    from the top of RAM down by Worlds.vm_top) is raised to what it was before
    the load. Both are then as before the load, which for a bump
    allocator is what freeing means. A block the COS allocated past stays
    cleared but not reusable, and the event says so."""
    trace = kernel.trace
    gdtr, idtr, tr = cpu["gdtr"], cpu["idtr"], cpu["tr"]
    trace.emit("unload.resumed", cpu.index, cpl=cpu.cpl, cs=f"{cpu['cs']:#x}", eip=cpu["eip"],
               gdtr=f"{gdtr[1]:#x}/{gdtr[2]:#x}", idtr=f"{idtr[1]:#x}/{idtr[2]:#x}",
               tr=f"{tr[0]:#x}@{tr[1]:#x}", IF=int(cpu.interrupts_enabled))
    for c, hook, vmm in zip(kernel.board.cpus, kernel.hooks, kernel.vmm_hooks or [None] * len(kernel.hooks)):
        c.remove(hook)
        if vmm is not None:
            c.remove(vmm)                         # the VMMs' entry too
        c.descriptors_changed()                   # the COS's own GDT: the platform's limit checks follow
    order = check_order(kernel.unload_order)
    for name in order[kernel.unload_next:]:
        _step(kernel, name, None, cpu, COS_SIDE)


def _free(kernel, cpu, ram_top, block, block_end):
    """The kernel's block and the VMs' memory cleared and given back (give_back says how)."""
    memory, trace = kernel.memory, kernel.trace
    top = memory.read_u32(cos_layout.RAM_TOP)
    memory.write(block, bytes(block_end - block))            # code too: translated code dropped
    rest = max(top, block_end)                               # the VMs' memory and the kernel's pages
    if rest < ram_top:
        memory.write(rest, bytes(ram_top - rest))
    if top < ram_top:
        memory.write_u32(cos_layout.RAM_TOP, ram_top)
    free = memory.read_u32(cos_layout.NEXT_FREE_PAGE)
    freed = free == block_end
    if freed:
        memory.write_u32(cos_layout.NEXT_FREE_PAGE, block)
    trace.emit("unload.freed", cpu.index, block=f"{block:#x}-{block_end:#x}", cleared=block_end - block,
               vm_memory=max(0, ram_top - rest), ram_top=f"{top:#x}->{ram_top:#x}",
               next_free_page=f"{free:#x}->{memory.read_u32(cos_layout.NEXT_FREE_PAGE):#x}",
               reusable=freed)
