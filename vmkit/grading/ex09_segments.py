"""Grades exercise 09: the learner's segment fields become descriptors in a
VM's GDT (the one its world's GDTR names), and the machine runs with them.

The guest: a VM of 2 MiB (past 1 MiB, so the granularity bit matters) whose
guest reads its own last byte, prints "a", reads the first byte past its
memory, prints "b". With the right segments the first read goes through and
the second is a #GP by the data segment's limit (the platform checks limits
at CPL 3, hw/limits.py), so the VM stops there with "a" on its console. A
limit too long lets the second read reach the page tables: #PF, not present;
too short, the guest faults inside its own memory. What the CPU did is read
from the trace (the fault it took, its error code, the address) and the VM's
console; the descriptors' last offsets are decoded from the GDT's bytes, as
the CPU reads them at the world switch."""
from typing import NamedTuple

from vmkit.hw.asm import assemble, disassemble
from vmkit.hw.x86 import CODE_RX, DATA_RW, decode_segment, encode_segment
from vmkit.kernel import layout
from vmkit.lessons import takeover
from vmkit.lessons.address_spaces import SegmentLayout, address_space, crash_fault, segment_layout

GUEST_MEMORY = 0x200000         # 2 MiB: a byte-granular limit cannot reach its end
POINTERS = 0x1000               # the guest's two addresses to read, written by the grader
RUN = 3_000_000
AFTER_FIRST_READ = 0xB          # the guest's `mov al, 0x61`: its last byte read (reads() below)


def guest_source(base):
    """Linked at `base`: read [last byte], print "a", read [first byte past], print "b"."""
    return f"""
        mov dx, 0x3f8
        mov eax, dword ptr [{base + POINTERS:#x}]
        mov cl, byte ptr [eax]
        mov al, 0x61
        out dx, al
        mov eax, dword ptr [{base + POINTERS + 4:#x}]
        mov cl, byte ptr [eax]
        mov al, 0x62
        out dx, al
h:      hlt
        jmp h
"""


class Refused(ValueError):
    """The learner's answer cannot be a descriptor at all."""


def fields(function, space, what):
    """The learner's (base, limit, g), checked to be descriptor fields."""
    got = function(space)
    if not (isinstance(got, (tuple, list)) and len(got) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in got)):
        raise Refused(f"{what} returned {got!r:.60}: return (base, limit, g), three integers")
    base, limit, g = got
    if g not in (0, 1):
        raise Refused(f"{what}: g is the granularity bit, 0 or 1, not {g}")
    if not 0 <= base <= 0xFFFFFFFF:
        raise Refused(f"{what}: base {base:#x} is not a 32-bit linear address")
    if not 0 <= limit <= 0xFFFFF:
        pages = " (with G=1 the limit counts 4 KiB pages, not bytes)" if g and limit > 0xFFFFF else ""
        raise Refused(f"{what}: the limit field is 20 bits (0..0xfffff); {limit:#x} does not fit{pages}")
    return base, limit, g


def descriptor(base, limit, g, type, dpl):
    """8 bytes with exactly these fields (hw/x86.py's encoder takes the limit in bytes)."""
    return encode_segment(base, (limit << 12 | 0xFFF) if g else limit, type, dpl, g=g)


def _last_offset(base, limit, g):
    return decode_segment(descriptor(base, limit, g, DATA_RW, 3)).limit


def reads(end):
    """{EIP of each read the guest makes: (the guest address it reads, its size, what)}: the
    guest's own addresses, from its code (the platform's report of a limit fault names the
    address its memory hook saw, which under paging need not be the guest's)."""
    code = disassemble(assemble(guest_source(0), 0))
    pointers = iter([(POINTERS, 4, "its first pointer"), (POINTERS + 4, 4, "its second pointer")])
    bytes_ = iter([(end - 1, 1, "its last byte"), (end, 1, "the first byte past its memory")])
    return {eip: next(bytes_ if "[eax]" in text else pointers)
            for eip, text in code if "ptr [" in text}


class Run(NamedTuple):
    space: SegmentLayout
    fields: tuple       # the learner's (base, limit, g)
    console: str        # what the guest printed
    fault: object       # the cpu.fault that stopped the VM, or None
    crash: str          # the VMM's word on it
    ds: tuple           # DS as the CPU held it while the guest ran (CPU.segment), or None


def run_guest(guest_segment):
    """The machine with the learner's guest segments: a Run."""
    board, cos, loader = takeover.takeover()
    try:
        kernel = loader.kernel
        world = kernel.install_vm(guest_source, GUEST_MEMORY, "vm1")
        space = segment_layout(address_space(kernel, world))
        got = fields(guest_segment, space, "guest_segment")
        gdt = address_space(kernel, world).gdtr[0]
        kernel.memory.write(gdt + layout.USER_CODE_SEL, descriptor(*got, CODE_RX, 3), code=False)
        kernel.memory.write(gdt + layout.USER_DATA_SEL, descriptor(*got, DATA_RW, 3), code=False)
        for cpu in board.cpus:
            cpu.descriptors_changed()           # as the kernel does when it edits a GDT
        kernel.memory.write(world.region[0] + POINTERS, (space.guest_end - 1).to_bytes(4, "little")
                            + space.guest_end.to_bytes(4, "little"))
        held = []
        board.cpu.on_execute(AFTER_FIRST_READ, lambda cpu: cpu.cpl == 3 and held.append(cpu.segment("ds")))
        mark = board.trace.mark()
        board.run_until(lambda: world.state != "ready" or len(world.vmm.console) >= 2, RUN,
                        "the guest's two reads")
        fault = crash_fault(board.trace, mark, "vm1") if world.state == "crashed" else None
        return Run(space, got, bytes(world.vmm.console).decode("latin-1"), fault, world.fault,
                   held[0] if held else None)
    finally:
        board.close()


def _said(fault):
    from vmkit.hw.x86 import EXCEPTION_NAMES
    name = EXCEPTION_NAMES.get(fault["vector"], f"vector {fault['vector']:#x}")
    return f"{name}, error {fault['error']}"


def check_guest(module):
    try:
        r = run_guest(module.guest_segment)
    except Refused as e:
        return str(e)
    base, limit, g = r.fields
    end, fault, crash, console = r.space.guest_end, r.fault, r.crash, r.console
    last = _last_offset(base, limit, g)
    yours = f"your segment: base {base:#x}, limit {limit:#x}, G={g}: its last offset is {last:#x}"
    read = reads(end).get(fault["eip"]) if fault is not None else None
    if base:
        what = f"the CPU took {_said(fault)}: {crash}" if fault else f"the guest printed {console!r}"
        return (f"{yours}. The CPU adds the base to every guest address, so the guest's code and "
                f"data were looked for {base:#x} bytes away from where they are: {what}. "
                "A guest's addresses start at 0: base 0")
    if console.startswith("ab"):
        return (f"{yours}. The guest read the first byte past its memory ({end:#x}) and went on: "
                "nothing stopped it")
    short = _too_short(r, yours, read)
    if short:
        return short
    if console.startswith("a"):
        if fault is not None and fault["vector"] == 13 and read and read[0] == end:
            return None
        if fault is not None and fault["vector"] == 14:
            return (f"{yours}. The guest's read of the first byte past its memory ({end:#x}) got past "
                    f"the limit: the page tables stopped it ({_said(fault)}: {crash}). The segment must "
                    f"end at the guest's last byte, {end - 1:#x}: the limit field names the last "
                    "offset (in pages with G=1), not the size")
        return f"{yours}. After its last byte the guest's next read did: {fault and _said(fault)} {crash}"
    if fault is not None:
        return f"{yours}. The guest never read its last byte: the CPU took {_said(fault)}: {crash}"
    return f"{yours}. The guest never read its last byte in {RUN:,} instructions (its console: {console!r})"


def _too_short(r, yours, read):
    """The hint for a segment that ends inside the guest's memory, from DS as the CPU held it
    while the guest ran, or from the limit fault its read took; None if it is not that."""
    end, fault = r.space.guest_end, r.fault
    g = r.fields[2]
    why = ("With G=0 the limit counts bytes and 20 bits reach 1 MiB: a 2 MiB guest needs G=1" if not g
           else "The limit field is the last offset in pages: (size - 1) >> 12")
    if r.ds is not None and r.ds[2] < end - 1:
        sel, ds_base, ds_limit, _ = r.ds
        went = (" Here the read of its last byte went through: under paging this platform checks a "
                "limit only on an access that would also page-fault (hw/limits.py), so a segment "
                "too short shows in the CPU's DS, not as a fault." if r.console.startswith("a") else "")
        return (f"{yours}. While the guest ran the CPU held DS {sel:#x} with base {ds_base:#x} and limit "
                f"{ds_limit:#x} (its hidden part, read from the CPU): the guest's bytes {ds_limit + 1:#x}.."
                f"{end - 1:#x} are past it, inside its own memory: a real CPU raises #GP at guest address "
                f"{ds_limit + 1:#x}.{went} {why}")
    if fault is not None and fault["vector"] in (12, 13) and "limit" in str(fault["why"]) and read \
            and read[0] + read[1] - 1 < end:
        at, size, what = read
        return (f"{yours}. The guest faulted inside its own memory: {_said(fault)} by the limit at its "
                f"{size}-byte read of {what}, guest address {at:#x} (its memory ends at {end - 1:#x}). {why}")
    return None


CHECKS = [("the guest's segments stop at its memory's end", 3, check_guest)]
FUNCTION = None                 # two functions: the grader takes the module
