"""Grades exercise 11: the learner's reinstatement order is the kernel's
(kernel.unload_order, kernel/unload.py). The steps before "tables" run in
the kernel while the COS is displaced; "tables" is the kernel's x86 that
loads the COS's own GDT, IDT and TR and returns to it at CPL 0; the steps
after it run with the COS at CPL 0 (the loading module's second entry).

The machine: two CPUs (so CPU 1 must be parked) and a SCSI disk. While the
COS is displaced it masks its keyboard line (IRQ 1) and a key is pressed
(pending on its virtual PIC), and it rings a SCSI read slow enough to be in
flight when it asks for the unload. Then `rmmod`, and what the machine shows:
the CPU's CPL, CS, GDTR, IDTR and TR; the COS's code bytes; the real 8259A's
masks; CPU 1; the key arriving once when the COS unmasks its line; the COS's
console; the kernel's block; the fingerprint of lessons/unload.py. What is
wrong is turned into what the COS lost, from what the machine saw."""
import functools
import re
import pathlib
import tempfile

from vmkit.cos import layout as L
from vmkit.grading import limit
from vmkit.cos.cos import COS
from vmkit.hw.board import FIRMWARE_GDT, Board
from vmkit.hw.disk import DiskImage
from vmkit.hw.x86 import decode_gate
from vmkit.kernel import unload
from vmkit.lessons.devices import ring_source
from vmkit.lessons.unload import differences, fingerprint
from vmkit.loader import Loader

LIMIT = 3_000_000
KEY, KEY_LINE = 0x1E, 1
RING, REQUEST = 0x7400, 0x7800              # the COS's SCSI ring and request block (its own memory)
MASK_KEYBOARD = "init: in al, 0x21\nor al, 2\nout 0x21, al\nxor eax, eax\nret"
UNMASK_KEYBOARD = "init: in al, 0x21\nand al, 0xfd\nout 0x21, al\nxor eax, eax\nret"
# Not compared in the fingerprint: the page of the COS's SCSI ring, which its own driver wrote
# (the request, then the controller's status) between the two fingerprints.
SCENARIO_PAGES = {f"page {RING & ~0xFFF:#x}"}


def _machine(order):
    """Load, the activity, the unload with `order`: what the machine shows, as a dict."""
    with tempfile.TemporaryDirectory() as directory:
        board = Board(cpus=2, disk=DiskImage.create(pathlib.Path(directory) / "d.img", 64))
        try:
            return _observe(board, order)
        finally:
            board.close()


def _observe(board, order):
    cos, loader = COS.boot(board), Loader(board)
    memory, cpu, cpu1 = board.memory, board.cpu, board.cpus[1]
    cos.put_module(loader.module)
    before = fingerprint(board)
    code_end = memory.read_u32(L.CODE_END)
    code = memory.read(L.COS_CODE, code_end - L.COS_CODE)
    cos.run_command("insmod", LIMIT)
    board.run(100_000)
    kernel = loader.kernel
    block = kernel.block
    patches = {a: m for a, _, m in kernel.patches.entries()}
    kernel.unload_order = order
    cos.insmod(COS.make_module(MASK_KEYBOARD), LIMIT)            # displaced: its virtual PIC
    keys = cos.var("KEYS")
    board.keyboard.press(bytes([KEY]))
    board.run(50_000)
    want_imr = kernel.vcpu.imr
    board.scsi.latency = 100_000                                 # in flight when it asks
    cos.insmod(COS.make_module("init: call ring\nxor eax, eax\nret\n"
                               + ring_source(0x28, 1, 1, RING, REQUEST)), LIMIT)
    cos.put_module(loader.module)
    seen = {"block": block, "want_imr": want_imr, "patches": patches}
    seen["rmmod"] = cos.run_command("rmmod", LIMIT)
    board.run(50_000)
    seen.update(cpl=cpu.cpl, cs=cpu["cs"], gdtr=cpu["gdtr"][1], idtr=cpu["idtr"][1], tr=cpu["tr"][0],
                esp=cpu["esp"], imr=board.pic.master.imr | board.pic.slave.imr << 8,
                stopped=getattr(cpu, "stopped", None), cpu1_halted=cpu1.halted,
                cpu1_if=cpu1.interrupts_enabled, cpu1_eip=cpu1["eip"], cpu1_gdtr=cpu1["gdtr"][1],
                scsi_status=memory.read(REQUEST + 2, 1)[0],
                kinds=[e.kind for e in board.trace.events if e.kind.startswith("unload.")])
    now = memory.read(L.COS_CODE, len(code))
    seen["int3"] = [L.COS_CODE + i for i in range(len(code)) if now[i] != code[i]]
    seen["block_bytes"] = sum(1 for b in memory.read(*_span(block)) if b)
    seen["next_free"] = memory.read_u32(L.NEXT_FREE_PAGE)
    seen["gates_inside"] = [v for v in range(256) if block[0] <= decode_gate(
        memory.read(L.COS_IDT + 8 * v, 8)).offset < block[1]]
    seen["console"] = seen["keys"] = None
    if cpu.cpl != 0:                                             # still displaced: nothing more to see
        seen["tail"], seen["faults"], seen["differences"] = cos.console()[-300:], 0, []
        return seen
    try:
        cos.insmod(COS.make_module(UNMASK_KEYBOARD), LIMIT)      # the COS lets its line in
        board.run(50_000)
        seen["keys"] = cos.var("KEYS") - keys
        seen["console"] = cos.run_command("ticks", LIMIT)
        cos.put_module(loader.module)
    except RuntimeError as e:                                    # the COS stopped: it reads no command
        seen["console"] = f"({e})"
    seen["faults"] = cos.var("FAULTS")
    seen["tail"] = cos.console()[-300:]
    seen["differences"] = [d for d in differences(before, fingerprint(board), board)
                           if d.split(":")[0] not in SCENARIO_PAGES]
    return seen


def _span(block):
    return block[0], block[1] - block[0]


@functools.lru_cache(maxsize=8)
def _seen(order):
    return _machine(list(order))


def _run(answer):
    """The learner's order, checked, and what the machine showed with it; or a problem."""
    order = answer()
    try:
        order = unload.check_order(order)
    except ValueError as e:
        return None, str(e)
    return _seen(order), None


def _bounded(check):
    """The learner's function, stopped and named if it does not return or ends the process (limit.py)."""
    def run(answer):
        try:
            return check(limit.bounded(answer, lambda: "your reinstatement_order()"))
        except limit.Stopped as e:
            return str(e)
    run.__name__ = check.__name__
    return run


def _inside(seen, address):
    return seen["block"][0] <= address < seen["block"][1]


def _fault_hint(seen):
    """The COS stopped or faulted after the unload: what the machine shows as the cause."""
    tail = seen["tail"]
    stuck = [a for a in seen["int3"] if a in seen["patches"]]
    if stuck:
        m = re.search(r"fault 3 at (0x[0-9a-f]+)", tail)
        a = int(m.group(1), 16) - 1 if m and int(m.group(1), 16) - 1 in stuck else stuck[0]
        return (f"the patch list was not restored: the COS's {seen['patches'][a]} at {a:#x} is still "
                f"int3 (0xCC){' and the COS took fault 3 there at CPL 0' if 'fault 3' in tail else ''}"
                f" ({len(stuck)} patched byte(s) left): \"unpatch\" restores them from the patch list in "
                "kernel memory, so it must run, and before \"free\" clears that memory")
    return None


@_bounded
def check_cpl0(answer):
    seen, problem = _run(answer)
    if problem:
        return problem
    order = answer()
    if _inside(seen, seen["idtr"]) or _inside(seen, seen["gdtr"]) or seen["cpl"] != 0:
        cleared = seen["block_bytes"] == 0
        if cleared and "tables" in order:
            return (f"the kernel's block was freed before the tables were reloaded: the CPU's IDTR "
                    f"({seen['idtr']:#x}) and GDTR ({seen['gdtr']:#x}) still name the kernel's memory, "
                    f"now zeros, and the CPU ran its cleared code (CPL {seen['cpl']}); \"free\" comes "
                    "after \"tables\"")
        return (f"tables not reloaded: IDTR {seen['idtr']:#x} and GDTR {seen['gdtr']:#x} still name kernel "
                f"memory (CS {seen['cs']:#x}): without \"tables\" the COS stays displaced and never gets "
                "its own IDT, GDT and TR back, nor CPL 0")
    if seen["cs"] != L.COS_CS or seen["tr"] != L.COS_TSS_SEL:
        return f"CS {seen['cs']:#x} / TR {seen['tr']:#x} are not the COS's ({L.COS_CS:#x} / {L.COS_TSS_SEL:#x})"
    return _fault_hint(seen) or (f"the COS's code differs from before the load at {seen['int3'][0]:#x}"
                                 if seen["int3"] else None)


@_bounded
def check_devices(answer):
    seen, problem = _run(answer)
    if problem:
        return problem
    if seen["cpl"] != 0 or seen["idtr"] != L.COS_IDT:
        return "the COS is not back at CPL 0 in its own tables (see the first check): its devices are not its own"
    order = answer()
    if not seen["cpu1_halted"] or seen["cpu1_if"] or seen["cpu1_gdtr"] != FIRMWARE_GDT:
        where = ("outside the kernel" if not _inside(seen, seen["cpu1_eip"]) else "in the kernel's block"
                 + (", freed: zeros now" if seen["block_bytes"] == 0 else ""))
        return (f"CPU 1 was not parked: it is at EIP {seen['cpu1_eip']:#x} ({where}), "
                f"{'halted' if seen['cpu1_halted'] else 'running'}, IF {int(seen['cpu1_if'])}, GDTR "
                f"{seen['cpu1_gdtr']:#x} (parked: halted, IF clear, the firmware's GDT {FIRMWARE_GDT:#x}); "
                "only the kernel can park it (its IPI enters the kernel's IDT): \"park\" before \"tables\"")
    if seen["imr"] != seen["want_imr"]:
        if seen["imr"] == 0 and "devices" in order:
            return (f"the devices were handed back after the kernel's block was freed: the COS's virtual "
                    f"PIC (in that block) read as zeros, so the real 8259A got masks {seen['imr']:#06x}, "
                    f"not the COS's {seen['want_imr']:#06x}, and the key pending for it was lost")
        return (f"the real 8259A's masks are {seen['imr']:#06x}, not the COS's {seen['want_imr']:#06x} "
                f"(it masked IRQ 1 while displaced): the PIC was not handed back (\"devices\")")
    if seen["keys"] is None:
        return _fault_hint(seen) or f"the COS stopped after the unload: {seen['console']!r:.160}"
    if seen["keys"] != 1:
        return (f"the key pressed while the COS was displaced (IRQ 1, masked by it) arrived "
                f"{seen['keys']} time(s) once the COS unmasked its line at CPL 0, not once: the pending "
                "line was not handed back to the real PIC")
    if seen["scsi_status"] != 0:
        return f"the COS's SCSI read in flight at the unload ended with status {seen['scsi_status']:#x}"
    if not (seen["console"] or "").startswith("ticks\ncos: ticks "):
        return (_fault_hint(seen) or f"the COS's console does not answer `ticks` after the unload: "
                f"{seen['console']!r:.120}")
    return None


@_bounded
def check_removed(answer):
    seen, problem = _run(answer)
    if problem:
        return problem
    if seen["cpl"] != 0 or seen["idtr"] != L.COS_IDT:
        return "the COS is not back at CPL 0 in its own tables (see the first check): the kernel is not removed"
    if seen["keys"] is None:
        return _fault_hint(seen) or f"the COS stopped after the unload: {seen['console']!r:.160}"
    start, end = seen["block"]
    order = answer()
    if seen["block_bytes"] and "free" in order and order.index("free") < order.index("tables"):
        return (f"the kernel's block {start:#x}-{end:#x} was not freed: \"free\" came before \"tables\", "
                f"while the CPU still ran the kernel's code and took interrupts through its IDT in that "
                f"block (the kernel skipped it: {seen['block_bytes']} byte(s) left, the COS's next free "
                f"page {seen['next_free']:#x}); free it after the COS has left it")
    if seen["block_bytes"] or seen["next_free"] != start:
        return (f"the kernel's block {start:#x}-{end:#x} was not freed: {seen['block_bytes']} byte(s) "
                f"not cleared, the COS's next free page {seen['next_free']:#x} (before the load: "
                f"{start:#x}); \"free\" gives it back")
    inside = [t for t in ("gdtr", "idtr", "esp") if _inside(seen, seen[t])]
    if inside or seen["gates_inside"]:
        return f"something the COS can reach still points into the freed block: {inside or seen['gates_inside']}"
    if seen["differences"]:
        return ("the COS's state differs from before the load:\n  " + "\n  ".join(seen["differences"][:6]))
    return None


CHECKS = [("COS at CPL 0, own tables, code unpatched", 2, check_cpl0),
          ("PIC masks, pending key, SCSI, console, CPU 1", 2, check_devices),
          ("kernel removed, COS as before the load", 1, check_removed)]
FUNCTION = "reinstatement_order"
