"""Grades exercise 06: the learner's x86 load sequence is assembled into the
kernel image at the world switch (image.build(load=...)). Two VMs and the
COS must produce their expected console output over many quanta, and a guest
computing a checksum through hundreds of switches must get the right answer.

So that no item can be skipped unnoticed, vm2 gets its own GDT (a copy of
the kernel's, with an LDT descriptor added), an LDT and its own IDT (a
copy): every claim-15 item then differs between the worlds. What the
machine did is turned into a hint: the registers the kernel read back after
the learner's code (switch.verify), or the fault the CPU took inside it."""
import re

from vmkit.hw.asm import AsmError, assemble, disassemble
from vmkit.hw.x86 import DATA_RW, LDT, PF, TSS_AVAILABLE, TSS_BUSY, decode_segment, encode_segment
from vmkit.kernel import image, layout, save_area, switch_x86
from vmkit.lessons import worlds as lesson
from vmkit.vmm import guests

GDT_COPY, LDT_AT, IDT_COPY = layout.GDT + 0x800, layout.GDT + 0xF00, layout.IDT + 0x800   # free kernel memory
LDT_SEL = layout.VMM_GDT_LIMIT + 1       # the copy's one extra descriptor
LDT_DATA_SEL = 8 | 4 | 3                  # the LDT's data segment (index 1, TI=1, RPL 3); the guests never use FS
HINTS = {
    "gdtr": "GDTR is not the save area's (lgdt [edi + AREA_GDTR]): the CPU kept another GDT",
    "idtr": "IDTR is not the save area's (lidt [edi + AREA_IDTR]): interrupts would go through another IDT",
    "ldtr": "LDTR is not the save area's (lldt word ptr [edi + AREA_LDTR]; after lgdt: the CPU finds the "
            "LDT descriptor in the GDT loaded then)",
    "tr": "TR is not the save area's (ltr word ptr [edi + AREA_TR]; after lgdt: the CPU takes TR's base "
          "from the TSS descriptor in the GDT loaded then, and marks that descriptor busy)",
    "cr3": "CR3 is not the save area's (mov eax, [edi + AREA_CR3]; mov cr3, eax): the world would have "
           "run in another world's address space",
    "IF": "IF was set during the load: the stub's iretd enables exceptions, your code must not (no sti)",
}
SEGMENT_HINT = "{0} is not the save area's (mov eax, [edi + AREA_{1}]; mov {0}, eax): it kept another world's selector"


def _expected(name, n):
    return [f"hello from {name}"] + [f"{name} {chr(97 + i % 26)}" for i in range(n)]


def _hint(why):
    """A refused switch's reason -> what the learner's code likely did."""
    m = re.search(r"differs from its save area in (.*)$", why)
    if m:
        hints = []
        for item in m.group(1).split(", "):
            key = item.split(".")[0].split()[0]
            if key in ("ds", "es", "fs", "gs"):
                hint = SEGMENT_HINT.format(key.upper(), key.upper())
            elif key in HINTS:
                hint = HINTS[key]
            else:
                hint = f"{item} is not the save area's: your code must leave EDI and ESP as they were"
            if hint not in hints:
                hints.append(hint)
        return "; ".join(hints)
    if "IF was set" in why:
        return HINTS["IF"]
    m = re.search(r"it executed `(int[^`]*)` inside the load", why)
    if m:
        return (f"your load executed `{m.group(1)}`: a software interrupt inside the load enters the "
                f"kernel, which refuses the world; the load only loads the CPU from the save area "
                f"(lgdt, lldt, ltr, CR3, the data segments, lidt)")
    m = re.search(r"at `(0x[0-9a-f]+), outside the machine's memory`", why)
    if m:
        return (f"your load left the kernel's code for {m.group(1)}, outside the machine's memory: the "
                f"load runs straight through to its end (no jmp, call or ret of its own)")
    m = re.search(r"the CPU refused it: (.*) at `(.*)`", why)
    if m:
        error = re.search(r"\((0x[0-9a-f]+)\)", m.group(1))
        if error and int(error.group(1), 16) & 4:         # TI: the selector is in the LDT
            return (f"the CPU faulted ({m.group(1)}) at `{m.group(2)}` in your load: that selector is "
                    f"in the LDT, and the LDT loaded then has no such descriptor (is LDTR loaded, "
                    f"lldt [edi + AREA_LDTR], before the segment registers?)")
        return (f"the CPU faulted ({m.group(1)}) at `{m.group(2)}` in your load: that selector names no "
                f"such descriptor in the GDT loaded then (is GDTR loaded first? is the operand "
                f"[edi + AREA_...]?)")
    return why


def _limit_hint(board, kernel):
    """A fault by a segment's limit inside the kernel's code (the load), from the trace: the
    likely cause of a refused world or a stop. None if there was none."""
    f = next((e for e in board.trace.of("cpu.fault") if "past the limit" in str(e["why"])
              and kernel.contains(e["eip"])), None)
    if f is None:
        return None
    insn = next(iter(disassemble(board.memory.read(f["eip"], 15), f["eip"])), (0, "?"))[1]
    return (f"the CPU faulted at `{insn}` in your load: {f['why']} (#GP). By then the segment it went "
            "through was the world's (a guest's ends at its memory's end, the COS's below the kernel; "
            "the save area is in the kernel): read the save area through SS, the kernel's "
            "(ss:[edi + ...]), or before that segment register is loaded")


def _crashed(kernel):
    for w in kernel.worlds.all:
        if w.state == "crashed":
            return f"{w.name} was refused: {_hint(w.fault)}  [{w.fault}]"
    return None


def _distinct_tables(kernel, vm):
    """vm's own GDT (its VMM's, TSSs available, plus an LDT), LDT and IDT (its VMM's), moved."""
    memory, base = kernel.memory, kernel.base
    gdt = bytearray(memory.read(vm.vmm_region + layout.VMM_GDT, LDT_SEL))
    for sel in range(8, LDT_SEL, 8):
        d = decode_segment(gdt[sel:sel + 8])
        if not d.s and d.type == TSS_BUSY:
            gdt[sel:sel + 8] = encode_segment(d.base, d.limit, TSS_AVAILABLE, d.dpl, s=0, db=0, g=d.g)
    gdt += encode_segment(base + LDT_AT, 15, LDT, 0, s=0, db=0, g=0)
    memory.write(base + GDT_COPY, bytes(gdt), code=False)
    memory.write(base + LDT_AT, bytes(8) + encode_segment(0, vm.region[1] - 1, DATA_RW, 3),   # its memory: linear 0..
                 code=False)
    memory.write(base + IDT_COPY, memory.read(vm.vmm_region + layout.VMM_IDT, 256 * 8), code=False)
    state = save_area.read_area(memory, vm.area)
    state.update({"gdtr.base": base + GDT_COPY, "gdtr.limit": len(gdt) - 1, "ldtr.sel": LDT_SEL,
                  "idtr.base": base + IDT_COPY, "idtr.limit": 256 * 8 - 1,
                  "fs": LDT_DATA_SEL,           # FS unlike DS: a load from the wrong field shows;
                  "gs": 0})                     # GS too (null: the guests never use it), or a DS
                                                # loaded with GS's value (its own `mov eax` left out) passes
    save_area.write_area(memory, vm.area, state)


def _machine(load_sequence, **options):
    """(board, cos, kernel, vms) with the learner's load in the kernel image, or a problem string."""
    source = load_sequence()
    if not isinstance(source, str):
        return f"load_sequence() returned {type(source).__name__}, expected x86 source text"
    prefix = switch_x86.symbols_source() + "\n"
    try:
        assemble(prefix + source)               # alone first: errors name the learner's own lines
        kernel_image = image.build(source)
    except AsmError as e:
        shift = prefix.count("\n")
        return "your load sequence does not assemble: " + re.sub(
            r"^line (\d+)", lambda m: f"line {int(m.group(1)) - shift}", str(e))
    machine = lesson.two_vms(image=kernel_image, **options)
    _distinct_tables(machine[2], machine[3][1])
    return machine


def _run(board, kernel, n):
    mark = board.trace.mark()
    board.run(n)
    why = board.cpu.shutdown
    unmapped = [e for e in board.trace.since(mark, "cpu.fault")
                if e["vector"] == PF and "page not present (CR3" in e["why"]]
    if why and unmapped:                         # paging came on with a CR3 that maps nothing of ours
        return (f"the CPU stopped: {why} — {unmapped[0]['why']}: paging came on with page tables that "
                f"do not map the kernel's tables, so not even the page fault could be delivered. "
                f"{HINTS['cr3']}")
    if why and "vmkernel panic" in why:
        return (f"the CPU stopped: {why} — after refusing a world your load left the CPU so that the "
                f"kernel could not put back the world it left (a TSS marked busy in another GDT: ltr "
                f"before lgdt? a data segment loaded from another item's field?)")
    if why:
        return (f"the CPU stopped: {why} — a fault inside the load could not even be delivered: GDTR "
                f"or IDTR loaded from the wrong place (is every operand [edi + AREA_...]?)")
    return None


def check_consoles(load_sequence):
    machine = _machine(load_sequence, quantum=1)
    if isinstance(machine, str):
        return machine
    board, cos, kernel, vms = machine
    ticks = cos.ticks()
    problem = None
    for _ in range(15):                         # 1,500,000 instructions; a limit fault in the load ends it
        problem = _run(board, kernel, 100_000)
        if problem or _limit_hint(board, kernel):
            break
    problem = problem or _crashed(kernel)
    if problem:
        return _limit_hint(board, kernel) or problem
    for vm in vms:
        got = bytes(vm.vmm.console).decode().splitlines()
        if len(got) < 20:
            return f"{vm.name} printed {len(got)} lines in 1,500,000 instructions; expected over 20"
        if got != _expected(vm.name, len(got) - 1):
            wrong = next(i for i, (a, b) in enumerate(zip(got, _expected(vm.name, len(got) - 1))) if a != b)
            return f"{vm.name}'s console line {wrong + 1} is {got[wrong]!r}, expected {_expected(vm.name, wrong)[wrong]!r}"
    if cos.ticks() < ticks + 50:
        return f"the COS took {cos.ticks() - ticks} timer ticks; expected over 50"
    few = [w.name for w in kernel.worlds.all if kernel.worlds.switches_of(w) < 20]
    if few:
        return f"{', '.join(few)} was switched in fewer than 20 times"
    return None


def check_checksum(load_sequence):
    machine = _machine(load_sequence, timer_period=2000, quantum=1)   # (each switch is ~150 instructions of x86)
    if isinstance(machine, str):
        return machine
    board, cos, kernel, vms = machine
    board.memory.write_u32(kernel.base + layout.WORK_LENGTH, 200)
    n = 32_000
    vm = kernel.install_vm(lambda base: guests.checksum(base, n), lesson.VM_MEMORY, "sum")
    problem = None
    for _ in range(30):                         # it needs ~4.2M: the COS and the kernel's work share the CPU
        problem = _run(board, kernel, 200_000)
        if problem or vm.vmm.console or vm.state == "crashed":
            break
    problem = problem or _crashed(kernel)
    if problem:
        return _limit_hint(board, kernel) or problem
    got, want = bytes(vm.vmm.console).decode(), guests.checksum_expected(n)
    if got != want:
        return f"the checksum guest printed {got!r}, expected {want!r} (its registers did not survive a switch?)"
    if kernel.worlds.switches_of(vm) < 300:
        return f"the checksum guest was switched in only {kernel.worlds.switches_of(vm)} times"
    return None


CHECKS = [("two VMs and the COS keep their consoles", 2, check_consoles),
          ("a checksum survives hundreds of switches", 2, check_checksum)]
FUNCTION = "load_sequence"
