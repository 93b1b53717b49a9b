"""The machines of notebooks 03 and 04: a displaced COS with every device,
and the sensor that can jam (its level-triggered line stuck high)."""
from vmkit.cos import layout as cos_layout
from vmkit.lessons import takeover

SENSOR = 5


def displaced(**options):
    """A COS displaced by the kernel; (board, cos, kernel)."""
    board, cos, loader = takeover.takeover(**options)
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
