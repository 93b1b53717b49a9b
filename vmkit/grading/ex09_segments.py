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
from vmkit.hw.board import MachineStopped
from vmkit.hw.x86 import CODE_RX, DATA_RW, decode_segment, encode_segment
from vmkit.kernel import layout
from vmkit.lessons import takeover
from vmkit.lessons.address_spaces import SegmentLayout, address_space, segment_layout, vmm_to_kernel
from vmkit.lessons.probes import crash_fault

GUEST_MEMORY = 0x200000         # 2 MiB: a byte-granular limit cannot reach its end
POINTERS = 0x1000               # the guest's two addresses to read, written by the grader
RUN = 3_000_000
VMM_RUN = 200_000               # the right VMM segments reach the kernel in ~20,000 and print in ~40,000:
                                # a wrong base sends CPL 0 into misaligned code that can run to any bound,
                                # at ~5 µs an instruction (3,000,000 of them took 15 s)
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
    if isinstance(got, (tuple, list)) and len(got) == 3 and any(isinstance(x, float) for x in got):
        raise Refused(f"{what} returned {tuple(got)!r:.60}: a descriptor's fields are integers "
                      "(// or >> divides without a fraction, / does not)")
    if not (isinstance(got, (tuple, list)) and len(got) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) for x in got[:2])
            and isinstance(got[2], int)):
        raise Refused(f"{what} returned {got!r:.60}: return (base, limit, g), three integers")
    base, limit, g = got[0], got[1], int(got[2])         # (g: True is 1)
    if g not in (0, 1):
        raise Refused(f"{what}: g is the granularity bit, 0 or 1, not {g}")
    if not 0 <= base <= 0xFFFFFFFF:
        raise Refused(f"{what}: base {base:#x} is not a 32-bit linear address")
    if not 0 <= limit <= 0xFFFFF:
        pages = (" (with G=1 the limit counts 4 KiB pages, not bytes)" if g else
                 " (G=1 makes it count 4 KiB pages)") if limit > 0xFFFFF else ""
        raise Refused(f"{what}: the limit field is 20 bits (0..0xfffff); {limit:#x} does not fit{pages}")
    return base, limit, g


def descriptor(base, limit, g, type, dpl):
    """8 bytes with exactly these fields (hw/x86.py's encoder takes the limit in bytes)."""
    return encode_segment(base, (limit << 12 | 0xFFF) if g else limit, type, dpl, g=g)


def _last_offset(base, limit, g):
    return decode_segment(descriptor(base, limit, g, DATA_RW, 3)).limit


def _yours(base, limit, g):
    """The learner's segment as the CPU reads it, for the start of every hint: (its last
    offset, the sentence)."""
    last = _last_offset(base, limit, g)
    return last, f"your segment: base {base:#x}, limit {limit:#x}, G={g}: its last offset is {last:#x}"


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


def space_end(space):
    return space.guest_end


def _machine(function, name, selectors, dpl, second):
    """A displaced COS and one VM whose GDT holds the learner's fields at `selectors`
    (code, data) with `dpl`; its guest reads the byte at its last offset, then at
    second(space). (board, kernel, world, space, fields); the board is closed on a refusal."""
    board, cos, loader = takeover.takeover()
    try:
        kernel = loader.kernel
        world = kernel.install_vm(guest_source, GUEST_MEMORY, "vm1")
        space = segment_layout(address_space(kernel, world))
        got = fields(function, space, name)
        gdt = address_space(kernel, world).gdtr[0]
        code, data = selectors
        kernel.memory.write(gdt + code, descriptor(*got, CODE_RX, dpl), code=False)
        kernel.memory.write(gdt + data, descriptor(*got, DATA_RW, dpl), code=False)
        for cpu in board.cpus:
            cpu.descriptors_changed()           # as the kernel does when it edits a GDT
        kernel.memory.write(world.region[0] + POINTERS, (space.guest_end - 1).to_bytes(4, "little")
                            + second(space).to_bytes(4, "little"))
    except BaseException:
        board.close()
        raise
    return board, kernel, world, space, got


def run_guest(guest_segment):
    """The machine with the learner's guest segments: a Run."""
    board, kernel, world, space, got = _machine(guest_segment, "guest_segment",
                                                (layout.USER_CODE_SEL, layout.USER_DATA_SEL), 3,
                                                second=space_end)
    try:
        held = []
        board.cpu.on_execute(AFTER_FIRST_READ, lambda cpu: cpu.cpl == 3 and held.append(cpu.segment("ds")))
        mark = board.trace.mark()
        try:
            board.run_until(lambda: world.state != "ready" or len(world.vmm.console) >= 2, RUN,
                            "the guest's two reads")
        except (TimeoutError, MachineStopped):
            pass                                # said below, from what the machine shows
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
    last, yours = _yours(base, limit, g)
    read = reads(end).get(fault["eip"]) if fault is not None else None
    if base:
        what = f"the CPU took {_said(fault)}: {crash}" if fault else f"the guest printed {console!r}"
        order = (f" (your base is a limit's value, your limit {limit:#x}: the order is (base, limit, g))"
                 if base in ((end - 1) >> 12, end - 1) and limit != base else "")
        return (f"{yours}. The CPU adds the base to every guest address, so the guest's code and "
                f"data were looked for {base:#x} bytes away from where they are: {what}. "
                f"A guest's addresses start at 0: base 0{order}")
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
            if last >= r.space.vmm_base:
                why = (f"it reaches over the VMM region ({r.space.vmm_base:#x}..) and the kernel: the "
                       "VMM's segment may, the guest's stops at its own memory's end (claim 22: truncated)")
            elif last == end + 0xFFF or last == end:
                why = "the limit field names the last offset (in pages with G=1), not the size"
            else:
                why = f"yours ends {last - (end - 1):#x} bytes further"
            return (f"{yours}. The guest's read of the first byte past its memory ({end:#x}) got past "
                    f"the limit: the page tables stopped it ({_said(fault)}: {crash}). The segment must "
                    f"end at the guest's last byte, {end - 1:#x}: {why}")
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
    if fault is not None and fault["vector"] == 13 and "of CS" in str(fault["why"]) and fault["eip"] < end:
        return (f"{yours}. The guest faulted inside its own memory: #GP by the limit of its code segment "
                f"at the instruction at guest address {fault['eip']:#x} (the CPU checks every instruction "
                f"it fetches against CS's limit; its memory ends at {end - 1:#x}). {why}")
    if fault is not None and fault["vector"] in (12, 13) and "limit" in str(fault["why"]) and read \
            and read[0] + read[1] - 1 < end:
        at, size, what = read
        return (f"{yours}. The guest faulted inside its own memory: {_said(fault)} by the limit at its "
                f"{size}-byte read of {what}, guest address {at:#x} (its memory ends at {end - 1:#x}). {why}")
    return None


# ---- the VMM ----------------------------------------------------------------------------
class VmmRun(NamedTuple):
    space: SegmentLayout
    fields: tuple
    seen: list          # [Seen] at vmm_entry and in the kernel (lessons.address_spaces.vmm_to_kernel)
    console: str
    stopped: str        # why the machine stopped, or ""
    faults: list        # the cpu.fault events after the guest started


def run_vmm(vmm_segment):
    """A VM whose VMM segments (VMM_CODE_SEL, VMM_DATA_SEL in its GDT) are the learner's;
    its guest prints through a trapped `out`, so the VMM is entered and calls the kernel."""
    board, kernel, world, space, got = _machine(vmm_segment, "vmm_segment",
                                                (layout.VMM_CODE_SEL, layout.VMM_DATA_SEL), 0,
                                                second=lambda space: space.guest_end - 1)
    try:
        mark = board.trace.mark()
        stopped, seen = "", []
        try:
            seen = vmm_to_kernel(board, kernel, world, VMM_RUN)
            board.run_until(lambda: len(world.vmm.console) >= 2 or world.state == "crashed", VMM_RUN,
                            "the guest's two lines")
        except (TimeoutError, MachineStopped) as e:
            stopped = board.stopped() or str(e)
        return VmmRun(space, got, seen, bytes(world.vmm.console).decode("latin-1"), stopped,
                      board.trace.since(mark, "cpu.fault"))
    finally:
        board.close()


def check_vmm(module):
    try:
        r = run_vmm(module.vmm_segment)
    except Refused as e:
        return str(e)
    base, limit, g = r.fields
    last, yours = _yours(base, limit, g)
    s = r.space
    if len(r.seen) < 2:
        firsts = "; ".join(f"{_said(f)} at EIP {f['eip']:#x} ({f['why']})" for f in r.faults[:2])
        where = ("the VMM's entry was never reached" if not r.seen else
                 "the VMM was entered but its jmp never reached the kernel")
        return (f"{yours}. The guest trapped and {where}: the CPU took {firsts or 'no fault'}"
                + (f", and stopped: {r.stopped}" if r.stopped else "")
                + (f". The gates' offsets (the VMM's code at {s.vmm_base:#x}..) are offsets in this "
                   f"segment: with base {base:#x} the CPU looked for the VMM's code {base:#x} bytes "
                   "away. The VMM's segment starts at 0" if base else
                   f". The gates point at the VMM's code at {s.vmm_base:#x}.., which must lie inside "
                   "the VMM's code segment" if last < s.vmm_end - 1 else ""))
    entry, kernel = r.seen
    if entry.cs[:3] != kernel.cs[:3] or entry.ds[:3] != kernel.ds[:3]:
        return f"{yours}. CS or DS changed between the VMM's entry and the kernel: {entry} / {kernel}"
    fetch = next((f for f in r.faults if f["vector"] == 13 and "of CS" in f["why"]), None)
    if fetch is not None:
        return (f"{yours}. The VMM's near jmp into the kernel's code ended in #GP at EIP "
                f"{fetch['eip']:#x}: {fetch['why']} (the CPU checks every instruction it fetches "
                f"against CS's limit); the machine stopped: {r.stopped or 'no'}. The kernel (to "
                f"{s.kernel_end - 1:#x}) lies past your segment. Claim 22: the VMM's segment is longer "
                "than the VMM needs, to the kernel's end, so no segment register is loaded on the way")
    if kernel.cs[2] < s.kernel_end - 1 or kernel.ds[2] < s.kernel_end - 1:
        return (f"{yours}. The VMM reached the kernel's code at EIP {kernel.eip:#x} with CS limit "
                f"{kernel.cs[2]:#x} and DS limit {kernel.ds[2]:#x} (their hidden parts, read from the CPU "
                f"there): the kernel's bytes {min(kernel.cs[2], kernel.ds[2]) + 1:#x}..{s.kernel_end - 1:#x} "
                "lie past them, so a real CPU raises #GP on the first access there (this machine checks a CPL 0 access under paging only where "
                "it page-faults: hw/limits.py). Claim 22: the VMM's segment is longer than the VMM "
                "needs, to the kernel's end")
    if not r.console.startswith("ab"):
        return (f"{yours}. The VMM reached the kernel with the same CS and DS, but the guest's console "
                f"reads {r.console!r}: {r.stopped or 'its trapped out was not emulated'}")
    return None


CHECKS = [("the guest's segments stop at its memory's end", 3, check_guest),
          ("the VMM reaches the kernel with the same CS and DS", 2, check_vmm)]
FUNCTION = None                 # two functions: the grader takes the module
