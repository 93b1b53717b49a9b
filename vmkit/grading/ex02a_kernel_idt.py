"""Grades exercise 02a: the loading module builds the kernel's IDT with the
learner's function, and the kernel must then receive every interrupt and
fault: the COS's timer ticks, its trapped cli, its patched pushfd, a fault."""
from vmkit.hw.x86 import decode_gate
from vmkit.kernel import layout
from vmkit.lessons import takeover

from .learner import Wrong, guard

CRITICAL = "init:\npushfd\ncli\nmov ecx, 30000\nl: loop l\npopfd\nud2\nret"


def _takeover(build):
    """(board, cos, loader, what went wrong during the insmod or None). The learner's
    exception refuses the load (the loader says its type); the hint names their line too."""
    raised = []

    def building(*args):
        try:
            return guarded(*args)
        except Wrong as e:
            raised.append(str(e))
            raise RuntimeError(e) from None
    guarded = guard(build, "build_kernel_idt", lambda *args: "as the loading module built the kernel's IDT")
    board, cos, loader = takeover.booted_cos(build_idt=building)
    cos.put_module(loader.module)
    try:
        cos.run_command("insmod", takeover.COMMAND_LIMIT)
    except NotImplementedError:
        raise                       # the stub: "not attempted"
    except Exception as e:          # the machine failed mid-insmod: grade what the CPU was given
        seen = "; ".join(str(e) for e in board.trace.of("cpu.fault", "cpu.shutdown", "kernel.reflect")[-3:])
        return board, cos, loader, f"{e}. The machine saw: {seen or 'no fault'}"
    if loader.kernel is None:
        why = "; ".join(e["why"] for e in board.trace.of("load.refused"))
        return board, cos, loader, (raised[0] if raised else
                                    f"the loading module refused the load: {why or 'it did not say why'}")
    return board, cos, loader, None


def _dpl_says(vector, dpl, want):
    """Why a gate's DPL matters: who may raise it with `int n`."""
    if dpl == want:
        return ""
    if dpl < want:
        return f" (the COS, at CPL 1, raises it on purpose: through a DPL {dpl} gate its `int` is a #GP)"
    return (f" (code at CPL {dpl}" + (", a VM's," if dpl == 3 else "")
            + f" could then raise vector {vector:#x} with `int {vector:#x}` and enter the kernel by it)")


def check_gates(build):
    board, cos, loader, problem = _takeover(build)
    if loader.kernel is None:
        return problem
    _, base, limit, _ = board.cpu["idtr"]
    if limit != 0x7FF:
        return f"IDTR limit is {limit:#x}: the IDT must hold 256 gates (limit 0x7ff)"
    k = loader.kernel
    for v in range(256):
        gate = decode_gate(board.memory.read(base + 8 * v, 8))
        stub = k.base + k.image.stub(v)
        want_dpl = 1 if v in (3, 0x90) else 0
        if (gate.offset, gate.selector, gate.present) != (stub, layout.KERNEL_CODE_SEL, True):
            return (f"gate {v:#x}: offset {gate.offset:#x} selector {gate.selector:#x} present {gate.present}; "
                    f"expected the kernel stub {stub:#x}, selector {layout.KERNEL_CODE_SEL:#x}, present")
        if gate.dpl != want_dpl or gate.type != 0xE:
            return (f"gate {v:#x}: type {gate.type:#x} DPL {gate.dpl}; expected an interrupt gate (0xe) with DPL {want_dpl}"
                    + (" (a trap gate leaves IF set: the kernel is interrupted inside its own entry code)"
                       if gate.type == 0xF else _dpl_says(v, gate.dpl, want_dpl)))
    return problem


def check_kernel_gets_everything(build):
    board, cos, loader, problem = _takeover(build)
    if problem:
        return problem if loader.kernel is None else f"the takeover did not complete: {problem}"
    try:
        mark = takeover.run_module(board, cos, CRITICAL)
    except RuntimeError:
        reflected = board.trace.of("kernel.reflect")
        last = reflected[-1] if reflected else None
        return ("the COS died of a fault the kernel handed back to it"
                + (f" (vector {last['vector']:#x} at {last['eip']:#x})" if last else "")
                + ": did an `int3` or `int 0x90` of the COS reach the kernel through a gate it may use?")
    board.run(300_000)
    delivered = board.trace.since(mark, "cpu.deliver")
    wanted = {0x20: "the timer IRQ", 13: "the COS's trapped cli (#GP)", 3: "the COS's patched pushfd (int3)",
              6: "the COS's ud2 (#UD)"}
    for vector, what in wanted.items():
        hits = [e for e in delivered if e["vector"] == vector]
        if not hits:
            return f"{what} never reached any handler (vector {vector:#x})"
        if not all(loader.kernel.contains(e["handler"]) for e in hits):
            return f"{what} went to {hits[0]['handler']:#x}, outside the kernel's memory"
    if board.cpu.shutdown:
        return f"the CPU stopped: {board.cpu.shutdown}"
    return None


CHECKS = [("every gate leads into the kernel", 1, check_gates),
          ("the kernel receives interrupts and faults", 2, check_kernel_gets_everything)]
FUNCTION = "build_kernel_idt"
