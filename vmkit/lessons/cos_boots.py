"""What notebook 01 pokes: the COS booted on the full board.

Every answer here is read from the CPU or from emulated memory: who owns
IDTR/GDTR/TR, what the COS's IDT gates point at, the ticks the COS counted.
"""
from collections import Counter

from vmkit.cos import COS, layout as L
from vmkit.hw.x86 import decode_gate
from .machine import full_board

TABLES = ("idtr", "gdtr", "tr")
HANDLERS = {"timer_handler": "IRQ 0: timer", "kbd_handler": "IRQ 1: keyboard",
            "serial_handler": "IRQ 4: serial", "sensor_handler": "IRQ 5: sensor"}
ROLES = {"exception stub → fault_common": "CPU exceptions", **HANDLERS,
         "IRQ stub → irq_spurious": "other IRQ lines", "unexpected_handler": "unused vectors"}


def boot(timer_period=L.DEFAULT_TIMER_PERIOD, print_every=L.DEFAULT_PRINT_EVERY):
    """The full board with the COS booted; also the CPU's state at power-on
    (before the COS's first instruction), for comparison."""
    board = full_board()
    cos = COS.boot(board, timer_period, print_every, wait=False)
    power_on = ownership(board.cpu)
    board.run_until(lambda: cos.var("READY") == 1, 1_000_000, "the COS booting")
    return cos, power_on


def ownership(cpu):
    """{register: (selector, base, limit)} for IDTR, GDTR, TR, plus CS and CPL."""
    state = {t: cpu[t][:3] for t in TABLES}
    state["cs"], state["cpl"] = cpu["cs"], cpu.cpl
    return state


def _describe(name, value):
    selector, base, limit = value
    if name == "tr" and selector == 0:
        return "none loaded", "-"
    if name != "tr" and base == 0 and limit == 0:
        return "empty (base 0, limit 0)", "-"
    text = f"base {base:#x} limit {limit:#x}"
    return (f"sel {selector:#x} " + text if name == "tr" else text), L.region(base)


def ownership_table(power_on, booted):
    """Who owns the CPU's tables and privilege: a text table, two columns of state."""
    rows = [("register", "at power-on", "points into", "after the COS booted", "points into")]
    for t in TABLES:
        rows.append((t.upper(), *_describe(t, power_on[t]), *_describe(t, booted[t])))
    level = {0: "system level (ring 0)"}
    rows.append(("CS / CPL", f"{power_on['cs']:#x} / {power_on['cpl']}",
                 level.get(power_on["cpl"], "user level"),
                 f"{booted['cs']:#x} / {booted['cpl']}", level.get(booted["cpl"], "user level")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _handler_kind(cos, offset):
    s = cos.symbols
    for name in HANDLERS:
        if offset == s[name]:
            return name
    if s["exc_stubs"] <= offset < s["exc_stubs_end"]:
        return "exception stub → fault_common"
    if s["irq_stubs"] <= offset < s["irq_stubs_end"]:
        return "IRQ stub → irq_spurious"
    if offset == s["unexpected_handler"]:
        return "unexpected_handler"
    return "somewhere else"


def _ranges(vectors):
    out, start = [], vectors[0]
    for a, b in zip(vectors, vectors[1:] + [None]):
        if b != a + 1:
            out.append(f"{start:#04x}" if start == a else f"{start:#04x}–{a:#04x}")
            start = b
    return ", ".join(out)


def idt_groups(cos):
    """The IDT that IDTR names, read gate by gate from memory and grouped by
    what the handler is: [(kind, vector ranges, gate count, lowest/highest
    handler address, selector set, region of the handlers)]."""
    board = cos.board
    _, base, limit, _ = board.cpu["idtr"]
    groups = {}
    for vector in range((limit + 1) // 8):
        gate = decode_gate(board.memory.read(base + 8 * vector, 8))
        kind = _handler_kind(cos, gate.offset) if gate.present else "not present"
        groups.setdefault(kind, []).append((vector, gate))
    out = []
    for kind, entries in groups.items():
        offsets = [g.offset for _, g in entries]
        out.append((kind, _ranges([v for v, _ in entries]), len(entries), min(offsets),
                    max(offsets), sorted({g.selector for _, g in entries}),
                    L.region(min(offsets))))
    return out


def idt_text(cos):
    """idt_groups as lines of text."""
    _, base, limit, _ = cos.board.cpu["idtr"]
    lines = [f"IDTR base {base:#x} ({L.region(base)}), {(limit + 1) // 8} gates"]
    for kind, ranges, n, low, high, sels, region in idt_groups(cos):
        where = f"{low:#x}" if low == high else f"{low:#x}–{high:#x}"
        lines.append(f"  {ranges:<22} {n:>3} gate{'s' if n > 1 else ' '} → {kind:<31} "
                     f"{where:<17} sel {'/'.join(f'{s:#x}' for s in sels)}  {region}")
    return "\n".join(lines)


def tick_report(cos):
    """TICKS from COS memory against the timer interrupts the trace saw delivered."""
    board = cos.board
    delivered = [e for e in board.trace.of("cpu.deliver") if e["vector"] == L.TIMER_VECTOR]
    gaps = sorted({b.time - a.time for a, b in zip(delivered, delivered[1:])})
    lines = [line for line in cos.console().splitlines() if line.startswith("cos: tick ")]
    return (f"virtual time       {board.clock:,} instructions\n"
            f"TICKS (COS memory) {cos.ticks()}\n"
            f"timer IRQs the CPU took through the COS's IDT: {len(delivered)}, "
            f"every {', '.join(map(str, gaps))} instructions\n"
            f"tick lines the COS printed: {len(lines)}, the last: {lines[-1] if lines else '-'!r}")


def last_tick_events(cos):
    """The trace of the most recent timer tick, from the IRQ to the CPU halting again."""
    trace = cos.board.trace
    raises = [i for i, e in enumerate(trace.events) if e.kind == "irq.raise" and e["line"] == 0]
    if not raises:
        return "(no timer tick yet)"
    return trace.text(raises[-1], "irq.raise", "pic.ack", "cpu.deliver", "pic.eoi", "cpu.halt",
                      "serial")


def sensitive_summary(cos):
    """How many of each privileged or flag-sensitive instruction the COS contains."""
    counts = Counter(m for _, m in cos.sensitive_instructions())
    return "  ".join(f"{m} ×{counts[m]}" for m in sorted(counts, key=lambda m: (-counts[m], m)))
