"""Claims 23, 43 end to end: a VM's VDISK is a VMFS file; its guest's driver (x86 at CPL 3)
talks to its VMM's virtual SCSI adapter; the kernel resolves block -> pointer block -> disk
block and the shared controller moves the data by DMA. Bytes are checked on the image file."""
import struct

from vmkit.hw.disk import DiskImage
from vmkit.hw.scsi import CHECK_CONDITION, FLAG_DMA_ERROR, GOOD, HARDWARE_ERROR, RB_FORMAT, RB_SIZE
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import add_partition, find
from vmkit.lessons.takeover import takeover
from vmkit.vmm import disk_guest
from vmkit.vmm.disk_guest import pattern
from vmkit.vmm.vdisk_device import VDISK_LINE, detach_vdisk, install_vm_with_vdisk

BS = 4096                       # 4 KiB blocks: 8 sectors a block, pointer blocks past 2048 sectors


def fresh(tmp_path, sectors=16384, block_size=BS):
    path = tmp_path / "disk.img"
    with DiskImage.create(path, sectors) as image:      # the administrator's mkfs, from the shell
        Volume.mkfs(add_partition(image), block_size=block_size, fds=8)
    return path


def boot(path):
    board, cos, loader = takeover(disk=DiskImage.open(path))
    return board, loader.kernel


def vm(kernel, name, steps, vdisk, size=None):
    return install_vm_with_vdisk(kernel, disk_guest.program(name, steps), disk_guest.MEMORY,
                                 name, vdisk, size)


def run_until_done(board, *worlds, limit=40):
    for _ in range(limit):
        if all(b" done" in w.vmm.console or w.state == "crashed" for w in worlds):
            return
        board.run(100_000)
    raise AssertionError([bytes(w.vmm.console) for w in worlds])


def lines(world):
    return bytes(world.vmm.console).decode().splitlines()


def on_image(path, name, lba, count):
    """The VDISK's sectors as the tools read them from the image file, and its disk sectors."""
    with DiskImage.open(path, readonly=True) as image:
        vol = Volume.open(find(image))
        data = vol.read(name, lba * 512, count * 512)
        sectors = {vol.resolve(name, b).disk_sector + s for b in range(vol.stat(name).blocks)
                   for s in range(BS // 512)}
        raw = b"".join(image.read(vol.resolve(name, (lba + i) // 8).disk_sector + (lba + i) % 8, 1)
                       for i in range(count))
    return data, raw, sectors


def test_a_guest_writes_its_vdisk_reads_it_back_and_the_bytes_are_on_the_image(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    mark = board.trace.mark()
    vm1 = vm(kernel, "vm1", [("write", 8, 16, 0x1000), ("verify", 8, 16, 0x1000),
                             ("verify", 100, 8, 5)], "vm1.vmdk", 64 * BS)
    run_until_done(board, vm1)
    assert lines(vm1) == ["vm1 wrote 8+16", "vm1 read 8+16 ok", "vm1 read 100+8 bad", "vm1 done"]
    # the completions came as the guest's own interrupt, through its IDT
    vectors = [e["vector"] for e in board.trace.since(mark, "vmm.inject") if e["vm"] == "vm1"]
    assert 0x20 + VDISK_LINE in vectors
    # the data went through the shared controller as the kernel's requests
    owners = [e["owner"] for e in board.trace.since(mark, "scsi.share_start")]
    assert owners.count("kernel") >= 2
    assert struct.unpack(RB_FORMAT, board.memory.read(vm1.region[0] + disk_guest.RB, RB_SIZE))[2] == GOOD
    board.close()
    data, raw, _ = on_image(path, "vm1.vmdk", 8, 16)
    assert data == raw == pattern(0x1000, 8, 16)


def test_after_its_vm_is_reinstalled_the_guest_reads_the_pattern(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    vm1 = vm(kernel, "vm1", [("write", 40, 32, 0xABC)], "data.vmdk", 32 * BS)
    run_until_done(board, vm1)
    detach_vdisk(kernel, vm1)              # the same boot: a new VM on the same VDISK
    again = vm(kernel, "again", [("verify", 40, 32, 0xABC)], "data.vmdk")
    run_until_done(board, again)
    assert lines(again) == ["again read 40+32 ok", "again done"]
    board.close()
    board, kernel = boot(path)             # and after a power cycle
    vm2 = vm(kernel, "vm2", [("verify", 40, 32, 0xABC), ("verify", 40, 32, 0xABD)], "data.vmdk")
    run_until_done(board, vm2)
    assert lines(vm2) == ["vm2 read 40+32 ok", "vm2 read 40+32 bad", "vm2 done"]
    board.close()


def test_two_vms_disks_never_overlap(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    a = vm(kernel, "a", [("write", 0, 128, 0x11110000), ("verify", 0, 128, 0x11110000)], "a.vmdk", 16 * BS)
    b = vm(kernel, "b", [("write", 0, 128, 0x22220000), ("verify", 0, 128, 0x22220000)], "b.vmdk", 16 * BS)
    run_until_done(board, a, b)
    assert lines(a)[-2:] == ["a read 0+128 ok", "a done"] and lines(b)[-2:] == ["b read 0+128 ok", "b done"]
    board.close()
    data_a, raw_a, sectors_a = on_image(path, "a.vmdk", 0, 128)
    data_b, raw_b, sectors_b = on_image(path, "b.vmdk", 0, 128)
    assert raw_a == pattern(0x11110000, 0, 128) and raw_b == pattern(0x22220000, 0, 128)
    assert len(sectors_a) == len(sectors_b) == 128 and not sectors_a & sectors_b


def test_a_vdisk_past_256_blocks_goes_through_pointer_blocks(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    steps = [("write", 2040, 16, 9), ("write", 2392, 8, 10), ("verify", 2040, 16, 9),
             ("verify", 2392, 8, 10), ("verify", 0, 8, 0)]                # blocks 255, 256, 299
    big = vm(kernel, "big", steps, "big.vmdk", 300 * BS)
    run_until_done(board, big)
    assert lines(big) == ["big wrote 2040+16", "big wrote 2392+8", "big read 2040+16 ok",
                          "big read 2392+8 ok", "big read 0+8 bad", "big done"]
    assert kernel.vdisks.attached["big.vmdk"].fd.pointer_blocks == 1
    board.close()
    with DiskImage.open(path, readonly=True) as image:
        vol = Volume.open(find(image))
        assert vol.resolve("big.vmdk", 299).pointer_block is not None
        assert not vol.resolve("big.vmdk", 256).tbz and vol.resolve("big.vmdk", 0).tbz
    assert on_image(path, "big.vmdk", 2392, 8)[1] == pattern(10, 2392, 8)
    assert on_image(path, "big.vmdk", 2040, 16)[1] == pattern(9, 2040, 16)


def test_a_buffer_outside_the_vm_is_refused_and_only_that_vm_sees_it(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    target = kernel.base + 0x100                    # a guest address past its memory (the kernel's, on the host)
    before = board.memory.read(target, 4096)
    good = vm(kernel, "good", [("write", 0, 8, 1), ("verify", 0, 8, 1)], "good.vmdk", 8 * BS)
    bad = vm(kernel, "bad", [("read", 0, 8, target), ("read", 9999, 1, 0), ("write", 0, 8, 2),
                             ("verify", 0, 8, 2)], "bad.vmdk", 8 * BS)
    run_until_done(board, good, bad)
    base = bad.region[0]
    assert lines(bad) == [f"bad read to {target:#x} check condition", "bad read to 0x0 check condition",
                          "bad wrote 0+8", "bad read 0+8 ok", "bad done"]
    assert lines(good)[-2:] == ["good read 0+8 ok", "good done"]
    assert bad.state != "crashed" and good.state != "crashed"
    assert board.memory.read(target, 4096) == before
    rb = struct.unpack(RB_FORMAT, board.memory.read(base + disk_guest.RB, RB_SIZE))
    assert rb[2] == GOOD                            # the last request; the first one's status:
    refused = [e["why"] for e in board.trace.of("vdisk.refused")]
    assert refused[0].startswith(f"data buffer {target:#x}+4096 is outside the VM's memory")
    assert "past the VDISK's 64" in refused[1]
    board.close()


def test_a_refused_request_block_holds_check_condition_and_the_dma_flag(tmp_path):
    path = fresh(tmp_path)
    board, kernel = boot(path)
    past = disk_guest.MEMORY - 0x100                # a guest address: its last 256 bytes and beyond
    bad = vm(kernel, "bad", [("read", 0, 1, past)], "bad.vmdk", 8 * BS)
    run_until_done(board, bad)
    rb = struct.unpack(RB_FORMAT, board.memory.read(bad.region[0] + disk_guest.RB, RB_SIZE))
    assert (rb[2], rb[3], rb[6] & FLAG_DMA_ERROR) == (CHECK_CONDITION, HARDWARE_ERROR, FLAG_DMA_ERROR)
    board.close()


def test_a_first_write_into_a_never_written_block_zeroes_the_rest_of_it(tmp_path):
    path = fresh(tmp_path, block_size=256 << 10)      # 512 sectors a block: zeros in 64 KiB runs
    board, kernel = boot(path)
    with DiskImage.open(path, readonly=True) as image:     # stale bytes where the block will be
        first = Volume.open(find(image)).sb.fb_area // 512 + find(image).first
    board.scsi.disk.write(first, b"\xee" * 512 * 600)
    guest = vm(kernel, "g", [("write", 700, 3, 4)], "g.vmdk", 4 * (256 << 10))
    run_until_done(board, guest)
    board.close()
    with DiskImage.open(path, readonly=True) as image:
        vol = Volume.open(find(image))
        r = vol.resolve("g.vmdk", 1)
        assert not r.tbz and vol.resolve("g.vmdk", 0).tbz          # the address lost its TBZ bit
        block = image.read(r.disk_sector, 512)
    assert block == bytes(188 * 512) + pattern(4, 700, 3) + bytes(321 * 512)


def test_a_vm_on_the_second_cpu_gets_its_completions_too(tmp_path):
    board, cos, loader = takeover(disk=DiskImage.open(fresh(tmp_path)), cpus=2)
    far = vm(loader.kernel, "far", [("write", 0, 64, 3), ("verify", 0, 64, 3)], "far.vmdk", 16 * BS)
    run_until_done(board, far)
    assert far.cpu == 1 and lines(far)[-2:] == ["far read 0+64 ok", "far done"]
    board.close()


def test_bad_input_is_a_named_error_and_leaves_the_machine_as_it_was(tmp_path):
    import pytest
    from vmkit.cos import layout as cos_layout
    from vmkit.kernel.vmfs_errors import VmfsError
    board, cos, loader = takeover(disk=DiskImage.create(tmp_path / "blank.img", 4096))
    kernel, top = loader.kernel, board.memory.read_u32(cos_layout.RAM_TOP)
    with pytest.raises(VmfsError, match="partition table.*blank|no partition"):
        vm(kernel, "x", [], "x.vmdk", 8 * BS)
    assert board.memory.read_u32(cos_layout.RAM_TOP) == top and len(kernel.worlds.all) == 1
    board.close()
    board, kernel = boot(fresh(tmp_path))
    vm(kernel, "one", [], "shared.vmdk", 8 * BS)
    with pytest.raises(VmfsError, match="VDISK 'shared.vmdk': already attached to one"):
        vm(kernel, "two", [], "shared.vmdk")
    with pytest.raises(VmfsError, match="VDISK 'none.vmdk': no such file on the volume; give its size"):
        vm(kernel, "three", [], "none.vmdk")
    assert [w.name for w in kernel.worlds.all] == ["cos", "one"]
    board.close()
