"""Grades exercise 02b: the kernel emulates the displaced COS's cli/sti/
pushfd/popfd with the learner's function, and COS drivers (insmod'ed x86)
probe what came of it: the COS must keep taking its timer ticks, a tick that
arrives inside its critical section must wait until the section ends, its
pushfd must show its own IF and its popfd give back every flag it pushed,
and through it all the CPU must keep the COS displaced (real IF set, IOPL 0
at CPL 1), read from the CPU's registers while the COS runs."""
from vmkit.cos import layout as cos_layout
from vmkit.hw.asm import assemble
from vmkit.hw.x86 import (EFLAGS_AF, EFLAGS_CF, EFLAGS_IF, EFLAGS_IOPL_SHIFT, EFLAGS_OF,
                          EFLAGS_PF, EFLAGS_SF, EFLAGS_ZF)
from vmkit.lessons import takeover

from .learner import checked, guard

RESULTS = 0x5000                 # COS memory the drivers write what they saw to
TICKS = cos_layout.TICKS
SPIN = 40_000                    # loop iterations: several timer periods

# ticks before, inside (after a long spin with interrupts off) and after the section,
# and the flags its pushfd pushed
CRITICAL = f"""
init:   mov eax, [{TICKS:#x}]
        mov [{RESULTS:#x}], eax
        pushfd
        mov eax, [esp]
        mov [{RESULTS + 12:#x}], eax       ; the flags pushfd pushed (IF set: interrupts were on)
        cli
        mov ecx, {SPIN}
spin:   loop spin
        mov eax, [{TICKS:#x}]
        mov [{RESULTS + 4:#x}], eax
        popfd
        mov ecx, 2000
wait:   loop wait
        mov eax, [{TICKS:#x}]
        mov [{RESULTS + 8:#x}], eax
        ret
"""

ARITHMETIC = EFLAGS_CF | EFLAGS_PF | EFLAGS_AF | EFLAGS_ZF | EFLAGS_SF | EFLAGS_OF
# popped by popfd, then pushed again by pushfd: each must come back as it went, IF included
ROUND_TRIPS = (ARITHMETIC | EFLAGS_IF, EFLAGS_IF, ARITHMETIC, 0)
ROUND_TRIP_AT = RESULTS + 0x40


def _round_trip(popped, at):
    return f"push {popped:#x}\npopfd\npushfd\npop eax\nmov [{at:#x}], eax\n"


# the COS's flags through its own pushfd and popfd, as the COS sees them
FLAGS = f"""
init:   stc
        pushfd
        clc
        popfd
        setc al
        mov [{RESULTS + 0x10:#x}], al      ; CF pushed set comes back set
        xor eax, eax                       ; ZF set
        pushfd
        or eax, 1                          ; ZF clear
        popfd
        setz al
        mov [{RESULTS + 0x11:#x}], al      ; ZF comes back set
{"".join(_round_trip(popped, ROUND_TRIP_AT + 4 * i) for i, popped in enumerate(ROUND_TRIPS))}
        sti
        ret
"""

# the COS's own IF: what pushfd shows, what popfd restores
VIRTUAL_IF = f"""
init:   cli
        pushfd
        pop eax
        mov [{RESULTS + 0x20:#x}], eax     ; after cli: IF clear
        sti
        pushfd
        pop eax
        mov [{RESULTS + 0x24:#x}], eax     ; after sti: IF set
        cli
        pushfd                             ; IF clear on the stack
        sti
        popfd                              ; ... so interrupts are off again
        mov eax, [{TICKS:#x}]
        mov [{RESULTS + 0x28:#x}], eax
        mov ecx, {SPIN}
spin:   loop spin
        mov eax, [{TICKS:#x}]
        mov [{RESULTS + 0x2c:#x}], eax     ; no tick in between
        sti
        ret
"""

# the CPU's own registers at `probe_*` while the COS runs after its popfd
DISPLACED = f"""
init:   cli
        pushfd                             ; IF clear on the stack
        popfd
probe_if_clear:
        nop
        sti
probe_sti:
        nop
        pushfd
        or dword ptr [esp], {3 << EFLAGS_IOPL_SHIFT:#x}    ; the COS asks for IOPL 3
        popfd
probe_iopl:
        nop
        ret
"""


def _machine(emulate):
    emulate = guard(emulate, "emulate_if", lambda mnemonic, vcpu, frame: f"emulating the COS's {mnemonic}")
    board, cos, loader = takeover.takeover(emulate=emulate)
    return board, cos, loader.kernel, None if loader.kernel else "the load was refused"


def _run(board, cos, source):
    """insmod the driver `source`; None, or what stopped the COS running it."""
    faults = cos.var("FAULTS")
    try:
        takeover.run_module(board, cos, source)
        if cos.var("FAULTS") == faults:
            return None
        stopped = "the COS's fault handler ran (it stops there) during a driver that uses pushfd/popfd/cli/sti"
    except (RuntimeError, TimeoutError) as e:
        seen = "; ".join(str(e) for e in board.trace.of("kernel.reflect", "cpu.fault", "cpu.shutdown")[-3:])
        stopped = (f"the COS did not finish a driver that uses pushfd/popfd/cli/sti ({e}). "
                   f"The machine saw: {seen or 'no fault'}")
    return stopped + (". Does each branch keep the COS's stack balanced (pushfd pushes one value, "
                      "popfd pops one)?")


@checked
def check_ticks_go_on(emulate):
    """The COS's own main loop: `cli`, a look at what its handlers left, `sti; hlt`. Its
    virtual IF is read from kernel memory after each of its `cli`s: were it never cleared,
    the ticks would go on whatever the answer did (the COS runs with vif 1 at the takeover)."""
    board, cos, kernel, problem = _machine(emulate)
    if problem:
        return problem
    after_cli, vcpu = [], kernel.vcpu
    board.cpu.on_execute(cos.symbols["main_loop"] + 1,                   # past its cli
                         lambda cpu: after_cli.append((vcpu.vif, cpu["eflags"] >> EFLAGS_IOPL_SHIFT & 3, cpu.cpl)))
    before, mark = cos.ticks(), board.trace.mark()
    board.run(1_000_000)
    gained = cos.ticks() - before
    if board.cpu.shutdown:
        return f"the CPU stopped: {board.cpu.shutdown}"
    if gained < 50:
        said = (f"the COS took {gained} timer ticks in 1,000,000 instructions after the takeover; "
                f"expected about 100")
        if reflected := board.trace.since(mark, "kernel.reflect"):
            first = reflected[0]
            return (f"{said}: the kernel handed {len(reflected)} faults back to the COS (the first vector "
                    f"{first['vector']:#x} at {first['eip']:#x})"
                    + (": #DB after each instruction, as TF (bit 8) is set in the COS's EFLAGS. Do pushfd "
                       "and popfd give the COS only the flags it pushed and popped?" if first["vector"] == 1 else ""))
        return f"{said}: does sti set vcpu.vif to 1 and cli to 0?"
    if (iopl := next(((iopl, cpl) for _, iopl, cpl in after_cli if iopl >= cpl), None)):
        return (f"the COS's main loop ran `cli` at CPL {iopl[1]} with IOPL {iopl[0]}: its cli, sti, in and out no "
                f"longer trap to the kernel (the displacement undone). popfd must clear IOPL (bits 12-13) in frame.eflags")
    if (vif := next((vif for vif, _, _ in after_cli if vif), None)) is not None:
        return (f"the COS's main loop ran `cli` {len(after_cli)} times; after it its virtual IF in kernel "
                f"memory was {vif}, so its timer ticks reached it where it holds them off: cli must clear "
                f"vcpu.vif (set it to 0)")
    return None


@checked
def check_critical_section(emulate):
    board, cos, kernel, problem = _machine(emulate)
    if problem or (problem := _run(board, cos, CRITICAL)):
        return problem
    read = board.memory.read_u32
    before, inside, after = read(RESULTS), read(RESULTS + 4), read(RESULTS + 8)
    if inside != before:
        return (f"a timer tick reached the COS inside its pushfd/cli ... popfd section ({before} -> {inside}): "
                f"cli must clear vcpu.vif")
    if after <= inside and not read(RESULTS + 12) & EFLAGS_IF:
        return (f"the ticks that waited during the section were not delivered after popfd ({inside} -> {after}): "
                f"the COS's pushfd, with its interrupts on, pushed flags {read(RESULTS + 12):#x} with IF clear, "
                f"so its popfd turned them off. pushfd must push IF as vcpu.vif says")
    if after <= inside:
        return (f"the ticks that waited during the section were not delivered after popfd ({inside} -> {after}): "
                f"the popped IF (set) must become vcpu.vif")
    return None


@checked
def check_flags(emulate):
    board, cos, kernel, problem = _machine(emulate)
    if problem or (problem := _run(board, cos, FLAGS)):
        return problem
    memory = board.memory
    carry, zero = memory.read(RESULTS + 0x10, 2)
    if not carry:
        return ("after `stc; pushfd; clc; popfd` the COS's carry flag is clear: popfd must give the COS "
                "the flags it popped (only IF goes to vcpu.vif instead)")
    if not zero:
        return ("after `xor eax, eax; pushfd; or eax, 1; popfd` the COS's zero flag is clear: popfd must "
                "give the COS the flags it popped")
    for i, popped in enumerate(ROUND_TRIPS):
        pushed = memory.read_u32(ROUND_TRIP_AT + 4 * i) & (ARITHMETIC | EFLAGS_IF)
        if pushed != popped:
            return (f"the COS popped flags {popped:#x} and its pushfd then pushed {pushed:#x} "
                    f"(of the arithmetic flags and IF): popfd must give the COS the flags it popped, "
                    f"IF into vcpu.vif, and pushfd push the COS's flags with IF from vcpu.vif")
    return None


@checked
def check_virtual_if(emulate):
    board, cos, kernel, problem = _machine(emulate)
    if problem or (problem := _run(board, cos, VIRTUAL_IF)):
        return problem
    read = board.memory.read_u32
    after_cli, after_sti = read(RESULTS + 0x20), read(RESULTS + 0x24)
    before, after = read(RESULTS + 0x28), read(RESULTS + 0x2c)
    if after_cli & EFLAGS_IF:
        return ("`cli; pushfd` pushed flags with IF set: pushfd must push the COS's virtual IF "
                "(vcpu.vif), not the real one (which stays set while the COS runs)")
    if not after_sti & EFLAGS_IF:
        return "`sti; pushfd` pushed flags with IF clear: pushfd must push IF as vcpu.vif says (1 after sti)"
    if after != before:
        return (f"after `cli; pushfd; sti; popfd` the COS took timer ticks ({before} -> {after}): the popped "
                f"IF was clear, so popfd must clear vcpu.vif")
    return None


def _label(source, name):
    """The address `name` gets in a module assembled from `source`."""
    code = assemble(source + f"\n.long {name}", cos_layout.MODULE_CODE)
    return int.from_bytes(code[-4:], "little")


@checked
def check_displaced(emulate):
    board, cos, kernel, problem = _machine(emulate)
    if problem:
        return problem
    seen, vcpu = {}, kernel.vcpu           # the virtual CPU, read from kernel memory
    for name in ("probe_if_clear", "probe_sti", "probe_iopl"):
        board.cpu.on_execute(_label(DISPLACED, name),
                             lambda cpu, name=name: seen.setdefault(name, (cpu["eflags"], cpu.cpl, vcpu.vif)))
    if problem := _run(board, cos, DISPLACED):
        return problem
    if len(seen) < 3:
        return f"the COS's driver did not reach every probe point (reached {sorted(seen)})"
    for name in ("probe_if_clear", "probe_iopl"):  # IOPL first: at IOPL >= CPL, sti never reaches the kernel
        eflags, cpl, _ = seen[name]
        if (iopl := eflags >> EFLAGS_IOPL_SHIFT & 3) >= cpl:
            return (f"after the COS popped flags with IOPL {0 if name == 'probe_if_clear' else 3}, the CPU ran "
                    f"it at CPL {cpl} with IOPL {iopl}: its cli, sti, in and out no longer trap to the kernel "
                    f"(the displacement undone). popfd must clear IOPL (bits 12-13) in frame.eflags")
    for name, want, after in (("probe_if_clear", 0, "popped flags with IF clear"), ("probe_sti", 1, "ran sti"),
                              ("probe_iopl", 1, "popped flags with IF set")):
        if seen[name][2] != want:
            return (f"after the COS {after}, its virtual CPU in kernel memory holds vif = {seen[name][2]}; "
                    f"expected {want} (vif is 0 or 1)")
    eflags, cpl, _ = seen["probe_if_clear"]
    if not eflags & EFLAGS_IF:
        return ("after the COS popped flags with IF clear, the CPU ran it with the real IF clear: the kernel "
                "gets no interrupts while the COS runs. The popped IF goes to vcpu.vif; frame.eflags keeps IF set")
    return None


CHECKS = [("the COS keeps taking timer ticks", 1, check_ticks_go_on),
          ("a tick waits for the end of a critical section", 1, check_critical_section),
          ("pushfd shows the COS's IF; popfd restores it", 1, check_virtual_if),
          ("popfd gives back the COS's other flags", 1, check_flags),
          ("the COS stays displaced (real IF on, IOPL 0)", 1, check_displaced)]
FUNCTION = "emulate_if"
