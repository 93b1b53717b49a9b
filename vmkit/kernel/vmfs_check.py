"""The rules every VMFS structure obeys, checked where it is read (the library) and by fsck.

Each check takes bytes and the superblock and returns the decoded record, or
raises Corrupt naming the structure and field: a flipped byte becomes
"file descriptor 3 (checksum): ..." rather than a wrong answer or a traceback.
"""
from . import vmfs_address as A
from .vmfs_errors import Corrupt, NotVmfs
from .vmfs_format import (FD_ADDRESSES, FD_SIZE, FREE, MAGIC, MAX_BLOCKS, PB_ADDRESSES, PB_SIZE,
                          REGULAR, SECTOR, VERSION, FileDescriptor, Superblock, bitmap_bytes, crc)

MIN_BLOCK, MAX_BLOCK = 4096, 64 << 20


def blocks_for(length, block_size):
    return -(-length // block_size)


def pointer_blocks_for(blocks):
    """0 while the descriptor's 256 addresses can name every block; then one per 1024 blocks."""
    return 0 if blocks <= FD_ADDRESSES else -(-blocks // PB_ADDRESSES)


def superblock(raw, volume_sectors):
    """Decode and check sector 0 of the partition."""
    sb = Superblock.unpack(raw)
    if sb.magic != MAGIC:
        raise NotVmfs("superblock", f"magic {sb.magic:#010x} is not VMFS's {MAGIC:#010x}: "
                      f"this partition does not hold a VMFS volume", "magic")
    if sb.version != VERSION:
        raise NotVmfs("superblock", f"version {sb.version:#010x} is not this kit's layout "
                      f"{VERSION:#010x} (a real VMFS-3 volume, or another format)", "version")
    if sb.checksum != crc(sb):
        raise Corrupt("superblock", f"checksum {sb.checksum:#010x} does not match its bytes "
                      f"({crc(sb):#010x})", "checksum")

    def bad(field, why):
        raise Corrupt("superblock", why, field)
    if sb.sector_size != SECTOR:
        bad("sector_size", f"{sb.sector_size}, not {SECTOR}")
    bs = sb.block_size
    if not (MIN_BLOCK <= bs <= MAX_BLOCK and bs & (bs - 1) == 0):
        bad("block_size", f"{bs} is not a power of two from {MIN_BLOCK} to {MAX_BLOCK}")
    if sb.volume_sectors > volume_sectors:
        bad("volume_sectors", f"{sb.volume_sectors} sectors, but the partition has {volume_sectors}")
    for field, limit in (("fd_count", A.FD_LIMIT), ("pb_count", A.PB_LIMIT), ("fb_count", A.FB_LIMIT)):
        if not 0 < getattr(sb, field) <= limit:
            bad(field, f"{getattr(sb, field)} is outside 1..{limit}")
    regions = (("fd_bitmap", SECTOR), ("pb_bitmap", bitmap_bytes(sb.fd_count)),
               ("fb_bitmap", bitmap_bytes(sb.pb_count)), ("fd_table", bitmap_bytes(sb.fb_count)),
               ("pb_table", sb.fd_count * FD_SIZE), ("fb_area", sb.pb_count * PB_SIZE))
    end = 0
    for field, after in regions:       # each region starts after the one before ends
        start = getattr(sb, field)
        if start % SECTOR or start < end + after:
            bad(field, f"offset {start:#x} overlaps the region before it or is not sector-aligned")
        end = start
    if sb.fb_area + sb.fb_count * bs > sb.volume_sectors * SECTOR:
        bad("fb_count", f"{sb.fb_count} blocks of {bs} bytes from {sb.fb_area:#x} run past the "
            f"volume's end")
    return sb


def descriptor(raw, n, sb):
    """Decode and check file descriptor n (0x800 bytes). An all-zero slot is free, never used."""
    where = f"file descriptor {n}"
    fd = FileDescriptor.unpack(raw)
    if not any(raw):
        return fd
    if fd.checksum != crc(fd):
        raise Corrupt(where, f"checksum {fd.checksum:#010x} does not match its bytes "
                      f"({crc(fd):#010x}): the descriptor is damaged", "checksum")
    if fd.address != A.fd(n):
        raise Corrupt(where, f"{fd.address:#010x} is not this slot's address {A.fd(n):#010x}",
                      "address")
    if fd.type not in (FREE, REGULAR):
        raise Corrupt(where, f"{fd.type} is not free ({FREE}) or a file ({REGULAR})", "type")
    if fd.type == FREE:
        if fd.length or fd.blocks or fd.pointer_blocks or fd.name.strip(b"\0") or any(fd.addresses):
            raise Corrupt(where, "a free descriptor still holds a file's fields", "type")
        return fd
    name = fd.name.rstrip(b"\0")
    try:
        ok = bool(name) and b"\0" not in name and name.decode() and "/" not in name.decode()
    except UnicodeDecodeError:
        ok = False
    if not ok:
        raise Corrupt(where, f"{fd.name[:32]!r}... is not a NUL-padded UTF-8 name", "name")
    if fd.block_size != sb.block_size:
        raise Corrupt(where, f"{fd.block_size}, not the volume's {sb.block_size}", "block_size")
    if fd.blocks > min(MAX_BLOCKS, sb.fb_count):
        raise Corrupt(where, f"{fd.blocks} blocks: more than the volume or a file can hold", "blocks")
    if blocks_for(fd.length, sb.block_size) != fd.blocks:
        raise Corrupt(where, f"{fd.length} bytes do not fill {fd.blocks} blocks of "
                      f"{sb.block_size}", "length")
    if fd.pointer_blocks != pointer_blocks_for(fd.blocks):
        raise Corrupt(where, f"{fd.pointer_blocks}, but {fd.blocks} blocks need "
                      f"{pointer_blocks_for(fd.blocks)}", "pointer_blocks")
    used, typ, limit = ((fd.blocks, A.FB, sb.fb_count) if not fd.pointer_blocks
                        else (fd.pointer_blocks, A.PB, sb.pb_count))
    for i, address in enumerate(fd.addresses):
        if i < used:
            A.expect(address, typ, limit, where, f"addresses[{i}]")
        elif address:
            raise Corrupt(where, f"{address:#010x} past the {used} addresses in use",
                          f"addresses[{i}]")
    return fd


def pointer_entry(address, p, i, sb):
    """File block number of entry i of pointer block p."""
    return A.expect(address, A.FB, sb.fb_count, f"pointer block {p}", f"addresses[{i}]")
