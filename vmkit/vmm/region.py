"""A VM's VMM region (claims 21-22): the monitor's tables, code and data as real bytes.

Each VM has VMM_SIZE bytes of host pages, taken with its memory from the top of
RAM (Worlds.vm_base), mapped supervisor-only twice into its address space
(kernel/paging.py): at VMM_BASE = kernel base - VMM_SIZE, just below the kernel,
where the VMM's code runs and its gates point (so the entry below is one linear
address in every VM), and at their host address, as all kernel memory is.
Offsets from the region's start (kernel/layout.py):

  VMM_GDT   the VM's GDT: the kernel GDT's entries (same selectors: the kernel's
            CS, DS and TSS selectors work unchanged while it is loaded), except
              USER_CODE_SEL/USER_DATA_SEL  DPL 3, ending at the guest's last byte
                                           (`guest_segment`): truncated below the VMM
              VMM_CODE_SEL/VMM_DATA_SEL    DPL 0, base 0, limit the end of the kernel's
                                           block: longer than the VMM needs, so the VMM
                                           reaches the kernel's code and data with the
                                           same CS and DS (claim 22)
  VMM_IDT   256 gates: selector VMM_CODE_SEL, offset VMM_BASE + the vector's stub,
            type and DPL as the kernel IDT's gate (an `int n` the kernel refuses
            the guest is still a #GP)
  VMM_VCPU  the virtual CPU (vmm.py): virtual IF and IDTR, its virtual PIC's
            pending and in-service bitmaps (cos_vcpu.py's layout, as the COS's)
  VMM_PATCHES  the guest's iretd the VMM patched to int3: patches.py's table (as
            the COS's), guest addresses; the VMM reads it on every trap
  VMM_ENTRIES  how often the VMM was entered: its x86 counts, through its DS
  VMM_CODE  x86 assembled at VMM_BASE + VMM_CODE: per vector `[push 0]; push v;
            jmp vmm_common`; vmm_common pushes the frame kernel/frame.py describes,
            loads VMM_DATA_SEL into DS and ES, and reaches `vmm_entry`, where the
            Python VMM runs (`entered`, one breakpoint per CPU). It handles its
            guest's faults and marks the frame's vector slot VMM_DECIDED | where to
            go; then a near jmp: decided -> the kernel's `dispatched` (its x86 past
            the dispatcher's breakpoint goes where the slot says); not decided (an
            IRQ, an IPI, a local timer: not the guest's) -> the kernel's `dispatch`.
            Neither jump loads a segment register.

A VM world's saved GDTR and IDTR name the *identity* (host) address of its GDT
and IDT, not the VMM_BASE one: that address is valid in every address space the
world switch passes through (it loads the tables with paging off, and the COS's
has none: linear = physical), and the platform's delivery (hw/delivery.py) reads
the tables and pushes frames at physical addresses, without a page walk.
"""
import functools
import struct

from vmkit.hw.asm import assemble
from vmkit.hw.pass_by import PassBy
from vmkit.hw.x86 import (CR0_PG, ERROR_CODE_VECTORS, EFLAGS_VM, TSS_AVAILABLE, TSS_BUSY, CODE_RX, DATA_RW,
                          decode_gate, decode_segment, encode_gate, encode_segment)
from vmkit.kernel import layout, smp
from vmkit.kernel.errors import GuestFault
from vmkit.kernel.frame import Frame

STUB_SIZE = 16
EXCEPTIONS = 32                 # vectors the CPU raises itself: from CPL 3, only these are the guest's
_LABELS = ("vmm_common", "vmm_entry")
_MARK = 0x4D4D5621              # "!VMM": where the label table starts


def source(dispatch, dispatched, vmm_base=0):
    """The VMM's x86, for its region at linear `vmm_base`; `dispatch`, `dispatched`:
    the kernel's labels (linear addresses)."""
    stubs = "\n".join(f".align {STUB_SIZE}\nvmm_stub_{v}:\n{'' if v in ERROR_CODE_VECTORS else 'push 0'}\n"
                      f"push {v:#x}\njmp vmm_common" for v in range(256))
    vector = Frame.OFFSET["vector"]
    return f"""{stubs}
.align {STUB_SIZE}
vmm_common:
        push ds                 ; the frame kernel/frame.py describes: the guest's data segments,
        push es
        push fs
        push gs
        pushad                  ; its registers,
        mov ax, {layout.VMM_DATA_SEL:#x}  ; and the VMM's own data segment
        mov ds, ax
        mov es, ax
        inc dword ptr [{vmm_base + layout.VMM_ENTRIES:#x}]   ; its data, at VMM_BASE through DS
vmm_entry:                      ; the Python VMM runs here (region.entered)
        nop
        test dword ptr [esp + {vector}], {layout.VMM_DECIDED:#x}
        jz vmm_to_kernel
        and dword ptr [esp + {vector}], {~layout.VMM_DECIDED & 0xFFFFFFFF:#x}
        jmp {dispatched:#x}     ; decided: the kernel's x86 goes where the vector slot says
vmm_to_kernel:
        jmp {dispatch:#x}       ; not the guest's: the kernel's dispatcher (same CS, same DS)
"""


def _labels():
    code = assemble(source(0x10000, 0x10000, 0x10000) + f"\n.long {_MARK:#x}\n.long {', '.join(_LABELS)}\n", 0)
    at = code.rfind(struct.pack("<I", _MARK)) + 4
    return dict(zip(_LABELS, struct.unpack_from(f"<{len(_LABELS)}I", code, at)))


_AT = _labels()
if _AT["vmm_common"] != 256 * STUB_SIZE:
    raise AssertionError("the VMM's stubs are not 16 bytes apart")
ENTRY = layout.VMM_CODE + _AT["vmm_entry"]      # vmm_entry, from the region's start


def guest_segment(start, size):
    """(base, limit) of a guest's code and data segments, from where its memory starts
    in its linear address space and how big it is: base 0 and the limit at its last
    byte, so an access at or past start + size is past the limit. (A guest linked at
    0 gets limit size - 1; one linked at its host address gets the limit after it.)"""
    return 0, start + size - 1


def vmm_segment(kernel):
    """(base, limit) of the VMM's code and data segments: up to the kernel block's end."""
    return 0, kernel.end - 1


def gdt(kernel, guest_start, size):
    """The VM's GDT bytes: the kernel's (its TSS descriptors available: each is busy
    only in the GDT of the CPU that loaded it), the guest's and the VMM's segments."""
    table = bytearray(kernel.memory.read(kernel.base + layout.GDT, smp.GDT_LIMIT + 1))
    for sel in range(8, len(table), 8):
        d = decode_segment(table[sel:sel + 8])
        if not d.s and d.type == TSS_BUSY:
            table[sel:sel + 8] = encode_segment(d.base, d.limit, TSS_AVAILABLE, d.dpl, s=0, db=0, g=d.g)
    table += bytes(layout.VMM_GDT_LIMIT + 1 - len(table))
    base, limit = guest_segment(guest_start, size)
    vmm_base, vmm_limit = vmm_segment(kernel)
    for sel, seg in ((layout.USER_CODE_SEL, encode_segment(base, limit, CODE_RX, 3, g=1)),
                     (layout.USER_DATA_SEL, encode_segment(base, limit, DATA_RW, 3, g=1)),
                     (layout.VMM_CODE_SEL, encode_segment(vmm_base, vmm_limit, CODE_RX, 0, g=1)),
                     (layout.VMM_DATA_SEL, encode_segment(vmm_base, vmm_limit, DATA_RW, 0, g=1))):
        table[sel:sel + 8] = seg
    return bytes(table)


def idt(kernel):
    """256 gates to the VMM's stubs at VMM_BASE, type and DPL as the kernel IDT's."""
    kernel_idt = kernel.memory.read(kernel.base + layout.IDT, 256 * 8)
    stubs = layout.vmm_base(kernel.base) + layout.VMM_CODE
    gates = []
    for v in range(256):
        g = decode_gate(kernel_idt[8 * v:8 * v + 8])
        gates.append(encode_gate(stubs + v * STUB_SIZE, layout.VMM_CODE_SEL, g.type, g.dpl, g.present))
    return b"".join(gates)


def code(kernel):
    """The VMM's x86, assembled where it runs (VMM_BASE + VMM_CODE)."""
    k = kernel.base
    vmm_base = layout.vmm_base(k)
    return assemble(source(k + kernel.image.dispatch, k + kernel.image.dispatched, vmm_base),
                    vmm_base + layout.VMM_CODE)


def build(kernel, host, guest_start, size):
    """Write a VM's VMM region at host address `host` (VMM_SIZE bytes, page aligned):
    its GDT, IDT and x86; the virtual CPU's bytes are zero until the VMM sets them."""
    memory = kernel.memory
    memory.write(host, bytes(layout.VMM_SIZE), code=False)
    memory.write(host + layout.VMM_GDT, gdt(kernel, guest_start, size), code=False)
    memory.write(host + layout.VMM_IDT, idt(kernel), code=False)
    x86 = code(kernel)
    if layout.VMM_CODE + len(x86) > layout.VMM_SIZE:
        raise AssertionError(f"the VMM's x86 ({len(x86)} bytes) does not fit its region")
    memory.write(host + layout.VMM_CODE, x86)


def tables(host):
    """The save-area items of a VM world's GDTR and IDTR: the identity addresses (see above)."""
    return {"gdtr.base": host + layout.VMM_GDT, "gdtr.limit": layout.VMM_GDT_LIMIT,
            "idtr.base": host + layout.VMM_IDT, "idtr.limit": 256 * 8 - 1}


# ---- the Python VMM, at vmm_entry ------------------------------------------------
def entered(kernel, cpu):
    """CPU `cpu` reached vmm_entry: its frame is on the kernel stack, CS and DS the
    VMM's. A fault of the running VM's guest (a CPU exception from CPL 3) is the VMM's:
    the VM's monitor handles it (Worlds.vm_trap: VMM.trap, a halt or a crash switches
    away), and the frame's vector slot becomes VMM_DECIDED | where the kernel's x86
    goes next. Anything else (an interrupt: a device's IRQ, an IPI, a local timer)
    is left as it is, for the kernel's dispatcher. At the same linear address with
    another CS (the COS's code, paging off, at that physical address) it is not a VMM.
    (For an interrupt the counter does not stop here at all when it can tell in C that
    this would only return: `pass_interrupts` below mirrors these tests; change both.)"""
    if cpu["cs"] != layout.VMM_CODE_SEL:
        return
    frame = Frame(kernel.memory, cpu["esp"])
    vector = frame.vector
    p = kernel.worlds.cpus[cpu.index]
    if not p.switching and p.current.kind == "vm" and kernel.memory.read_u32(
            p.current.vmm_region + layout.VMM_ENTRIES) == 1:
        _first_entry(kernel, cpu, p.current, vector)
    if vector >= EXCEPTIONS or p.switching or p.current.kind != "vm":
        return                                   # (an interrupt: the frame's other words unread)
    v86 = bool(frame.eflags & EFLAGS_VM)         # its CS then is a paragraph: any low bits
    if frame.cs & 3 != 3 and not v86:
        return
    frame.vector = layout.GO_BACK
    if v86:
        kernel.worlds.guard(frame, lambda: _virtual_8086(frame), p)
    else:                                        # (CS is the VMM's: CPL 0; CR0 read for its window)
        kernel.worlds.vm_trap(frame, vector, p, reached=bool(cpu["cr0"] & CR0_PG))
    frame.vector |= layout.VMM_DECIDED


def pass_interrupts(kernel, hooks):
    """Each CPU's counter passes vmm_entry (`hooks`: each CPU's handle from on_execute, its
    address and the handler there that calls `entered`) by, without a stop, whenever `entered` would only return for an interrupt
    (hw/pass_by.py): CS the VMM's, the frame's vector EXCEPTIONS or more, the VMM_ENTRIES
    word not 1 (a first entry is recorded), and, told from here as it changes, the CPU
    running a VM with no switch in flight. A monitor whose `entered` is not this one's
    keeps every stop."""
    if kernel.monitor.entered is not entered:
        return
    for p in kernel.worlds.cpus:
        at, handler = hooks[p.index]
        passer = PassBy(kernel.board.cpus[p.index], at, handler, layout.VMM_CODE_SEL,
                        Frame.OFFSET["vector"], EXCEPTIONS)
        p.on_change = functools.partial(_arm, passer)
        _arm(passer, p)


def _arm(passer, p):
    """Processor `p`'s world or switch changed: what `entered` reads from Python, told to C."""
    world = p.current
    passer.arm(world.vmm_region + layout.VMM_ENTRIES if not p.switching and world.kind == "vm" else None)


def _virtual_8086(frame):
    """The guest is in virtual-8086 mode (hw/delivery.py: Unicorn enters it on an iretd at
    CPL 3 whose popped EFLAGS has VM; Intel would have ignored the bit). Its monitor runs
    protected-mode guests only: the VM stops, rather than the kernel taking its real-mode
    CS for a selector."""
    raise GuestFault(f"virtual-8086 mode at {frame.cs:#x}:{frame.eip:#x} (VM set by an iretd at CPL 3, "
                     f"which a real CPU ignores): this monitor runs protected-mode guests only")


def segments(cpu):
    """{register: (selector, base, limit)} of CS, DS and SS as the CPU holds them now
    (the hidden part read from the CPU, CPU.segment)."""
    return {name: cpu.segment(name)[:3] for name in ("cs", "ds", "ss")}


def _first_entry(kernel, cpu, world, vector):
    """A VM's VMM entered for the first time: the segments it runs on, read from the CPU."""
    seg = segments(cpu)
    kernel.trace.emit("vmm.entered", cpu.index, vm=world.name, vector=vector,
                      **{f"{n}{k}": v for n, (sel, base, limit) in seg.items()
                         for k, v in (("", sel), ("_base", base), ("_limit", limit))})
