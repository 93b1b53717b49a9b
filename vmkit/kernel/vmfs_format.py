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
    FIELDS = (("magic", "I"),              # 0x00 MAGIC
              ("version", "I"),            # 0x04 VERSION
              ("label", "32s"),            # 0x08 NUL-padded volume label
              ("sector_size", "I"),        # 0x28 512: the unit of the partition
              ("block_size", "I"),         # 0x2c bytes per file block (VDISK block)
              ("volume_sectors", "Q"),     # 0x30 the partition's length
              ("fd_count", "I"),           # 0x38 file descriptors
              ("pb_count", "I"),           # 0x3c pointer blocks
              ("fb_count", "I"),           # 0x40 file blocks
              ("reserved0", "I"),          # 0x44
              ("fd_bitmap", "Q"),          # 0x48 byte offset of the FD bitmap
              ("pb_bitmap", "Q"),          # 0x50 byte offset of the PB bitmap
              ("fb_bitmap", "Q"),          # 0x58 byte offset of the FB bitmap
              ("fd_table", "Q"),           # 0x60 byte offset of descriptor 0
              ("pb_table", "Q"),           # 0x68 byte offset of pointer block 0
              ("fb_area", "Q"),            # 0x70 byte offset of file block 0
              ("reserved", "388s"),        # 0x78
              ("checksum", "I"))           # 0x1fc crc32 of bytes 0..0x1fb


class FileDescriptor(Record):
    """One file: 0x800 bytes, as VMFS-3's (lock at 0x0, inode at 0x200, addresses at 0x400)."""
    FIELDS = (("lock", "512s"),            # 0x000 VMFS's on-disk lock; one host here: zeros
              ("address", "I"),            # 0x200 its own FD address (vmfs_address.fd(n))
              ("generation", "I"),         # 0x204 +1 each time the slot is given to a new file
              ("type", "I"),               # 0x208 FREE or REGULAR
              ("flags", "I"),              # 0x20c 0
              ("length", "Q"),             # 0x210 bytes
              ("block_size", "Q"),         # 0x218 the volume's block size, repeated as VMFS does
              ("blocks", "Q"),             # 0x220 file blocks allocated
              ("pointer_blocks", "I"),     # 0x228 0 (direct) or ceil(blocks / 1024)
              ("checksum", "I"),           # 0x22c crc32 of the 0x800 bytes with this field 0
              ("name", "128s"),            # 0x230 NUL-padded UTF-8
              ("reserved", "336s"),        # 0x2b0
              ("addresses", "256I"))       # 0x400 FB addresses (direct) or PB addresses


class PointerBlock(Record):
    """A set of VDISK block pointers: 1024 file-block addresses (4 KiB, as VMFS-3's)."""
    FIELDS = (("addresses", "1024I"),)     # 0x000 entry i locates the file's block (p * 1024 + i)


class PartitionEntry(Record):
    """One of the MBR's four primary partition entries."""
    FIELDS = (("status", "B"),             # 0x0 0x80 = bootable
              ("chs_first", "3s"),         # 0x1 unused (LBA only)
              ("type", "B"),               # 0x4 PARTITION_TYPE for VMFS
              ("chs_last", "3s"),          # 0x5 unused
              ("lba_first", "I"),          # 0x8 first sector
              ("sectors", "I"))            # 0xc length in sectors


class Mbr(Record):
    """Sector 0 of the disk: the console OS's boot code and the partition table."""
    FIELDS = (("bootstrap", "446s"),       # 0x000 left as it is found
              ("partitions", "64s"),       # 0x1be four PartitionEntry
              ("signature", "H"))          # 0x1fe 0xAA55
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
