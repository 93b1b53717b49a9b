"""Claims 23, 43 over 6-7: the kernel reaches VMFS only through the shared SCSI controller,
and its requests share the one queue with the console OS's own disk traffic."""
from vmkit.hw.disk import DiskImage
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import add_partition, find
from vmkit.kernel.vmfs_scsi import ScsiDisk
from vmkit.lessons import takeover
from vmkit.lessons.devices import scsi_driver

COS_LBA, COS_BUF = 5, 0x7000


def test_kernel_vmfs_traffic_and_cos_disk_traffic_share_one_queue(tmp_path):
    path = tmp_path / "d.img"
    board, cos, loader = takeover.takeover(disk=DiskImage.create(path, 16384))
    kernel = loader.kernel
    disk = ScsiDisk(kernel)
    vol = Volume.mkfs(add_partition(disk), block_size=4096, fds=8)          # through the controller
    vol.create("vm1.vmdk", 300 * 4096)                                      # past the direct addresses
    # the COS starts its own write (sector 5, outside the VMFS partition) and does not wait ...
    board.memory.write(COS_BUF, b"COS!" * 128)
    mark = board.trace.mark()
    cos.put_module(cos.make_module("init:\n" + scsi_driver(0x2A, COS_LBA, 1, COS_BUF)))
    cos.type("insmod\n")
    # ... while the kernel writes and reads its VDISK
    vol.write("vm1.vmdk", 299 * 4096, b"VDISK block 299")
    assert vol.read("vm1.vmdk", 299 * 4096, 15) == b"VDISK block 299"
    board.run(200_000)
    owners = [e["owner"] for e in board.trace.since(mark, "scsi.share_start")]
    assert "cos" in owners and owners.count("kernel") >= 3
    first_cos = owners.index("cos")
    assert "kernel" in owners[:first_cos] and "kernel" in owners[first_cos + 1:]   # interleaved
    assert board.scsi.ignored_doorbells == 0 and kernel.shared["scsi0"].completed["cos"] == 1
    r = vol.resolve("vm1.vmdk", 299)
    board.close()
    with DiskImage.open(path) as image:                    # the bytes are on the disk image
        assert image.read(COS_LBA, 1) == b"COS!" * 128
        assert image.read(r.disk_sector, 1)[:15] == b"VDISK block 299"
        tools = Volume.open(find(image))                  # the tools' path reads the same volume
        assert tools.read("vm1.vmdk", 299 * 4096, 15) == b"VDISK block 299"
    assert disk.requests > 10


def test_a_failed_kernel_request_is_a_named_error(tmp_path):
    import pytest
    from vmkit.kernel.vmfs_scsi import ScsiError
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 4096))
    disk = ScsiDisk(loader.kernel)
    assert disk.sectors == 4096                                # from READ CAPACITY(10)
    disk.sectors = 8192                                        # believe a bigger disk than there is
    with pytest.raises(ScsiError, match=r"READ\(10\) of sectors 5000\+1: CHECK CONDITION, sense 5/21"):
        disk.read(5000, 1)
    board.close()


def test_requests_in_flight_each_have_their_own_request_block(tmp_path):
    from vmkit.hw.scsi import GOOD, READ_10, WRITE_10
    path = tmp_path / "d.img"
    board, cos, loader = takeover.takeover(disk=DiskImage.create(path, 4096))
    disk = ScsiDisk(loader.kernel)
    done = []
    bufs = [disk.buffer + i * 0x1000 for i in range(4)]       # in the kernel's own pages
    for i, buf in enumerate(bufs[:3]):                        # three writes queued at once,
        board.memory.write(buf, bytes([0x40 + i]) * 512)      # each from its own buffer
        disk.start(WRITE_10, 100 + i, 1, done.append, buffer=buf)
    disk.start(READ_10, 101, 1, done.append, buffer=bufs[3])  # and a read of the second
    board.run(100_000)
    assert [d[0] for d in done] == [GOOD] * 4
    assert board.memory.read(bufs[3], 512) == b"\x41" * 512
    board.close()
    with DiskImage.open(path) as image:
        assert [image.read(100 + i, 1)[0] for i in range(3)] == [0x40, 0x41, 0x42]


def test_the_blocking_path_keeps_several_large_requests_in_flight(tmp_path):
    from vmkit.kernel.vmfs_scsi import IN_FLIGHT, REQUEST_BYTES
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 16384))
    disk = ScsiDisk(loader.kernel)
    mark, before = board.trace.mark(), disk.requests
    data = disk.read(100, 2 * IN_FLIGHT * REQUEST_BYTES // 512)
    starts = [e for e in board.trace.since(mark, "scsi.share_start") if e["owner"] == "kernel"]
    requests = [e for e in board.trace.since(mark, "scsi.request")]
    assert disk.requests - before == len(starts) == 2 * IN_FLIGHT and len(data) == 2 * IN_FLIGHT * REQUEST_BYTES
    assert {r["blocks"] for r in requests} == {REQUEST_BYTES // 512}
    assert max(e["queued"] for e in starts) == IN_FLIGHT - 2     # the first went to the controller at once, the rest queued
    board.close()
