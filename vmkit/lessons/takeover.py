"""The machine of notebook 02: a COS that has booted, and a loader ready.

`takeover()` runs the whole sequence the claims describe: the load-call
module installed in the COS as a driver (insmod), its init calling the
loading module, the kernel copied, its IDT built, EIP and IDTR switched.
"""
from vmkit.cos import layout as cos_layout
from vmkit.cos.cos import COS
from vmkit.hw.board import Board
from vmkit.loader import Loader, build_kernel_idt
from vmkit.kernel.cos_vcpu import emulate_if
from vmkit.kernel.worlds import VM_TICK

BOOT_LIMIT = 2_000_000
COMMAND_LIMIT = 3_000_000


def booted_cos(image=None, build_idt=build_kernel_idt, emulate=emulate_if, timer_period=10_000,
               vm_tick=VM_TICK, **board_options):
    """vm_tick: instructions per tick while a VM runs (a real kernel's by default);
    None: the COS's PIT tick, for a lesson that shows a VM's single IRQs."""
    board = Board(**board_options)
    cos = COS.boot(board, timer_period=timer_period)
    board.run_until(lambda: board.memory.read_u32(cos_layout.READY), BOOT_LIMIT, "the COS's boot")
    loader = Loader(board, image, build_idt=build_idt, emulate_if=emulate, vm_tick=vm_tick)
    return board, cos, loader


def takeover(**kwargs):
    """Boot the COS, insmod the load-call module: returns (board, cos, loader)."""
    board, cos, loader = booted_cos(**kwargs)
    cos.put_module(loader.module)
    cos.run_command("insmod", COMMAND_LIMIT)
    return board, cos, loader


def run_module(board, cos, source):
    """insmod a small module whose init is `source` (x86); returns the trace mark before it."""
    mark = board.trace.mark()
    cos.put_module(COS.make_module(source))
    cos.run_command("insmod", COMMAND_LIMIT)
    return mark


def load_call_module_text():
    from vmkit.loader import load_call_module_source
    return load_call_module_source().split("msg_loading:")[0].strip()


def ownership_text(board, kernel):
    """Who owns what, read from the CPU now."""
    cpu = board.cpu
    owner = lambda a: "kernel" if kernel is not None and kernel.contains(a) else "COS"
    lines = [f"{name.upper():5} base {cpu[name][1]:#010x}  in {owner(cpu[name][1])} memory"
             for name in ("idtr", "gdtr", "tr")]
    lines.append(f"CS    {cpu['cs']:#06x}      CPL {cpu.cpl}: the {'kernel' if cpu.cpl == 0 else 'COS'} is running now")
    if kernel is not None:
        v = kernel.vcpu
        lines.append(f"the COS's virtual CPU (kernel memory {kernel.base + 0xE000:#x}): IF={v.vif} "
                     f"IDTR base {v.idt_base:#x}, GDTR base {v.gdt_base:#x}; it runs at CPL 1")
    return "\n".join(lines)


def last_tick_path(board):
    """The last timer interrupt, from the CPU to the COS's handler, as the trace saw it."""
    events = board.trace.of("cpu.deliver", "kernel.forward", "kernel.inject")
    start = max(i for i, e in enumerate(events) if e.kind == "cpu.deliver" and e["vector"] == 0x20)
    path = [events[start]]
    for e in events[start + 1:]:
        if e.kind == "kernel.forward" or (e.kind == "kernel.inject" and e["vector"] == 0x20):
            path.append(e)
            if e.kind == "kernel.inject":
                break
    return "\n".join(str(e) for e in path)


def try_lidt(board, cos, loader):
    """A driver that runs `lidt` at CPL 1: what the CPU and the kernel did about it."""
    real_before = board.cpu["idtr"]
    mark = run_module(board, cos, f"init:\nlidt [{cos_layout.IDT_PTR:#x}]\nret")
    events = board.trace.since(mark, "cpu.fault", "cpu.deliver", "kernel.emulate")
    at = next(i for i, e in enumerate(events) if e.kind == "kernel.emulate" and e["insn"] == "lidt")
    events = events[at - 2:at + 1]                 # the #GP, its delivery to the kernel, the emulation
    v = loader.kernel.vcpu
    return "\n".join([str(e) for e in events] + [
        f"real IDTR    before {real_before[1]:#x}, after {board.cpu['idtr'][1]:#x}",
        f"COS virtual IDTR now {v.idt_base:#x} (limit {v.idt_limit:#x})"])
