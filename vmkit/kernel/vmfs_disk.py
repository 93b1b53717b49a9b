"""Where VMFS finds its sectors: a block device, the VMFS partition on it, and the partition table.

A block device is anything with `sectors`, `read(lba, count) -> bytes` and
`write(lba, data)` in 512-byte sectors. Three are used:
  - hw.disk.DiskImage, the image file itself (the tools: they run on the host);
  - vmfs_scsi.ScsiDisk, the kernel's path: each read or write is a SCSI
    request block on the shared controller's queue (claims 6-7);
  - MemoryDisk here, for tests that cut the power at every write.
`Partition` narrows one of them to the VMFS partition, so the file system's
offsets start at 0 and nothing it does can reach the console OS's sectors.

How the volume is found: sector 0 of the disk is an MBR (signature 0xAA55);
the first of its four primary entries with type 0xFB (VMware's VMFS type)
is the volume. `add_partition` writes that entry into an existing table, or
a new table on a blank disk; it refuses a sector 0 that holds anything else,
and a range that overlaps another partition.
"""
from .vmfs_errors import BadRequest, Corrupt, NotVmfs
from .vmfs_format import Mbr, PartitionEntry, PARTITION_TYPE, SECTOR

ALIGN = 2048                       # partitions start on 1 MiB, as current partitioners do


class MemoryDisk:
    """A disk in a bytearray (tests): the same three members as a DiskImage."""
    def __init__(self, sectors, data=None):
        self.sectors = sectors
        self.data = bytearray(data) if data is not None else bytearray(sectors * SECTOR)

    def read(self, lba, count):
        return bytes(self.data[lba * SECTOR:(lba + count) * SECTOR])

    def write(self, lba, data):
        self.data[lba * SECTOR:lba * SECTOR + len(data)] = data


class Partition:
    """Sectors first .. first + sectors - 1 of `device`, numbered from 0."""
    def __init__(self, device, first, sectors):
        self.device, self.first, self.sectors = device, first, sectors

    def _check(self, lba, count):
        if lba < 0 or lba + count > self.sectors:
            raise Corrupt("partition", f"sectors {lba}..{lba + count - 1} fall outside the "
                          f"VMFS partition's {self.sectors} sectors")

    def read(self, lba, count):
        self._check(lba, count)
        return self.device.read(self.first + lba, count)

    def write(self, lba, data):
        self._check(lba, len(data) // SECTOR)
        self.device.write(self.first + lba, data)


def read_table(device):
    """The MBR in sector 0, or None if sector 0 is all zeros (a blank disk)."""
    raw = device.read(0, 1)
    if not any(raw):
        return None
    mbr = Mbr.unpack(raw)
    if mbr.signature != Mbr.SIGNATURE:
        raise NotVmfs("disk", f"sector 0 is not a partition table (bytes 0x1fe-0x1ff are "
                      f"{mbr.signature:#06x}, not 0xaa55), so there is no VMFS partition", "mbr")
    return mbr


def find(device):
    """The VMFS partition of `device`, or NotVmfs saying why there is none."""
    mbr = read_table(device)
    if mbr is None:
        raise NotVmfs("disk", "sector 0 is blank: no partition table, so no VMFS partition "
                      "(make one with mkfs)", "mbr")
    entries = mbr.entries()
    for e in entries:
        if e.type == PARTITION_TYPE:
            if e.sectors == 0 or e.lba_first + e.sectors > device.sectors:
                raise Corrupt("partition table", f"the VMFS partition (sectors {e.lba_first}+"
                              f"{e.sectors}) does not fit the disk's {device.sectors} sectors", "mbr")
            return Partition(device, e.lba_first, e.sectors)
    types = ", ".join(f"{e.type:#04x}" for e in entries if e.type) or "none"
    raise NotVmfs("partition table", f"no partition of type {PARTITION_TYPE:#04x} (VMFS); "
                  f"partition types present: {types}", "mbr")


def add_partition(device, first=None, sectors=None, check=None):
    """The VMFS partition, made if missing: in the first free entry, after the other partitions.

    `check(sectors)` runs before the table is written, so a partition the file system could not
    use (mkfs passes its layout check) leaves the disk exactly as it was."""
    mbr = read_table(device)
    if mbr is None:
        mbr = Mbr(bootstrap=bytes(446), partitions=bytes(64), signature=Mbr.SIGNATURE)
    entries = mbr.entries()
    for e in entries:
        if e.type == PARTITION_TYPE and first is None and sectors is None:
            if check is not None:
                check(e.sectors)
            return Partition(device, e.lba_first, e.sectors)
    used = [(e.lba_first, e.lba_first + e.sectors) for e in entries if e.type]
    if first is None:
        first = max([ALIGN] + [end for _, end in used])
        first = (first + ALIGN - 1) // ALIGN * ALIGN
    if sectors is None:
        sectors = device.sectors - first
    if first < 1 or sectors <= 0 or first + sectors > device.sectors:
        raise BadRequest("partition", f"sectors {first}+{max(sectors, 0)} do not fit a disk of "
                         f"{device.sectors} sectors after sector 0 (leave room, or give "
                         f"a smaller size)")
    for lo, hi in used:
        if first < hi and lo < first + sectors:
            raise BadRequest("partition", f"sectors {first}..{first + sectors - 1} overlap an "
                             f"existing partition ({lo}..{hi - 1}); VMFS never overwrites it")
    free = [i for i, e in enumerate(entries) if e.type == 0]
    if not free:
        raise BadRequest("partition table", "all four primary entries are in use")
    if check is not None:
        check(sectors)
    entries[free[0]] = PartitionEntry(type=PARTITION_TYPE, chs_first=b"\xfe\xff\xff",
                                      chs_last=b"\xfe\xff\xff", lba_first=first, sectors=sectors)
    table = b"".join(e.pack() for e in entries)
    device.write(0, mbr.replace(partitions=table, signature=Mbr.SIGNATURE).pack())
    return Partition(device, first, sectors)
