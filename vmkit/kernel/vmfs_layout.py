"""Where mkfs puts VMFS's regions in a partition (docs/vmfs.md, "The volume").

Superblock at 0, the three bitmaps from 4 KiB, the descriptor table and the
pointer-block pool 4 KiB aligned, the file blocks aligned to the block size;
counts are fitted to the partition. The result is the superblock: a reader
takes the offsets from it and never recomputes them.
"""
from . import vmfs_address as A
from . import vmfs_check as check
from .vmfs_errors import BadRequest
from .vmfs_format import (FD_ADDRESSES, FD_SIZE, MAGIC, PB_SIZE, REGION_ALIGN, SECTOR, VERSION,
                          Superblock, align, bitmap_bytes)

def layout(volume_sectors, block_size=1 << 20, fds=256, pbs=None, label=""):
    """The superblock of a new volume: regions placed, counts fitted to the partition."""
    if not isinstance(block_size, int) or not (check.MIN_BLOCK <= block_size <= check.MAX_BLOCK) \
            or block_size & (block_size - 1):
        raise BadRequest("mkfs", f"block size {block_size!r} is not a power of two from "
                         f"{check.MIN_BLOCK} to {check.MAX_BLOCK}")
    if not isinstance(fds, int) or not 0 < fds <= A.FD_LIMIT:
        raise BadRequest("mkfs", f"{fds!r} file descriptors: give 1..{A.FD_LIMIT}")
    raw_label = label.encode() if isinstance(label, str) else b""
    if len(raw_label) > 31:
        raise BadRequest("mkfs", f"label {label!r} is longer than 31 bytes")
    size = volume_sectors * SECTOR
    fb_max = min(size // block_size, A.FB_LIMIT)
    pbs = min(max(8, fb_max // FD_ADDRESSES + 8), A.PB_LIMIT) if pbs is None else pbs
    if not isinstance(pbs, int) or not 0 < pbs <= A.PB_LIMIT:
        raise BadRequest("mkfs", f"{pbs!r} pointer blocks: give 1..{A.PB_LIMIT}")
    fd_bitmap = REGION_ALIGN
    pb_bitmap = fd_bitmap + bitmap_bytes(fds)
    fb_bitmap = pb_bitmap + bitmap_bytes(pbs)
    fd_table = align(fb_bitmap + bitmap_bytes(fb_max), REGION_ALIGN)
    pb_table = align(fd_table + fds * FD_SIZE, REGION_ALIGN)
    fb_area = align(pb_table + pbs * PB_SIZE, block_size)
    fb_count = min((size - fb_area) // block_size, fb_max) if size > fb_area else 0
    if fb_count < 1:
        raise BadRequest("mkfs", f"a partition of {volume_sectors} sectors has no room for a "
                         f"file block of {block_size} bytes after the metadata ({fb_area} bytes)")
    return Superblock(magic=MAGIC, version=VERSION, label=raw_label, sector_size=SECTOR,
                      block_size=block_size, volume_sectors=volume_sectors, fd_count=fds,
                      pb_count=pbs, fb_count=fb_count, fd_bitmap=fd_bitmap, pb_bitmap=pb_bitmap,
                      fb_bitmap=fb_bitmap, fd_table=fd_table, pb_table=pb_table, fb_area=fb_area)

