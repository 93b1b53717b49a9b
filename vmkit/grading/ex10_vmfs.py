"""Grades exercise 10: the learner's resolve is the kernel's block resolution
(Vdisks.resolver) on a machine whose VMs read and write their VDISKs. The
disk is prepared with the tools (the reference library): a pattern in chosen
blocks of a direct file (40 blocks) and of a file with two pointer blocks
(1100 blocks). The guests' SCSI drivers read those blocks back and compare
(x86 at CPL 3): a block resolved to the wrong place reads the wrong bytes,
an address that is not a file block fails the guest's request. A failure
names the first block whose address came back wrong, and why it likely did."""
import tempfile

from vmkit.hw.disk import DiskImage
from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vdisk import Vdisks
from vmkit.kernel.vmfs import Volume, block_address
from vmkit.kernel.vmfs_disk import add_partition, find
from vmkit.lessons import vmfs as lesson
from vmkit.vmm.disk_guest import pattern

BS = 4096
SMALL, BIG = ("small.vmdk", 40), ("big.vmdk", 1100)
SMALL_BLOCKS = (0, 1, 17, 39)
BIG_BLOCKS = (0, 1, 255, 256, 257, 1023, 1024, 1099)
WRITTEN = (3, 300, 1030)                     # blocks of big.vmdk the guest writes


def seed(name, block):
    return (0x1000 if name == SMALL[0] else 0x2000) + block


def _disk(folder):
    path = f"{folder}/disk.img"
    with DiskImage.create(path, 16384) as image:
        vol = Volume.mkfs(add_partition(image), block_size=BS, fds=8)
        for (name, blocks), chosen in ((SMALL, SMALL_BLOCKS), (BIG, BIG_BLOCKS)):
            vol.create(name, blocks * BS)
            for b in chosen:
                vol.write(name, b * BS, pattern(seed(name, b), b * 8, 8))
    return path


def _machine(resolve, folder):
    board, kernel = lesson.boot(_disk(folder))
    Vdisks.of(kernel).resolver = resolve
    return board, kernel


def _verify_steps(name, blocks):
    return [("verify", b * 8, 8, seed(name, b)) for b in blocks]


def _describe(address):
    try:
        if address and A.kind(address) == A.NONE:
            return f"{address:#010x} (type 0: names no block)"
        return f"{A.describe(address)} ({address:#010x})"
    except Exception:
        return repr(address)


def _why(resolve, vdisk, blocks):
    """The first of `blocks` whose address comes back wrong, and the likely cause."""
    fd, pb = vdisk.fd, vdisk.pointer_block
    want = {b: block_address(fd, b, pb) for b in blocks}
    got = {}
    for b in blocks:
        try:
            got[b] = resolve(fd, b, pb)
        except Exception as e:
            got[b] = e
    wrong = [b for b in blocks if got[b] != want[b]]
    if not wrong:
        return None
    b = wrong[0]
    where = (f"VDISK block {b} of {vdisk.name} (pointer block {A.number(fd.addresses[b // 1024])}, "
             f"entry {b % 1024})" if fd.pointer_blocks else f"VDISK block {b} of {vdisk.name} (direct)")
    answer = (f"as {type(got[b]).__name__}: {got[b]}" if isinstance(got[b], Exception)
              else _describe(got[b]))
    head = f"{where} came back {answer}, expected {_describe(want[b])}"
    indirect = bool(fd.pointer_blocks)
    if indirect and all(got[x] == fd.addresses[x // 1024] for x in blocks):
        return (f"{head}: that is the pointer block's own address. A file of more than 256 blocks "
                "needs two steps: the descriptor names the pointer block, and the pointer block's "
                "entry block % 1024 names the file block (one level of indirection is missing)")
    if indirect and all(got[x] == fd.addresses[x] or isinstance(got[x], Exception)
                        for x in blocks if x < 256) and any(got[x] == fd.addresses[x] for x in blocks if x < 256):
        return (f"{head}: the descriptor's addresses were used as direct block addresses, but this "
                f"file has {fd.blocks} blocks (more than 256): its descriptor holds pointer block "
                "addresses (fd.pointer_blocks is not 0)")
    if not isinstance(got[b], Exception):
        for near in (b - 1, b + 1):
            if 0 <= near < fd.blocks and got[b] == block_address(fd, near, pb):
                return (f"{head}, the address of block {near}: an off-by-one in the index "
                        f"({'block % 1024 in the pointer block' if indirect else 'block in the descriptor'})")
        if isinstance(got[b], int) and (got[b] == A.number(want[b])
                                        or got[b] & ~A.TYPE_MASK == want[b] & ~A.TYPE_MASK):
            return (f"{head}: the right block with the wrong type bits: return the address as "
                    "stored (low three bits 1: a file block), not its number or other bits")
    if not indirect and isinstance(got[b], Exception):
        return (f"{head}: a file of at most 256 blocks has no pointer blocks: its descriptor's "
                "addresses are the blocks' own")
    return head


def _reads(resolve, name, blocks):
    with tempfile.TemporaryDirectory() as folder:
        board, kernel = _machine(resolve, folder)
        try:
            world, lines = lesson.run_vm(board, kernel, "vm", name, _verify_steps(name, blocks))
            vdisk = kernel.vdisks.attached[name]
            bad = [b for b, line in zip(blocks, lines) if not line.endswith(" ok")]
            if world.state == "crashed":
                return f"the VM crashed: {world.fault}"
            if len(lines) < len(blocks) + 1:
                return f"the guest did not finish: {lines}"
            if bad:
                return (_why(resolve, vdisk, blocks)
                        or f"the guest read wrong bytes in block {bad[0]}: {lines}")
        finally:
            board.close()
    return None


def _attempted(resolve):
    """An untouched stub raises NotImplementedError here, outside the machine: "not attempted"."""
    try:
        resolve(_probe_fd(), 0, lambda p: (0,) * 1024)
    except NotImplementedError:
        raise
    except Exception:
        pass                                     # a real bug: the machine will show it


def check_direct(resolve):
    _attempted(resolve)
    return _reads(resolve, SMALL[0], SMALL_BLOCKS)


def check_indirect(resolve):
    _attempted(resolve)
    return _reads(resolve, BIG[0], BIG_BLOCKS)


def check_writes(resolve):
    _attempted(resolve)
    name, steps = BIG[0], []
    for b in WRITTEN:
        steps += [("write", b * 8, 8, 0x7000 + b), ("verify", b * 8, 8, 0x7000 + b)]
    with tempfile.TemporaryDirectory() as folder:
        board, kernel = _machine(resolve, folder)
        path = f"{folder}/disk.img"
        try:
            world, lines = lesson.run_vm(board, kernel, "vm", name, steps)
            vdisk = kernel.vdisks.attached[name]
            if any(not (line.startswith("vm wrote") or line.endswith(" ok")) for line in lines[:-1]):
                return _why(resolve, vdisk, WRITTEN) or f"the guest's writes failed: {lines}"
        finally:
            board.close()
        with DiskImage.open(path, readonly=True) as image:     # where the tools find each block
            vol = Volume.open(find(image))
            for b in WRITTEN:
                if vol.read(name, b * BS, BS) != pattern(0x7000 + b, b * 8, 8):
                    return (f"VDISK block {b}: the guest read back what it wrote, but the disk "
                            f"holds it elsewhere than the file's pointer block says")
    return None


def _probe_fd():
    from vmkit.kernel.vmfs_format import FileDescriptor
    return FileDescriptor(blocks=1, length=BS, addresses=(A.fb(0),) + (0,) * 255)


CHECKS = [("a direct VDISK (40 blocks) reads right", 2, check_direct),
          ("through pointer blocks (1100 blocks, 2 PBs)", 3, check_indirect),
          ("a guest's writes land in the file's blocks", 2, check_writes)]
FUNCTION = "resolve"
