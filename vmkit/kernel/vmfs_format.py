"""The on-disk format of VMFS, the kernel's file system for virtual disks (claims 23, 43).

Declared once: the library (vmfs.py), fsck (vmfs_fsck.py), the tools
(vmfs_tool.py) and docs/vmfs.md's tables all take their offsets from here,
the way xv6's mkfs.c and fs.c share fs.h. Addresses are decoded in
vmfs_address.py.

The volume lives in its own MBR partition of type 0xFB (VMware's VMFS
type), so the console OS's data elsewhere on the disk is never touched.
Inside it, byte offsets from the partition's start (every region 4 KiB
aligned; file blocks aligned to the block size):

    superblock | FD bitmap | PB bitmap | FB bitmap | file descriptors | pointer blocks | file blocks

The shape is VMFS-3's, as vmfs-tools and dissect.vmfs read it: a file
descriptor is 0x800 bytes (a 0x200-byte lock area, the inode, and 256
block addresses at 0x400); a pointer block holds 1024 addresses; a file of
at most 256 blocks has its file-block addresses in its descriptor, a larger
one has pointer-block addresses there, each pointer block locating up to
1024 file blocks (claim 23: "pointer block pointers ... sets of VDISK block
pointers"). What the kit leaves out, and why, is in docs/vmfs.md.
"""
import re
import zlib

from .record import Record

SECTOR = 512
MAGIC = 0x2FABF15E                 # VMFS-3's file-system magic (dissect: VMFS_FS3_MAGIC)
VERSION = 0x004B0003               # "K"it layout of FS3: tells this layout from a real VMFS-3
PARTITION_TYPE = 0xFB              # the MBR partition type VMware gives VMFS
REGION_ALIGN = 4096

FD_SIZE = 0x800
FD_ADDRESSES = 256                 # per descriptor: direct FBs, or PBs once the file outgrows them
PB_ADDRESSES = 1024                # per pointer block
PB_SIZE = PB_ADDRESSES * 4
MAX_BLOCKS = FD_ADDRESSES * PB_ADDRESSES
NAME_SIZE = 128                    # as VMFS-3's directory entry name[128]

FREE, REGULAR = 0, 3               # descriptor types (VMFS-3's FileType.Regular is 3)
TYPE_NAMES = {FREE: "free", REGULAR: "file"}


class Superblock(Record):
    """Sector 0 of the partition: where everything is and how big (VMFS-3's FS3_Descriptor)."""
    FIELDS = (("magic", "I", "MAGIC, 0x2fabf15e (VMFS-3's)"),                      # 0x00
              ("version", "I", "VERSION, 0x004b0003: this kit's layout"),          # 0x04
              ("label", "32s", "volume label, UTF-8, NUL-padded"),                 # 0x08
              ("sector_size", "I", "512: the unit of every offset's alignment"),   # 0x28
              ("block_size", "I", "bytes per file block (a VDISK block): a power of two, 4 KiB..64 MiB"),  # 0x2c
              ("volume_sectors", "Q", "sectors of the partition the volume uses"),  # 0x30
              ("fd_count", "I", "file descriptors in the table (the most files)"),  # 0x38
              ("pb_count", "I", "pointer blocks in the pool"),                     # 0x3c
              ("fb_count", "I", "file blocks in the file-block area"),             # 0x40
              ("reserved0", "I", "0"),                                             # 0x44
              ("fd_bitmap", "Q", "byte offset of the FD bitmap (fd_count bits)"),   # 0x48
              ("pb_bitmap", "Q", "byte offset of the PB bitmap (pb_count bits)"),   # 0x50
              ("fb_bitmap", "Q", "byte offset of the FB bitmap (fb_count bits)"),   # 0x58
              ("fd_table", "Q", "byte offset of file descriptor 0"),               # 0x60
              ("pb_table", "Q", "byte offset of pointer block 0"),                 # 0x68
              ("fb_area", "Q", "byte offset of file block 0"),                     # 0x70
              ("reserved", "388s", "zeros"),                                       # 0x78
              ("checksum", "I", "crc32 of the 512 bytes with this field 0"))       # 0x1fc


class FileDescriptor(Record):
    """One file: 0x800 bytes, as VMFS-3's (lock at 0x0, inode at 0x200, addresses at 0x400)."""
    FIELDS = (("lock", "512s", "VMFS's on-disk lock area; one host here: zeros"),          # 0x000
              ("address", "I", "this descriptor's own FD address, fd(n)"),                 # 0x200
              ("generation", "I", "+1 each time the slot is given to a new file"),         # 0x204
              ("type", "I", "0 free, 3 regular file (VMFS-3's FileType.Regular)"),         # 0x208
              ("flags", "I", "0"),                                                         # 0x20c
              ("length", "Q", "the file's length in bytes"),                               # 0x210
              ("block_size", "Q", "the volume's block size, repeated (as VMFS-3 does)"),  # 0x218
              ("blocks", "Q", "file blocks allocated: ceil(length / block_size)"),        # 0x220
              ("pointer_blocks", "I", "0 if blocks <= 256 (direct), else ceil(blocks / 1024)"),  # 0x228
              ("checksum", "I", "crc32 of the 0x800 bytes with this field 0"),             # 0x22c
              ("name", "128s", "file name, UTF-8, NUL-padded, no '/'"),                    # 0x230
              ("reserved", "336s", "zeros"),                                               # 0x2b0
              ("addresses", "256I", "direct: FB addresses of blocks 0..255; "
                                    "indirect: PB addresses, entry i covering blocks i*1024.."))  # 0x400


class PointerBlock(Record):
    """A set of VDISK block pointers: 1024 file-block addresses (4 KiB, as VMFS-3's)."""
    FIELDS = (("addresses", "1024I", "entry i of the file's p-th pointer block: FB address of "
                                     "block p*1024+i; 0 past the file's end"),)   # 0x000


class PartitionEntry(Record):
    """One of the MBR's four primary partition entries."""
    FIELDS = (("status", "B", "0x80 bootable, else 0"),                        # 0x0
              ("chs_first", "3s", "unused (LBA only): fe ff ff"),              # 0x1
              ("type", "B", "0xfb for VMFS"),                                  # 0x4
              ("chs_last", "3s", "unused: fe ff ff"),                          # 0x5
              ("lba_first", "I", "first sector of the partition"),             # 0x8
              ("sectors", "I", "length in sectors"))                           # 0xc


class Mbr(Record):
    """Sector 0 of the disk: the console OS's boot code and the partition table."""
    FIELDS = (("bootstrap", "446s", "boot code: left exactly as found"),       # 0x000
              ("partitions", "64s", "four PartitionEntry"),                    # 0x1be
              ("signature", "H", "0xaa55"))                                    # 0x1fe
    SIGNATURE = 0xAA55

    def entries(self):
        return [PartitionEntry.unpack(self.partitions, i * PartitionEntry.SIZE) for i in range(4)]


assert Superblock.SIZE == SECTOR and FileDescriptor.SIZE == FD_SIZE
assert FileDescriptor.OFFSET["addresses"] == 0x400 and PointerBlock.SIZE == PB_SIZE
assert Mbr.SIZE == SECTOR and PartitionEntry.SIZE == 16


def crc(record):
    """crc32 of a record's bytes with its checksum field zeroed."""
    return zlib.crc32(record.replace(checksum=0).pack())


def sealed(record):
    """The record with its checksum filled in."""
    return record.replace(checksum=crc(record))


# ---- the free-space bitmaps -------------------------------------------------------------
# One bit per resource, bit (n % 8) of byte (n // 8); 1 = in use. Each bitmap's length is a
# whole number of sectors, so setting a bit is one sector write.
def bitmap_bytes(count):
    return (count + 8 * SECTOR - 1) // (8 * SECTOR) * SECTOR


def align(value, to):
    return (value + to - 1) // to * to


# ---- docs/vmfs.md's tables come from the declarations above -------------------------------------
STRUCTURES = {c.__name__: c for c in (Superblock, FileDescriptor, PointerBlock, PartitionEntry, Mbr)}
_TABLE = re.compile(r"(<!-- layout: (\w+) -->\n).*?(\n<!-- end layout -->)", re.S)


def doc_tables(text):
    """`text` with each `<!-- layout: Name -->` ... `<!-- end layout -->` block regenerated."""
    return _TABLE.sub(lambda m: m.group(1) + STRUCTURES[m.group(2)].markdown() + m.group(3), text)


if __name__ == "__main__":               # python -m vmkit.kernel.vmfs_format docs/vmfs.md
    import sys
    for path in sys.argv[1:]:
        with open(path) as f:
            old = f.read()
        with open(path, "w") as f:
            f.write(doc_tables(old))
