"""Claims 23, 43: a power cut at any write of a create, a grow or a delete leaves a volume fsck
finds consistent, or repairs after saying exactly what was wrong; damaged bytes are named."""
import random
import time

import pytest

from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import MemoryDisk, add_partition, find
from vmkit.kernel.vmfs_errors import VmfsError
from vmkit.kernel.vmfs_format import FD_SIZE, PB_SIZE, SECTOR
from vmkit.kernel.vmfs_fsck import fsck
from vmkit.lessons.vmfs import CuttingDisk, PowerCut      # the disk notebook 10 cuts too

BS = 4096
KEEP = bytes(range(256)) * (3 * BS // 256)


def base_image():
    disk = MemoryDisk(30000)
    vol = Volume.mkfs(add_partition(disk), block_size=BS, fds=16)
    vol.create("keep", 3 * BS)
    vol.write("keep", 0, KEEP)
    vol.create("grow", 200 * BS)
    vol.write("grow", 0, b"G" * BS)
    vol.write("grow", 199 * BS, b"H" * BS)
    vol.create("gone", 300 * BS)
    vol.write("gone", 299 * BS, b"D" * 10)
    return bytes(disk.data)


OPS = {
    "create": lambda v: v.create("new", 10 * BS),
    "create past the direct addresses": lambda v: v.create("new", 1100 * BS),
    "grow past the direct addresses": lambda v: v.resize("grow", 1100 * BS),
    "truncate back to direct": lambda v: v.resize("gone", 5 * BS),
    "delete": lambda v: v.delete("gone"),
    "first write of a block through a pointer block": lambda v: v.write("gone", 7 * BS, b"W" * 9),
}


def allowed_states(op):
    """What each file may look like after a cut: the state before the operation, or after it."""
    return {
        "create": {"new": {None, 10}}, "create past the direct addresses": {"new": {None, 1100}},
        "grow past the direct addresses": {"grow": {200, 1100}},
        "truncate back to direct": {"gone": {300, 5}}, "delete": {"gone": {300, None}},
    }.get(op, {})


def run(image, op, budget):
    disk = CuttingDisk(image, budget)
    try:
        OPS[op](Volume.open(find(disk)))
    except PowerCut:
        pass
    return disk


@pytest.mark.parametrize("op", OPS)
def test_a_power_cut_at_every_write_is_repaired_by_fsck(op):
    start = time.perf_counter()
    image = base_image()
    total = run(image, op, None).writes
    assert total >= 2
    for cut in range(total + 1):
        disk = MemoryDisk(len(image) // SECTOR, run(image, op, cut).data)
        part = find(disk)
        report = fsck(part, repair=True)
        for p in report.problems:       # a cut only ever leaks or leaves entries past an end
            assert p.repair in ("freed", "zeroed"), (op, cut, report.lines())
        assert fsck(part).clean, (op, cut, fsck(part).lines())
        vol = Volume.open(part)
        files = {f.name: f.blocks for f in vol.ls()}
        assert vol.read("keep") == KEEP
        for name, states in allowed_states(op).items():
            assert files.get(name) in states, (op, cut, files)
        if "grow" in files:
            assert vol.read("grow", 0, 1) == b"G" and vol.read("grow", 199 * BS, 1) == b"H"
        if files.get("gone") == 300:
            assert vol.read("gone", 7 * BS, 9) in (bytes(9), b"W" * 9)
            if files["gone"] == 300:
                assert vol.read("gone", 299 * BS, 10) == b"D" * 10
        if cut == total:
            assert report.clean                          # the finished operation needs nothing
    assert time.perf_counter() - start < 20          # bounded: ~0.2 s here, generous for a busy host


def test_a_cut_delete_reports_exactly_the_leaked_blocks():
    image = base_image()
    before = Volume.open(find(MemoryDisk(len(image) // SECTOR, image)))
    _, fd = before.descriptor("gone")
    fbs = sorted(before.resolve("gone", b).file_block for b in range(300))
    pb = A.number(fd.addresses[0])
    disk = run(image, "delete", 1)                       # only the descriptor was written
    lines = fsck(find(disk)).lines()
    assert lines == [f"FD bitmap (bit {before.descriptor('gone')[0]}): marked in use, but no file "
                     "reaches it (leaked) (repair: freed)",
                     f"PB bitmap (bit {pb}): marked in use, but no file reaches it (leaked) "
                     "(repair: freed)",
                     f"FB bitmap (bits {fbs[0]}..{fbs[-1]}): marked in use, but no file reaches "
                     "them (leaked) (repair: freed)"]


def metadata_ranges(vol):
    sb = vol.sb
    ranges = [(0, SECTOR), (sb.fd_bitmap, sb.fd_table - sb.fd_bitmap),
              (sb.fd_table, 4 * FD_SIZE)]
    for f in vol.ls():
        _, fd = vol.descriptor(f.name)
        for p in range(fd.pointer_blocks):
            ranges.append((sb.pb_table + A.number(fd.addresses[p]) * PB_SIZE, PB_SIZE))
    return ranges


def test_random_byte_flips_in_metadata_give_named_errors_never_a_traceback():
    start = time.perf_counter()
    image = base_image()
    vol = Volume.open(find(MemoryDisk(len(image) // SECTOR, image)))
    base = vol.device.first * SECTOR
    ranges = [(base + off, size) for off, size in metadata_ranges(vol)] + [(0x1BE, 66)]  # + the MBR
    rng = random.Random(1234)
    named = set()
    for trial in range(150):
        data = bytearray(image)
        for _ in range(rng.choice((1, 1, 3))):
            off, size = rng.choice(ranges)
            data[off + rng.randrange(size)] ^= 1 << rng.randrange(8)
        disk = MemoryDisk(len(data) // SECTOR, data)
        try:
            v = Volume.open(find(disk))
            for f in v.ls():
                v.read(f.name)
                v.resolve(f.name, f.blocks - 1)
            v.create("x", 300 * BS)
            v.delete("gone")
        except VmfsError as e:
            named.add(e.structure.split()[0])
            assert e.structure in str(e)
        try:
            report = fsck(find(disk), repair=True)
        except VmfsError as e:            # beyond repair: the superblock, or the partition table
            assert e.structure in ("superblock", "partition table", "disk"), e
            continue
        assert fsck(find(disk)).clean, (trial, report.lines())
        Volume.open(find(disk)).ls()
    assert {"superblock", "file"} <= named
    assert time.perf_counter() - start < 30          # ~2 s here


def test_fsck_names_unmarked_blocks_and_bits_past_the_count():
    image = base_image()
    disk = MemoryDisk(len(image) // SECTOR, image)
    vol = Volume.open(find(disk))
    keep_block = vol.resolve("keep", 1).file_block
    vol._mark("fb", [keep_block], False)                 # a block in use, marked free
    vol._mark("pb", [vol.sb.pb_count + 2], True)         # a bit past the pool's end
    lines = fsck(find(disk)).lines()
    assert lines == [f"FB bitmap (bit {keep_block}): reached by a file, but marked free "
                     "(repair: marked in use)",
                     f"PB bitmap (bit {vol.sb.pb_count + 2}): set past the bitmap's "
                     f"{vol.sb.pb_count} pointer blocks (repair: cleared)"][::-1]
    assert fsck(find(disk), repair=True).repaired and fsck(find(disk)).clean
    again = Volume.open(find(disk))
    assert again.bitmap["fb"].used(keep_block) and again.read("keep") == KEEP
