"""The machine of notebook 03: the devices the COS handed over, their three
classes, and what each class means on the machine (claims 5-8, 31-32, 44).

Everything reported here is read back from the machine: the I/O permission
bitmap from the kernel TSS in emulated memory, the IRQ routes from the
kernel's router, the console from the UART, the order of SCSI requests from
the trace. Nothing is inferred from the policy that was asked for.
"""
import pathlib
import struct
import tempfile

from vmkit.hw.board import SCSI_PORT
from vmkit.hw.disk import DiskImage
from vmkit.hw.x86 import TSS_IOMAP_BASE
from vmkit.kernel import layout
from vmkit.kernel.devices import CLASSES, DEFAULT_POLICY, ClassificationError
from vmkit.kernel.traps import PIC_PORTS
from . import interrupts

BLOCK = 512
DISK_SECTORS = 64

# what a COS access to a device's ports does, read from the bitmap
DIRECT = "directly"
REFUSED = "traps → refused"
SERVED = "traps → the kernel serves it"
VIRTUAL_PIC = "traps → the kernel's virtual PIC"
MIXED = "some ports directly, some trap"


# ---- the machine ------------------------------------------------------------------
def scratch_disk(sectors=DISK_SECTORS):
    """A fresh disk image in a scratch folder (/tmp/vmkit-*/disk.img)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="vmkit-")) / "disk.img"
    return DiskImage.create(path, sectors)


def machine(sectors=DISK_SECTORS, nics=1):
    """A displaced COS on a board with a SCSI disk and a NIC: (board, cos, kernel)."""
    return interrupts.displaced(disk=scratch_disk(sectors), nics=nics)


def handover_text(board, kernel):
    """The `kernel.handover` event and the list as the kernel holds it."""
    lines = [str(e) for e in board.trace.of("kernel.handover")]
    lines.append(f"{'device':8} {'ports':15} {'IRQ':>4}  class")
    for d in kernel.devices:
        ports = f"{d.base:#x}-{d.base + d.count - 1:#x}"
        irq = "-" if d.irq is None else str(d.irq)
        lines.append(f"{d.name:8} {ports:15} {irq:>4}  {kernel.classes.get(d.name, '?')}")
    return "\n".join(lines)


# ---- policies ---------------------------------------------------------------------
def policy_of(kernel):
    """The classification in force, as a policy {class: [device names]}."""
    return {cls: [d.name for d in kernel.devices if kernel.classes.get(d.name) == cls] for cls in CLASSES}


def moved(policy, name, cls):
    """A copy of `policy` with device `name` moved to class `cls` (out of every other)."""
    out = {c: [n for n in members if n != name] for c, members in policy.items()}
    out.setdefault(cls, []).append(name)
    return out


def default_policy(kernel):
    """The kernel's default policy, for the devices this machine has."""
    names = {d.name for d in kernel.devices}
    policy = {cls: [n for n in members if n in names] for cls, members in DEFAULT_POLICY.items()}
    known = {n for members in policy.values() for n in members}
    policy["host-managed"] += [d.name for d in kernel.devices if d.name not in known]
    return policy


def try_policy(kernel, policy):
    """Apply `policy`; (True, classes) or (False, the kernel's refusal). On a
    refusal the kernel keeps the classification it had."""
    try:
        return True, kernel.apply_policy(policy)
    except ClassificationError as e:
        return False, str(e)


# ---- consequences, read from the machine --------------------------------------------
def io_bitmap(kernel):
    """The I/O permission bitmap the CPU checks for the COS, read from the kernel's
    TSS in emulated memory (at the TSS's own I/O-map-base offset: TSS_SIZE)."""
    tss = kernel.base + layout.TSS
    start = tss + kernel.memory.read_u16(tss + TSS_IOMAP_BASE)
    return kernel.memory.read(start, 65536 // 8 + 1)


def port_granted(bitmap, port):
    """A clear bit lets the COS (CPL 1) use the port; a set bit makes it trap (#GP)."""
    return not bitmap[port // 8] >> (port % 8) & 1


def port_access(kernel, device, bitmap=None):
    """What a COS `in`/`out` to the device's ports does now."""
    bitmap = io_bitmap(kernel) if bitmap is None else bitmap
    granted = [port_granted(bitmap, p) for p in device.ports]
    if all(granted):
        return DIRECT
    if any(granted):
        return MIXED
    if all(p in PIC_PORTS for p in device.ports):
        return VIRTUAL_PIC                      # traps.py keeps a virtual PIC for the COS
    front, _ = kernel.shared_at(device.base)
    return SERVED if front is not None else REFUSED


def irq_route(kernel, device):
    """Where the device's IRQ goes now, from the kernel's router (irq.py)."""
    if device.irq is None:
        return "-"
    irqs = kernel.irqs
    route = irqs.routes.get(device.irq, "host-managed")
    if route == "host-managed":
        if device.irq in irqs.storms:
            return "the kernel, which masked it for good (a storm)"
        return ("the COS through the kernel (masked until the COS's EOI)" if irqs.masking
                else "the COS through the kernel (masking switched off)")
    if route == "shared":
        if device.irq in irqs.shared:
            return "the kernel, forwarded when it is the COS's"
        return "the kernel, forwarded to the COS"
    if device.irq == 0:
        return "the kernel (it gives the COS a virtual tick)"
    return "the kernel"


def consequences(kernel):
    """[(device, class, what COS port accesses do, where its IRQ goes)], all read now."""
    bitmap = io_bitmap(kernel)
    return [(d, kernel.classes.get(d.name, "?"), port_access(kernel, d, bitmap), irq_route(kernel, d))
            for d in kernel.devices]


def consequences_text(kernel):
    rows = [f"{'device':8} {'class':13} {'COS reaches its ports':30} its IRQ goes to"]
    for d, cls, access, irq in consequences(kernel):
        rows.append(f"{d.name:8} {cls:13} {access:30} {irq}")
    return "\n".join(rows)


def console_tail(cos, lines=4):
    return "\n".join(cos.console().rstrip("\n").splitlines()[-lines:])


def run_and_watch(board, cos, instructions=300_000):
    """Run; (characters the COS printed meanwhile, kernel.refused events meanwhile)."""
    before, mark = len(cos.console()), board.trace.mark()
    board.run(instructions)
    return len(cos.console()) - before, board.trace.since(mark, "kernel.refused")


def refused_summary(events):
    """kernel.refused events counted by instruction: "out 0x3f8 ×12, in 0x3fd ×12"."""
    counts = {}
    for e in events:
        counts[e["insn"]] = counts.get(e["insn"], 0) + 1
    return ", ".join(f"{insn} ×{n}" for insn, n in counts.items()) or "none"


# ---- the shared SCSI controller (claims 6-7, 32) --------------------------------------
COS_RB = 0x2000                   # the COS driver's request block and status word (COS memory)
COS_STATUS = 0x5004


def scsi_driver(op, lba, blocks, buf, after="ret", rb=COS_RB, status=COS_STATUS):
    """x86 for a COS module: build a READ(10) (op 0x28) / WRITE(10) (0x2A) request
    block at `rb`, ring the controller's doorbell, poll STATUS until DONE, keep
    the status at `status`, clear DONE, then `after`. Prefix it with "init:".
    Numbers are written in hex so any assembler radix reads them alike."""
    return f"""
        call ring
        mov dx, {SCSI_PORT + 8:#x}
    poll:
        in eax, dx
        test eax, 2
        jz poll
        mov [{status:#x}], eax
        mov eax, 2
        out dx, eax
        {after}
    {ring_source(op, lba, blocks, buf, rb)}
    """


def ring_source(op, lba, blocks, buf, rb):
    """x86 subroutine `ring`: a READ(10)/WRITE(10) request block at `rb`, then RB_ADDR
    and DOORBELL. Shared by the COS-module driver above and tests/test_scsi.py."""
    be_lba = struct.unpack("<I", struct.pack(">I", lba))[0]
    return f"""
    ring:
        mov edi, {rb:#x}
        xor eax, eax
        mov ecx, 9
        rep stosd
        mov edi, {rb:#x}
        mov byte ptr [edi], 0xa
        mov dword ptr [edi+8], {buf:#x}
        mov dword ptr [edi+0xc], {blocks * BLOCK:#x}
        mov byte ptr [edi+0x14], {op:#x}
        mov dword ptr [edi+0x16], {be_lba:#x}
        mov byte ptr [edi+0x1b], {blocks >> 8:#x}
        mov byte ptr [edi+0x1c], {blocks & 0xFF:#x}
        mov dx, {SCSI_PORT:#x}
        mov eax, edi
        out dx, eax
        mov dx, {SCSI_PORT + 4:#x}
        out dx, eax
        ret
    """


def kernel_request_block(board, rb, op, lba, buf):
    """A one-block READ(10)/WRITE(10) request block at `rb` (docs/devices.md)."""
    cdb = bytes([op, 0]) + struct.pack(">I", lba) + bytes([0, 0, 1, 0])
    board.memory.write(rb, struct.pack("<BBBBBBHIII", 10, 0, 0xFF, 0, 0, 0, 0, buf, BLOCK, 0)
                       + cdb.ljust(16, b"\0"))


READ10, WRITE10 = 0x28, 0x2A
KERNEL_BUFS, KERNEL_RBS = 0x60000, 0x61000       # the kernel's own buffers and request blocks
KERNEL_LBAS = (10, 11, 12, 13, 14, 15)   # long enough that the COS rings while they go


def share_scsi(board, cos, kernel, run=300_000):
    """Claims 6-7, 32: the kernel and the COS both use the one SCSI controller.

    The kernel queues writes of its own (blocks 10-15); while they are still
    going, a COS driver (an insmod'ed module polling the controller's
    registers, which trap to the kernel) writes block 5, and another reads it
    back; the kernel then reads its blocks back. Returns what the machine did:
    the share_start/share_done events in order, with the COS's trapped
    doorbells between them, and whether every block read back what was written."""
    from vmkit.lessons.takeover import run_module
    scsi = kernel.shared["scsi0"]
    mark = board.trace.mark()
    pattern = bytes(range(256)) * 2
    board.memory.write(0x7000, pattern)
    board.memory.write(0x7400, bytes(BLOCK))
    done = []
    for i, lba in enumerate(KERNEL_LBAS):
        buf, rb = KERNEL_BUFS + i * BLOCK, KERNEL_RBS + i * 64
        board.memory.write(buf, bytes([0xA0 + i]) * BLOCK)
        kernel_request_block(board, rb, WRITE10, lba, buf)
        scsi.submit(rb, done.append)
    run_module(board, cos, "init:\n" + scsi_driver(WRITE10, 5, 1, 0x7000))
    run_module(board, cos, "init:\n" + scsi_driver(READ10, 5, 1, 0x7400))
    for i, lba in enumerate(KERNEL_LBAS):
        rb, buf = KERNEL_RBS + 0x1000 + i * 64, KERNEL_BUFS + 0x3000 + i * BLOCK
        kernel_request_block(board, rb, READ10, lba, buf)
        scsi.submit(rb, done.append)
    board.run(run)
    kernel_ok = all(board.memory.read(KERNEL_BUFS + 0x3000 + i * BLOCK, BLOCK) == bytes([0xA0 + i]) * BLOCK
                    for i in range(len(KERNEL_LBAS)))
    events = [e for e in board.trace.since(mark, "scsi.share_start", "scsi.share_done", "kernel.emulate")
              if e.kind != "kernel.emulate" or e["insn"] == f"out {SCSI_PORT + 4:#x}"]
    # the kernel logs an emulated doorbell after serving it: show it before the start it caused
    cos_traps = [e for e in board.trace.since(mark, "kernel.emulate") if e.data.get("what") == "shared device"]
    return {
        "events": sorted(events, key=lambda e: (e.time, e.kind != "kernel.emulate")),
        "completed": dict(scsi.completed),
        "kernel callbacks": len(done),
        "COS read back its block": board.memory.read(0x7400, BLOCK) == pattern,
        "kernel read back its blocks": kernel_ok,
        "COS register accesses trapped": len(cos_traps),
        "doorbells rung while busy": board.scsi.ignored_doorbells,
    }


def share_scsi_text(result):
    lines = [str(e) for e in result["events"]]
    lines += [f"{k}: {v}" for k, v in result.items() if k != "events"]
    return "\n".join(lines)
