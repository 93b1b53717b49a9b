"""The machines of notebooks 05 and 06: a displaced COS with two VMs, the
schedule read back from the trace, and one world switch recorded step by step.

Everything here is read from the machine: world blocks and save areas in
kernel memory (save_area.py's layout), the `switch.*` trace events, the CPU's
registers and the trap frame on the kernel stack.
"""
from typing import NamedTuple

from vmkit.hw.asm import disassemble
from vmkit.kernel import layout, save_area, switch
from vmkit.kernel.frame import Frame
from vmkit.lessons import takeover
from vmkit.vmm import guests

VM_MEMORY = 0x8000
STEPS = ("switch.begin", "switch.save", "switch.cli", "switch.check", "switch.load",
         "switch.start", "switch.sti")
# claim 15's list, each with the save-area items that hold it
CLAIM15 = (
    ("exception flags (EFLAGS)", ("eflags",)),
    ("memory segments", ("cs", "ss", "ds", "es", "fs", "gs")),
    ("instruction pointer (EIP)", ("eip",)),
    ("descriptor tables: GDTR", ("gdtr.limit", "gdtr.base")),
    ("descriptor tables: IDTR", ("idtr.limit", "idtr.base")),
    ("descriptor tables: LDTR", ("ldtr.sel",)),
    ("descriptor tables: TR", ("tr.sel",)),
    ("address space (CR3)", ("cr3",)),
    ("general registers", ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")),
)


def two_vms(timer_period=2000, quantum=2, image=None):
    """A displaced COS and two console VMs, vm1 and vm2: (board, cos, kernel, [vm1, vm2]).
    image: the kernel image (default: the kit's; exercise 06 builds one with the learner's load)."""
    # vm_tick=None: the VMs tick with the COS's PIT, so a turn is a few single ticks a learner can follow
    board, cos, loader = takeover.takeover(timer_period=timer_period, image=image, vm_tick=None)
    kernel = loader.kernel
    kernel.worlds.quantum = quantum
    vms = [kernel.install_vm(lambda base, n=name: guests.console(base, n), VM_MEMORY, name)
           for name in ("vm1", "vm2")]
    return board, cos, kernel, vms


def console_of(world, cos):
    """A world's console text: the COS's serial output, or a VM's virtual serial port."""
    return cos.console() if world.kind == "cos" else bytes(world.vmm.console).decode()


def accounting(kernel):
    """Per world, read from its block in kernel memory."""
    w = kernel.worlds
    return [{"world": x.name, "kind": x.kind, "state": x.state,
             "instructions": w.instructions_of(x), "switches in": w.switches_of(x),
             "ticks": w.ticks_of(x)} for x in w.all]


def world_rows(kernel):
    """Each world as the kernel keeps it: memory region, address space, control thread."""
    rows = []
    for x in kernel.worlds.all:
        area = save_area.read_area(kernel.memory, x.area)
        base, size = x.region
        rows.append({"world": x.name, "kind": x.kind, "region": (base, size),
                     "cr3": area["cr3"], "cs": area["cs"], "eip": area["eip"], "esp": area["esp"],
                     "save area": x.area, "state": x.state})
    return rows


class Turn(NamedTuple):
    world: str
    start: int          # virtual time (instructions) it was switched in
    end: int            # when it was switched out (or the end of the trace)


def timeline(trace, since=0, end=None):
    """Which world ran when: turns in the order they ran, from the switch.begin events.
    The world running before the first switch starts at the first event's time."""
    switches = trace.since(since, "switch.begin")
    if not switches:
        return []
    turns, start, who = [], None, switches[0]["frm"]
    events = trace.since(since)
    start = events[0].time if events else switches[0].time
    for e in switches:
        turns.append(Turn(who, start, e.time))
        who, start = e["to"], e.time
    last = end if end is not None else max(start, trace.events[-1].time)
    turns.append(Turn(who, start, last))
    return [t for t in turns if t.end > t.start or t is turns[-1]]


def shares(turns):
    """Virtual time per world over the turns."""
    out = {}
    for t in turns:
        out[t.world] = out.get(t.world, 0) + t.end - t.start
    return out


# ---- one switch, step by step (notebook 06) -------------------------------------------
class Step(NamedTuple):
    kind: str           # switch.begin ... switch.sti
    event: object       # the trace event
    registers: dict     # the CPU's registers at that moment (cpu.state())
    world_state: dict   # claim-15 state the interrupted/next world resumes with: frame + CPU
    areas: dict         # {world name: the 128 bytes of its save area}


def record_switch(board, kernel, frm="cos", to="vm1", limit=2_000_000):
    """Run until a switch from `frm` to `to`, snapshotting every step; [Step] (7 of them)."""
    trace, memory, the_cpu = board.trace, board.memory, board.cpu
    worlds = {w.name: w for w in kernel.worlds.all}
    steps, recording = [], []
    emit = trace.emit

    def snapshot(kind, /, cpu=None, **data):
        event = emit(kind, cpu, **data)
        if kind == "switch.begin":
            recording[:] = [data["frm"] == frm and data["to"] == to and not steps]
        if recording and recording[0] and kind in STEPS:
            frame = Frame(memory, the_cpu["esp"])
            steps.append(Step(kind, event, the_cpu.state(), switch.observe(memory, frame, the_cpu),
                              {n: bytes(memory.read(worlds[n].area, save_area.SIZE)) for n in (frm, to)}))
        return event

    trace.emit = snapshot
    try:
        ran = 0
        with switch.step_by_step(kernel):      # each step a stop: the snapshot is taken there
            while len(steps) < len(STEPS) and ran < limit:
                board.run(20_000)
                ran += 20_000
    finally:
        del trace.emit               # back to the class's method
    return steps[:len(STEPS)]


def before_after(steps):
    """Claim 15, item by item: (claim item, register, before the switch, the save area of
    the next world, after the switch, restored?). `before` is the outgoing world's state at
    switch.begin, `after` the state at switch.sti."""
    first, last = steps[0], steps[-1]
    to = last.event["world"]
    stored = save_area.decode_area(last.areas[to])
    rows = []
    for label, names in CLAIM15:
        for n in names:
            after = last.world_state[n]
            rows.append((label, n, first.world_state[n], stored[n], after, after == stored[n]))
    return rows


# ---- the switch's x86, as the CPU runs it ---------------------------------------------
def switch_listing(kernel):
    """[(address, instruction)] of the world switch in the kernel's memory, found
    as the CPU finds it: from the dispatcher's `cmp eax, GO_SWITCH; je world_switch`,
    to the second `jmp dispatch` (the save part's, then the load part's)."""
    dispatch = kernel.base + kernel.image.dispatch
    stub = disassemble(kernel.memory.read(dispatch, 64), dispatch)
    at = next(i for i, (_, t) in enumerate(stub) if t == f"cmp eax, {layout.GO_SWITCH}")
    start = int(stub[at + 1][1].split()[1], 16)
    listing, back = [], f"jmp {dispatch:#x}"
    for address, text in disassemble(kernel.memory.read(start, 1024), start):
        listing.append((address, text))
        if text == back and sum(t == back for _, t in listing) == 2:
            return listing
    raise RuntimeError("the world switch does not come back to the dispatcher")


# the instructions of the listing that do a claimed step, and what they do
LISTING_MARKS = {
    "sgdt": "store GDTR (limit, then base)", "sidt": "store IDTR", "sldt": "store LDTR's selector",
    "str": "store TR's selector", "mov eax, cr3": "read CR3", "cli": "claim 14: disable exceptions",
    "lgdt": "claim 15: load GDTR", "lldt": "claim 15: load LDTR (the CPU checks the descriptor)",
    "ltr": "claim 15: load TR from the GDT's TSS descriptor (must be available; marked busy)",
    "lidt": "claim 15: load IDTR", "mov ds": "claim 15: memory segments", "mov cr3": "the address space",
    "mov dword ptr [esp + 0x20], 0x101": "back to the dispatcher: seal, check",
    "mov dword ptr [esp + 0x20], 0x102": "back to the dispatcher: verify; then popad, iretd",
}


def wrong_selector(item="tr.sel", value=layout.USER_DATA_SEL, run=300_000):
    """Two VMs; once vm2 has been switched out, its save area gets a selector the
    CPU will refuse, stored with a good CRC so that only the CPU can object; run.
    (board, kernel, vm2, the CPU's faults taken in the kernel's x86)."""
    board, cos, kernel, vms = two_vms()
    board.run(200_000)
    victim = vms[1] if kernel.worlds.current is not vms[1] else vms[0]
    state = save_area.read_area(kernel.memory, victim.area)
    state[item] = value
    save_area.write_area(kernel.memory, victim.area, state)
    mark = board.trace.mark()
    board.run(run)
    faults = [e for e in board.trace.since(mark, "cpu.fault") if kernel.contains(e["eip"])]
    return board, kernel, victim, faults
