"""Grades exercise 10: the learner's resolve is the kernel's block resolution
(Vdisks.resolver) on a machine whose VMs read and write their VDISKs. The
disk is prepared with the tools (the reference library): a pattern in chosen
blocks of a direct file at its most (256 blocks), of a file with one pointer
block (300 blocks) and of one with two (1100 blocks; its pointer blocks are
numbers 1 and 2, not the descriptor's indices 0 and 1). The guests' SCSI
drivers read those blocks back and compare (x86 at CPL 3): a block resolved to
the wrong place reads the wrong bytes, an address that is not a file block fails
the guest's request. Guests then write never-written (TBZ) blocks, and the tools
read the disk back. A failure names the first block whose address came back
wrong, and why it likely did."""
import tempfile

from vmkit.grading import limit
from vmkit.hw.disk import DiskImage
from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vdisk import Vdisks
from vmkit.kernel.vmfs_errors import VmfsError
from vmkit.kernel.vmfs import Volume, block_address
from vmkit.kernel.vmfs_disk import add_partition, find
from vmkit.lessons import vmfs as lesson
from vmkit.vmm.disk_guest import pattern

BS = 4096
# small: a direct file at its most (256 blocks: one more and it needs a pointer block);
# mid: one pointer block, created before big, so big's pointer blocks are numbers 1 and 2,
# never equal to the descriptor's index block // 1024 that names them.
SMALL, MID, BIG = ("small.vmdk", 256), ("mid.vmdk", 300), ("big.vmdk", 1100)
SMALL_BLOCKS = (0, 1, 17, 255)
MID_BLOCKS = (0, 255, 256, 299)
BIG_BLOCKS = (0, 1, 255, 256, 257, 1023, 1024, 1099)
WRITTEN = (3, 300, 1030)                     # blocks of big.vmdk the guest writes (never written: TBZ)
WRITTEN_SMALL = (100,)                       # and of small.vmdk


def seed(name, block):
    return {SMALL[0]: 0x1000, MID[0]: 0x3000}.get(name, 0x2000) + block


def _disk(folder):
    path = f"{folder}/disk.img"
    with DiskImage.create(path, 16384) as image:
        vol = Volume.mkfs(add_partition(image), block_size=BS, fds=8)
        for (name, blocks), chosen in ((SMALL, SMALL_BLOCKS), (MID, MID_BLOCKS), (BIG, BIG_BLOCKS)):
            vol.create(name, blocks * BS)
            for b in chosen:
                vol.write(name, b * BS, pattern(seed(name, b), b * 8, 8))
    return path


def _call(fd, block, pointer_block):
    return f"your resolve, called for VDISK block {block} of a file of {fd.blocks} block(s),"


def _machine(resolve, folder):
    board, kernel = lesson.boot(_disk(folder))
    Vdisks.of(kernel).resolver = resolve
    return board, kernel


def _verify_steps(name, blocks):
    return [("verify", b * 8, 8, seed(name, b)) for b in blocks]


def _describe(address):
    if type(address) is not int:                 # a float equal to the address, True, a tuple ...
        return f"{address!r:.60} (a {type(address).__name__}, not an int)"
    try:
        if address and A.kind(address) == A.NONE:
            return f"{address:#010x} (type 0: names no block)"
        return f"{A.describe(address)} ({address:#010x})"
    except Exception:
        return repr(address)


def _metadata(vdisk):
    """(fd, pointer_block) of an attached VDISK, as the kernel holds them now."""
    return vdisk.fd, vdisk.pointer_block


def _on_disk(path, name):
    """(fd, pointer_block) of a file as the tools find it on the disk image."""
    with DiskImage.open(path, readonly=True) as image:
        vol = Volume.open(find(image))
        fd = vol.descriptor(name)[1]
        pbs = {A.number(a): vol.pointer_block(A.number(a)) for a in fd.addresses[:fd.pointer_blocks]}
    return fd, pbs.__getitem__


def _why(resolve, name, metadata, blocks):
    """The first of `blocks` whose address comes back wrong, and the likely cause.
    metadata: (fd, pointer_block) the learner's resolve is asked with, and the reference too."""
    fd, source = metadata
    numbers = [A.number(a) for a in fd.addresses[:fd.pointer_blocks]]

    def pb(p):                                   # as the kernel's Vdisk.pointer_block refuses one
        if p not in numbers:
            raise VmfsError(f"VDISK {name}", f"pointer block {p!r:.40} is not one of this file's ({numbers})")
        return source(p)
    want = {b: block_address(fd, b, pb) for b in blocks}
    got = {}
    for b in blocks:
        try:
            got[b] = resolve(fd, b, pb)
        except limit.Stopped as e:
            return str(e)
        except Exception as e:
            got[b] = e
    wrong = [b for b in blocks if type(got[b]) is not int or got[b] != want[b]]
    if not wrong:
        return None
    b = wrong[0]
    where = (f"VDISK block {b} of {name} (pointer block {A.number(fd.addresses[b // 1024])}, "
             f"entry {b % 1024})" if fd.pointer_blocks else f"VDISK block {b} of {name} (direct)")
    answer = (f"as {type(got[b]).__name__}: {got[b]}" if isinstance(got[b], Exception)
              else _describe(got[b]))
    head = f"{where} came back {answer}, expected {_describe(want[b])}"
    indirect = bool(fd.pointer_blocks)
    if not isinstance(got[b], Exception) and type(got[b]) is not int:
        return f"{head}: return the address as an int, as stored"
    if isinstance(got[b], int) and got[b] ^ want[b] == A.FB_TBZ:
        return (f"{head}: the right block with bit 5 (TBZ, to be zeroed) {'cleared' if want[b] & A.FB_TBZ else 'set'}. "
                "Return the address as stored, bit 5 included: the kernel reads a TBZ block as zeros "
                "(never written, whatever the disk holds there), and after its first write clears the bit "
                "in the file's metadata; it follows the bit you return")
    if indirect and isinstance(got[b], VmfsError) and "is not one of this file's" in str(got[b]):
        return (f"{head}: pointer_block(p) takes the pointer block's number, number(fd.addresses[block // "
                f"1024]): here the descriptor names pointer block(s) {numbers}, not "
                "the address itself nor the index block // 1024")
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
                                        or got[b] & ~A.TYPE_MASK == want[b] & ~A.TYPE_MASK
                                        or got[b] >> A.FB_SHIFT == want[b]):
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
                return (_why(resolve, name, _metadata(vdisk), blocks)
                        or f"the guest read wrong bytes in block {bad[0]}: {lines}")
        finally:
            board.close()
    return None


def _attempted(resolve):
    """An untouched stub raises NotImplementedError here, outside the machine: "not attempted"."""
    try:
        resolve(_probe_fd(), 0, lambda p: (0,) * 1024)
    except (NotImplementedError, limit.Stopped):
        raise
    except Exception:
        pass                                     # a real bug: the machine will show it


def _bounded(check):
    """The learner's resolve, stopped and named if a call does not return (limit.py); an untouched
    stub is "not attempted"."""
    def run(resolve):
        resolve = limit.bounded(resolve, _call)
        try:
            _attempted(resolve)
            return check(resolve)
        except limit.Stopped as e:
            return str(e)
    run.__name__ = check.__name__
    return run


@_bounded
def check_direct(resolve):
    return _reads(resolve, SMALL[0], SMALL_BLOCKS)


@_bounded
def check_indirect(resolve):
    return _reads(resolve, MID[0], MID_BLOCKS) or _reads(resolve, BIG[0], BIG_BLOCKS)


@_bounded
def check_writes(resolve):
    return _writes(resolve, BIG[0], WRITTEN) or _writes(resolve, SMALL[0], WRITTEN_SMALL)


def _writes(resolve, name, written):
    steps = []
    for b in written:
        steps += [("write", b * 8, 8, 0x7000 + b), ("verify", b * 8, 8, 0x7000 + b)]
    with tempfile.TemporaryDirectory() as folder:
        board, kernel = _machine(resolve, folder)
        path = f"{folder}/disk.img"
        before = _on_disk(path, name)            # the file's metadata before the guest's writes
        try:
            world, lines = lesson.run_vm(board, kernel, "vm", name, steps)
            if any(not (line.startswith("vm wrote") or line.endswith(" ok")) for line in lines[:-1]):
                return _why(resolve, name, before, written) or f"the guest's writes failed: {lines}"
        finally:
            board.close()
        with DiskImage.open(path, readonly=True) as image:     # where the tools find each block
            vol = Volume.open(find(image))
            for b in written:
                if vol.read(name, b * BS, BS) != pattern(0x7000 + b, b * 8, 8):
                    return _why(resolve, name, before, written) or (f"VDISK block {b} of {name}: the guest read back what it wrote, but the "
                                   f"disk holds it elsewhere than the file's metadata says")
    return None


def _probe_fd():
    from vmkit.kernel.vmfs_format import FileDescriptor
    return FileDescriptor(blocks=1, length=BS, addresses=(A.fb(0),) + (0,) * 255)


CHECKS = [("a direct VDISK (256 blocks: the most) reads", 2, check_direct),
          ("through pointer blocks (300 and 1100 blocks)", 3, check_indirect),
          ("a guest's writes land in the file's blocks", 2, check_writes)]
FUNCTION = "resolve"
