"""The machines of notebooks 03 and 04: a displaced COS with every device,
and the sensor that can jam (its level-triggered line stuck high)."""
from typing import NamedTuple

from vmkit.cos import layout as cos_layout
from vmkit.lessons import takeover

SENSOR = 5


def displaced(**options):
    """A COS displaced by the kernel; (board, cos, kernel)."""
    board, cos, loader = takeover.takeover(**options)
    if loader.kernel is None:                  # e.g. a build_idt of exercise 02a that failed
        why = [e["why"] for e in board.trace.of("load.refused")]
        raise RuntimeError(f"the vmkernel was not loaded: {why[-1] if why else 'no load happened'}")
    return board, cos, loader.kernel


def storm(masking=True, instructions=600_000, **options):
    """Jam the sensor and run: what happened to the kernel and the COS.

    Returns counts read from the trace and from emulated memory."""
    board, cos, kernel = displaced(**options)
    kernel.irqs.masking = masking
    work, ticks = kernel.work_done(), cos.ticks()
    mark = board.trace.mark()
    board.sensor.sample()
    board.sensor.jam()
    board.run(instructions)
    into_kernel = [e for e in board.trace.since(mark, "cpu.deliver") if e["vector"] == 0x20 + SENSOR]
    storms = board.trace.since(mark, "irq.storm")
    return {
        "sensor IRQs into the kernel": len(into_kernel),
        "sensor IRQs handled by the COS": board.memory.read_u32(cos_layout.SENSOR_IRQS),
        "COS timer ticks": cos.ticks() - ticks,
        "kernel work done": kernel.work_done() - work,
        "storm detected": f"after {storms[0]['interrupts']} IRQs" if storms else "no",
    }


def storm_text(masking):
    return "\n".join(f"{k:32} {v}" for k, v in storm(masking).items())


# ---- one IRQ, step by step (notebook 04's timeline) ------------------------------------
IRQ_BASE = 0x20
SERIAL, KEYBOARD = 4, 1
SOURCES = {                                         # what the learner does -> the IRQ line it raises
    "serial": (SERIAL, "type a key on COM1"),
    "keyboard": (KEYBOARD, "press a key"),
    "sensor": (SENSOR, "sensor sample"),
}
STEPS = (                                           # (step, trace event, required)
    ("raised", "irq.raise", True),
    ("into the kernel", "cpu.deliver", True),
    ("masked", "irq.masked", False),
    ("queued", "irq.queued", True),
    ("the COS runs", "kernel.cos_runs", False),
    ("delivered", "kernel.inject", True),
    ("the COS's EOI", "irq.cos_eoi", True),
    ("unmasked", "irq.unmasked", False),
)


class Step(NamedTuple):
    name: str
    event: object                                   # the trace Event

    @property
    def time(self):
        return self.event.time


def _is(kind, event, line):
    if event.kind != kind:
        return False
    if kind == "cpu.deliver":
        return event["vector"] == IRQ_BASE + line and event["kind"] == "irq"
    if kind == "kernel.inject":
        return event["vector"] == IRQ_BASE + line
    if kind == "kernel.cos_runs":
        return bool(event["pending"] >> line & 1)
    return event["line"] == line


def irq_steps(trace, mark, line):
    """The steps one IRQ of `line` took, from the trace since `mark`, in order:
    raised -> into the kernel -> masked -> queued -> the COS runs -> delivered
    -> the COS's EOI -> unmasked. The first IRQ of the line after `mark` is
    followed. Required steps are found one after another; the optional ones
    (masked: masking may be off; the COS runs: only if the kernel was away
    when the IRQ came; unmasked) only between their neighbours, so they are
    never borrowed from a later IRQ. A list of Step(name, event); it stops at
    the first required step the trace does not (yet) show."""
    events = trace.since(mark, *{kind for _, kind, _ in STEPS})
    found, at = {}, 0
    for name, kind, required in STEPS:
        if not required:
            continue
        index = next((i for i in range(at, len(events)) if _is(kind, events[i], line)), None)
        if index is None:
            break
        found[name], at = index, index + 1
    names = [name for name, _, _ in STEPS]
    for position, (name, kind, required) in enumerate(STEPS):
        if required:
            continue
        before = [found[n] for n in names[:position] if n in found]
        after = [found[n] for n in names[position + 1:] if n in found]
        if not before or (not after and name != "unmasked"):
            continue
        start = before[-1] + 1
        end = after[0] if after else next((i for i in range(start, len(events))
                                           if _is("irq.raise", events[i], line)), len(events))
        index = next((i for i in range(start, end) if _is(kind, events[i], line)), None)
        if index is not None:
            found[name] = index
    return [Step(name, events[found[name]]) for name in names if name in found]


def trigger(board, cos, source):
    """Do what makes `source`'s device interrupt ("serial", "keyboard", "sensor"); its line."""
    if source == "serial":
        cos.type("k")
    elif source == "keyboard":
        board.keyboard.press(b"\x1e")                # scancode of A, set 1
    elif source == "sensor":
        board.sensor.sample()
    else:
        raise ValueError(f"no source {source!r}: there are {', '.join(SOURCES)}")
    return SOURCES[source][0]


def until_kernel_works(board, kernel, step=500, limit=2_000_000):
    """Run in small steps until the kernel is at its own work (kernel.away == "work"),
    so that an IRQ raised now finds the COS waiting. Instructions run."""
    start = board.clock
    while kernel.away != "work":
        if board.clock - start >= limit:
            raise TimeoutError(f"the kernel did not go to its own work within {limit} instructions")
        board.run(step)
    return board.clock - start


def follow(board, cos, kernel, source, during_work=False, instructions=30_000):
    """Raise one IRQ (optionally while the kernel works), run, and return its steps."""
    if during_work:
        until_kernel_works(board, kernel)
    mark = board.trace.mark()
    line = trigger(board, cos, source)
    board.run(instructions)
    return irq_steps(board.trace, mark, line)


def waited(steps):
    """Virtual time between the kernel queueing the IRQ and delivering it to the COS (claim 10)."""
    at = {s.name: s.time for s in steps}
    return at["delivered"] - at["queued"] if "queued" in at and "delivered" in at else None


def storm_side_by_side(instructions=100_000):
    """storm() with masking on and off, as two columns of text."""
    on, off = storm(True, instructions), storm(False, instructions)
    rows = [f"{'jammed sensor, ' + format(instructions, ',') + ' instructions':34} {'masking on':>14} {'masking off':>16}"]
    rows += [f"{k:34} {str(on[k]):>14} {str(off[k]):>16}" for k in on]
    return "\n".join(rows)
