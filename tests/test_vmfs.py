"""Claims 23, 43: VMFS files on a disk image, found through descriptors and pointer blocks."""
import pytest

from vmkit.hw.disk import DiskImage
from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import MemoryDisk, add_partition, find
from vmkit.kernel.vmfs_errors import BadRequest, NoSpace, NotVmfs, VmfsError
from vmkit.kernel.vmfs_format import FD_SIZE, FileDescriptor, PointerBlock, SECTOR

BS = 4096


def volume(sectors=40000, **kw):
    disk = MemoryDisk(sectors)
    return disk, Volume.mkfs(add_partition(disk), block_size=BS, fds=16, **kw)


def on_disk_descriptor(disk, vol, n):
    """Descriptor n decoded from the disk's bytes (not from the library's copy)."""
    at = vol.device.first * SECTOR + vol.sb.fd_table + n * FD_SIZE
    return FileDescriptor.unpack(bytes(disk.data[at:at + FD_SIZE]))


def on_disk_pointer_block(disk, vol, p):
    at = vol.device.first * SECTOR + vol.sb.pb_table + p * 4096
    return PointerBlock.unpack(bytes(disk.data[at:at + 4096])).addresses


def block_bytes(disk, vol, fb):
    at = vol.device.first * SECTOR + vol.sb.fb_area + fb * BS
    return bytes(disk.data[at:at + BS])


def test_a_small_file_names_its_blocks_directly_in_its_descriptor():
    disk, vol = volume()
    n = vol.create("vm1.vmdk", 10 * BS)
    vol.write("vm1.vmdk", 3 * BS + 7, b"pattern")
    fd = on_disk_descriptor(disk, vol, n)
    assert fd.blocks == 10 and fd.pointer_blocks == 0 and fd.name.rstrip(b"\0") == b"vm1.vmdk"
    assert all(A.kind(a) == A.FB for a in fd.addresses[:10]) and not any(fd.addresses[10:])
    r = vol.resolve("vm1.vmdk", 3)
    assert r.pointer_block is None and r.address == fd.addresses[3] and not r.tbz
    assert block_bytes(disk, vol, A.number(fd.addresses[3]))[7:14] == b"pattern"
    assert r.disk_sector * SECTOR == vol.device.first * SECTOR + vol.sb.fb_area + r.file_block * BS
    assert A.tbz(fd.addresses[4])                      # never written: reads as zeros
    assert vol.read("vm1.vmdk", 4 * BS, 16) == bytes(16)


def test_past_256_blocks_the_descriptor_points_at_pointer_blocks():
    disk, vol = volume()
    vol.create("big", 100 * BS)
    vol.write("big", 5 * BS, b"early")
    vol.resize("big", 300 * BS)                         # past the 256 direct addresses
    n, _ = vol.descriptor("big")
    fd = on_disk_descriptor(disk, vol, n)
    assert fd.pointer_blocks == 1 and A.kind(fd.addresses[0]) == A.PB and not any(fd.addresses[1:])
    entries = on_disk_pointer_block(disk, vol, A.number(fd.addresses[0]))
    assert all(A.kind(a) == A.FB for a in entries[:300]) and not any(entries[300:])
    vol.write("big", 299 * BS, b"late")
    r = vol.resolve("big", 299)
    assert r.pointer_block == A.number(fd.addresses[0]) and r.pb_index == 299
    assert block_bytes(disk, vol, r.file_block)[:4] == b"late"
    assert vol.read("big", 5 * BS, 5) == b"early"        # the old blocks moved into pointer block 0


def test_a_file_needing_several_pointer_blocks():
    disk, vol = volume()
    vol.create("huge", 2500 * BS)                        # 3 pointer blocks
    for b in (0, 1023, 1024, 2047, 2048, 2499):
        vol.write("huge", b * BS, b"blk%d" % b)
    n, fd = vol.descriptor("huge")
    assert fd.pointer_blocks == 3
    for b in (0, 1023, 1024, 2047, 2048, 2499):
        r = vol.resolve("huge", b)
        assert (r.fd_index, r.pb_index) == divmod(b, 1024)
        assert block_bytes(disk, vol, r.file_block).startswith(b"blk%d" % b)
    vol.resize("huge", 1500 * BS)                        # back to 2 pointer blocks
    assert vol.stat("huge").pointer_blocks == 2 and vol.read("huge", 1024 * BS, 7) == b"blk1024"
    vol.resize("huge", 3 * BS)                           # and back to direct
    fd = on_disk_descriptor(disk, vol, n)
    assert fd.pointer_blocks == 0 and A.kind(fd.addresses[0]) == A.FB
    assert vol.read("huge", 0, 4) == b"blk0"
    assert vol.free["pb"] == vol.sb.pb_count and vol.free["fb"] == vol.sb.fb_count - 3


def test_reopened_volume_sees_files_and_two_files_never_share_a_block():
    disk, vol = volume()
    vol.create("a", 300 * BS)
    vol.create("b", 20 * BS)
    vol.write("a", 0, b"A" * BS * 300)
    vol.write("b", 0, b"B" * BS * 20)
    again = Volume.open(find(disk))
    assert [(f.name, f.blocks) for f in again.ls()] == [("a", 300), ("b", 20)]
    blocks = {f: {again.resolve(f, b).file_block for b in range(again.stat(f).blocks)} for f in "ab"}
    assert len(blocks["a"]) == 300 and not blocks["a"] & blocks["b"]
    assert again.read("a") == b"A" * BS * 300 and again.read("b") == b"B" * BS * 20
    again.delete("a")
    assert [f.name for f in again.ls()] == ["b"] and again.read("b") == b"B" * BS * 20


def test_a_disk_that_is_not_vmfs_is_refused_by_name(tmp_path):
    blank = MemoryDisk(4096)
    with pytest.raises(NotVmfs, match="blank: no partition table"):
        find(blank)
    other = MemoryDisk(4096)
    other.write(0, b"\xeb\x3c\x90MSDOS5.0" + bytes(501))
    with pytest.raises(NotVmfs, match="not a partition table"):
        find(other)
    with pytest.raises(NotVmfs, match="not a partition table"):   # mkfs will not overwrite it
        add_partition(other)
    disk = MemoryDisk(8192)
    part = add_partition(disk)
    with pytest.raises(NotVmfs, match=r"superblock \(magic\): magic 0x00000000 is not VMFS's"):
        Volume.open(part)


def test_cos_data_outside_the_partition_survives(tmp_path):
    path = tmp_path / "disk.img"
    with DiskImage.create(path, 60000) as disk:
        # the COS's own partition (type 0x83) and a boot area before it, with data in both
        from vmkit.kernel.vmfs_format import Mbr, PartitionEntry
        cos = PartitionEntry(type=0x83, lba_first=2048, sectors=8192)
        disk.write(0, Mbr(bootstrap=b"COSBOOT".ljust(446, b"\x90"),
                          partitions=cos.pack() + bytes(48), signature=0xAA55).pack())
        cos_data = {lba: bytes([lba & 0xFF]) * SECTOR for lba in (1, 100, 2047, 2048, 5000, 10239)}
        for lba, data in cos_data.items():
            disk.write(lba, data)
        part = add_partition(disk)
        assert part.first >= 2048 + 8192
        vol = Volume.mkfs(part, block_size=BS, fds=16)
        vol.create("vm", 200 * BS)
        vol.resize("vm", 1200 * BS)
        vol.write("vm", 0, b"\xAB" * 1200 * BS)
        vol.delete("vm")
        for lba, data in cos_data.items():
            assert disk.read(lba, 1) == data
        assert disk.read(0, 1)[:7] == b"COSBOOT"
        with pytest.raises(BadRequest, match="overlap an existing partition"):
            add_partition(disk, first=4096, sectors=100)


def test_bad_requests_are_clear_and_leave_the_volume_as_it_was():
    disk, vol = volume()
    vol.create("a", BS)
    before = bytes(disk.data)
    for call, match in ((lambda: vol.create("a", 1), "already exists"),
                        (lambda: vol.create("x/y", 1), "without '/'"),
                        (lambda: vol.create("b", -1), "whole number"),
                        (lambda: vol.read("nope"), "no such file"),
                        (lambda: vol.write("a", BS - 1, b"xy"), "outside its 4096 bytes"),
                        (lambda: vol.resolve("a", 1), "outside its 1 blocks"),
                        (lambda: vol.create("b", 10 ** 9), "wanted")):
        with pytest.raises(VmfsError, match=match):
            call()
    assert bytes(disk.data) == before
    with pytest.raises(NoSpace, match=r"FB bitmap: \d+ file blocks wanted"):
        vol.create("b", 10 ** 9)


def test_bytes_past_a_truncated_end_read_as_zeros_after_a_grow():
    disk, vol = volume()
    vol.create("f", 10_000)
    vol.write("f", 0, b"x" * 10_000)
    vol.resize("f", 5_000)
    vol.resize("f", 12_000)
    assert vol.read("f") == b"x" * 5_000 + bytes(7_000)


def test_extents_name_the_disk_bytes_and_the_zero_runs():
    disk, vol = volume()
    vol.create("f", 4 * BS)
    vol.write("f", BS, b"y" * 2 * BS)
    runs = vol.extents("f")
    assert [length for _, length in runs] == [BS, 2 * BS, BS]
    assert runs[0][0] is None and runs[2][0] is None
    at = vol.device.first * SECTOR + runs[1][0]
    assert bytes(disk.data[at:at + 2 * BS]) == b"y" * 2 * BS


def test_a_grow_that_does_not_fit_leaves_every_byte_as_it_was():
    disk, vol = volume()
    vol.create("f", 5000)
    vol.write("f", 0, b"z" * 5000)
    vol.resize("f", 3000)
    before = bytes(disk.data)
    with pytest.raises(NoSpace, match="file blocks wanted"):
        vol.resize("f", 10 ** 9)
    assert bytes(disk.data) == before
