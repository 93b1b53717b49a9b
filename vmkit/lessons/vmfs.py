"""What notebook 10 shows of VMFS, read from the disk's bytes (claims 23, 43).

`file_map` decodes one file's descriptor and pointer blocks straight from
the volume's sectors (not from the library's copy), so a diagram drawn from
it shows what is on the disk now; `path` is the walk of one VDISK block.
"""
from pathlib import Path

from vmkit.hw.disk import DiskImage
from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import MemoryDisk, add_partition, find
from vmkit.kernel.vmfs_format import FD_SIZE, PB_ADDRESSES, PB_SIZE, SECTOR, FileDescriptor, PointerBlock
from vmkit.kernel.vmfs_fsck import fsck
from vmkit.lessons.takeover import takeover
from vmkit.vmm import disk_guest
from vmkit.vmm.vdisk_device import install_vm_with_vdisk


def file_map(vol, name, show=6, also=()):
    """{'descriptor': n, 'fd': FileDescriptor, 'pointer_blocks': [(p, [(i, address)])],
    'blocks': [(b, address, disk_sector)]}: the blocks shown are the first `show`, the last,
    and those in `also` (a highlighted block); the rest are counted in 'hidden'."""
    n, _ = vol.descriptor(name)
    fd = FileDescriptor.unpack(vol._read(vol.sb.fd_table + n * FD_SIZE, FD_SIZE))
    wanted = sorted({b for b in (*range(min(show, fd.blocks)), fd.blocks - 1, *also)
                     if 0 <= b < fd.blocks})
    pointer_blocks, blocks = [], []
    if fd.pointer_blocks:
        for i in sorted({b // PB_ADDRESSES for b in wanted}):
            p = A.number(fd.addresses[i])
            entries = PointerBlock.unpack(vol._read(vol.sb.pb_table + p * PB_SIZE, PB_SIZE)).addresses
            shown = [(b % PB_ADDRESSES, entries[b % PB_ADDRESSES]) for b in wanted
                     if b // PB_ADDRESSES == i]
            pointer_blocks.append((i, p, shown))
            blocks += [(i * PB_ADDRESSES + j, address) for j, address in shown]
    else:
        blocks = [(b, fd.addresses[b]) for b in wanted]
    first = getattr(vol.device, "first", 0)
    blocks = [(b, address, first + (vol.sb.fb_area + A.number(address) * vol.bs) // SECTOR)
              for b, address in blocks]
    return {"descriptor": n, "fd": fd, "pointer_blocks": pointer_blocks, "blocks": blocks,
            "hidden": fd.blocks - len(blocks)}


def path(vol, name, block):
    """The steps from a VDISK block to its disk sector, as text lines."""
    r = vol.resolve(name, block)
    steps = [f"VDISK block {block} of '{name}'",
             f"descriptor {r.descriptor}: addresses[{r.fd_index}] = "
             + (A.describe(A.pb(r.pointer_block)) if r.pointer_block is not None else A.describe(r.address))]
    if r.pointer_block is not None:
        steps.append(f"pointer block {r.pointer_block}: addresses[{r.pb_index}] = {A.describe(r.address)}")
    steps.append(f"file block {r.file_block} = disk sector {r.disk_sector}"
                 + (" (TBZ: reads as zeros)" if r.tbz else ""))
    return steps


# ---- a live machine: a VM and its VDISK ---------------------------------------------------------
BLOCK = 4096                    # small blocks, so a VDISK of a megabyte or two needs pointer blocks


def disk_with_vmfs(folder, sectors=16384, block_size=BLOCK):
    """A disk image file with a VMFS partition, made as the tools make it (`./kit vmfs mkfs`)."""
    path = Path(folder) / "disk.img"
    with DiskImage.create(path, sectors, overwrite=True) as image:
        Volume.mkfs(add_partition(image), block_size=block_size, fds=8, label="notebook 10")
    return path


def boot(path):
    """The COS booted on that disk, the kernel loaded: (board, kernel)."""
    board, cos, loader = takeover(disk=DiskImage.open(path))
    return board, loader.kernel


def run_vm(board, kernel, name, vdisk, steps, vdisk_bytes=None, limit=40):
    """Install a VM whose guest runs `steps` (vmm/disk_guest.py) on the VDISK `vdisk`, run the
    machine until it prints "done"; returns (world, its console lines)."""
    world = install_vm_with_vdisk(kernel, disk_guest.program(name, steps), disk_guest.MEMORY,
                                  name, vdisk, vdisk_bytes)
    for _ in range(limit):
        if b" done" in world.vmm.console or world.state == "crashed":
            break
        board.run(100_000)
    return world, bytes(world.vmm.console).decode().splitlines()


def guest_sector(vol, name, sector):
    """Where a guest's sector of VDISK `name` is: its VDISK block, then the walk to the disk."""
    block, offset = divmod(sector * SECTOR, vol.bs)
    r = vol.resolve(name, block)
    return ([f"guest sector {sector} = byte {sector * SECTOR} of the VDISK = block {block}, "
             f"byte {offset} in it"] + path(vol, name, block)[1:]
            + [f"the guest's sector is disk sector {r.disk_sector + offset // SECTOR}"])


# ---- the crash demo: a power cut in the middle of a grow ----------------------------------------
class PowerCut(Exception):
    """The disk lost power: the write that would have been next never happens."""


class CuttingDisk(MemoryDisk):
    """A disk in memory that loses power before write number `budget` (None: never)."""
    def __init__(self, data, budget):
        super().__init__(len(data) // SECTOR, data)
        self.budget, self.writes = budget, 0

    def write(self, lba, data):
        if self.budget is not None and self.writes >= self.budget:
            raise PowerCut()
        self.writes += 1
        super().write(lba, data)


def crash_mid_grow(block_size=BLOCK, cut=None):
    """A file of 200 blocks grows to 1100 (direct -> pointer blocks); the power is cut before
    write `cut` of the grow (default: the middle one). Returns a dict: the writes the grow makes,
    where it was cut, the file as the volume shows it after, fsck's report, its repair, and a
    second fsck's verdict."""

    disk = MemoryDisk(30000)
    vol = Volume.mkfs(add_partition(disk), block_size=block_size, fds=8)
    vol.create("grow", 200 * block_size)
    vol.write("grow", 0, b"G" * block_size)
    image = bytes(disk.data)
    counting = CuttingDisk(image, None)
    Volume.open(find(counting)).resize("grow", 1100 * block_size)
    writes = counting.writes
    cut = writes // 2 if cut is None else cut
    cut_disk = CuttingDisk(image, cut)
    try:
        Volume.open(find(cut_disk)).resize("grow", 1100 * block_size)
    except PowerCut:
        pass
    cut_disk.budget = None
    after = Volume.open(find(cut_disk)).stat("grow")
    report = fsck(find(cut_disk))
    repaired = fsck(find(cut_disk), repair=True)
    again = fsck(find(cut_disk))
    first_block = Volume.open(find(cut_disk)).read("grow", 0, 4)
    return {"writes": writes, "cut": cut, "before": 200, "after": after, "report": report.lines(),
            "repaired": repaired.lines(), "clean": again.clean, "data": first_block}


def crash_text(r):
    """crash_mid_grow's result, as lines to read."""
    a = r["after"]
    return "\n".join([f"the grow makes {r['writes']} writes; the power was cut before write {r['cut'] + 1}",
                      f"after the cut: '{a.name}' is {a.length} bytes, {a.blocks} blocks, "
                      f"{a.pointer_blocks} pointer blocks "
                      f"({'as before' if a.blocks == r['before'] else 'as after'} the grow)",
                      "fsck:"] + [f"  {line}" for line in r["report"] or ["clean"]]
                     + ["fsck --repair:"] + [f"  {line}" for line in r["repaired"] or ["nothing to do"]]
                     + [f"fsck again: {'clean' if r['clean'] else 'NOT clean'}; the file's first "
                        f"bytes: {r['data']!r}"])
