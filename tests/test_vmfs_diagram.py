"""Notebook 10's VMFS views are drawn from the disk's bytes."""
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import MemoryDisk, add_partition
from vmkit.kernel.vmfs_format import SECTOR
from vmkit.lessons import vmfs as lesson
from vmkit.ui.vmfs_diagrams import file_graph


def volume():
    disk = MemoryDisk(40000)
    return disk, Volume.mkfs(add_partition(disk), block_size=4096, fds=8)


def test_the_map_is_read_from_the_disk_not_the_library():
    disk, vol = volume()
    vol.create("big", 1500 * 4096)
    vol.write("big", 1200 * 4096, b"here")
    m = lesson.file_map(vol, "big", also=(1200,))
    assert [i for i, _, _ in m["pointer_blocks"]] == [0, 1]
    (b, address, sector), = [x for x in m["blocks"] if x[0] == 1200]
    assert bytes(disk.data[sector * SECTOR:sector * SECTOR + 4]) == b"here"
    assert m["hidden"] == 1500 - len(m["blocks"])
    assert lesson.path(vol, "big", 1200)[1].startswith("descriptor 0: addresses[1] = PB")


def test_the_diagram_highlights_the_path_of_one_block():
    disk, vol = volume()
    vol.create("big", 1500 * 4096)
    vol.create("small", 3 * 4096)
    src = file_graph(vol, "big", block=1200).source
    assert "pointer block" in src and "VDISK block 1200" in src
    assert src.count("#c0392b") == 3            # descriptor -> PB edge, PB -> block edge, the block
    small = file_graph(vol, "small", block=1).source
    assert "pointer block" not in small and small.count("#c0392b") == 2
