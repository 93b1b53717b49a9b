"""`kit vmfs`: the administrator's tools for VMFS on a disk image file, like ESX's vmkfstools.

    kit vmfs mkfs IMAGE [--size 1G] [--block-size 1M] [--fds 256] [--label L] [--start LBA --sectors N]
    kit vmfs ls IMAGE                       ls -l style: descriptor, generation, bytes, blocks
    kit vmfs create IMAGE NAME SIZE         a VDISK that reads as zeros (no data written)
    kit vmfs resize IMAGE NAME SIZE         grow or truncate
    kit vmfs import IMAGE HOSTFILE [NAME]   copy a host file in
    kit vmfs export IMAGE NAME HOSTFILE     copy a file out
    kit vmfs rm IMAGE NAME
    kit vmfs map IMAGE NAME BLOCK           the path from a VDISK block to its disk sector
    kit vmfs fsck IMAGE [--repair]          exit 0 clean, 1 repaired, 4 problems left

The same code as the kernel's (vmfs.py over the disk image instead of the
SCSI controller). Bad input is one line on stderr and exit status 2; a
`vmkit vmfs` console command can mount `main` as it is.
"""
import argparse
import os
import sys

from ..hw.disk import DiskImage, DiskImageError, SECTOR
from . import vmfs_address as A
from .vmfs import Volume, layout
from .vmfs_disk import add_partition, find
from .vmfs_errors import Corrupt, VmfsError
from .vmfs_fsck import fsck

CHUNK = 16 << 20
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Usage(Exception):
    """Bad input to the tool itself (a size it cannot read, a missing host file)."""


def size(text):
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in UNITS and t[-1:] else ""
    number = t[:-1] if unit else t
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4096, 512M, 1G)")
    return int(number) * UNITS[unit]


def human(n):
    for unit in ("T", "G", "M", "K"):
        if n >= UNITS[unit] and n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]} {unit}iB"
    return f"{n} bytes"


def parser():
    p = argparse.ArgumentParser(prog="kit vmfs", description="VMFS on a disk image (claims 23, 43)")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mkfs", help="make a VMFS partition and file system")
    m.add_argument("image")
    m.add_argument("--size", type=size, help="create the image (sparse) with this size")
    m.add_argument("--block-size", type=size, default=1 << 20)
    m.add_argument("--fds", type=int, default=256, help="file descriptors (the most files)")
    m.add_argument("--label", default="")
    m.add_argument("--start", type=int, help="first sector of the VMFS partition")
    m.add_argument("--sectors", type=int, help="its length in sectors")
    sub.add_parser("ls", help="list files").add_argument("image")
    for name, extra in (("create", ("name", "size")), ("resize", ("name", "size")),
                        ("import", ("hostfile", "name?")), ("export", ("name", "hostfile")),
                        ("rm", ("name",)), ("map", ("name", "block"))):
        c = sub.add_parser(name)
        c.add_argument("image")
        for arg in extra:
            kw = {"nargs": "?"} if arg.endswith("?") else {}
            kw["type"] = {"size": size, "block": int}.get(arg.rstrip("?"), str)
            c.add_argument(arg.rstrip("?"), **kw)
    f = sub.add_parser("fsck", help="check (and --repair) the file system")
    f.add_argument("image")
    f.add_argument("--repair", action="store_true")
    return p


def main(argv=None, out=sys.stdout):
    args = parser().parse_args(argv)          # argparse: usage line, exit 2
    try:
        return COMMANDS[args.command](args, out) or 0
    except (VmfsError, DiskImageError, Usage) as e:
        hint = f" (see: kit vmfs fsck {args.image} --repair)" if isinstance(e, Corrupt) else ""
        print(f"kit vmfs {args.command}: {e}{hint}", file=sys.stderr)
        return 2


def _open(args, readonly=False):
    disk = DiskImage.open(args.image, readonly=readonly)
    return disk, Volume.open(find(disk))


def mkfs(args, out):
    if args.size is not None:
        if args.size < SECTOR or args.size % SECTOR:
            raise Usage(f"--size {args.size} is not a positive multiple of {SECTOR} bytes")
        disk = DiskImage.create(args.image, args.size // SECTOR)
    else:
        disk = DiskImage.open(args.image)
    with disk:
        try:
            part = add_partition(disk, args.start, args.sectors, check=lambda sectors: layout(
                sectors, args.block_size, args.fds, None, args.label))
        except VmfsError:
            if args.size is not None:             # the image this command made: not left behind
                os.unlink(args.image)
            raise
        vol = Volume.mkfs(part, block_size=args.block_size, fds=args.fds, label=args.label)
        sb = vol.sb
        print(f"{args.image}: VMFS in partition type 0xfb, sectors {part.first}..{part.first + part.sectors - 1}; "
              f"{sb.fb_count} file blocks of {human(sb.block_size)}, {sb.fd_count} descriptors, "
              f"{sb.pb_count} pointer blocks", file=out)


def ls(args, out):
    disk, vol = _open(args, readonly=True)
    with disk:
        files = vol.ls()
        used = vol.sb.fb_count - vol.free["fb"]
        print(f"total {used} blocks of {human(vol.bs)} in use, {vol.free['fb']} free", file=out)
        for f in files:
            print(f"-rw-------  fd {f.descriptor:<4} gen {f.generation:<4} {f.length:>14}  "
                  f"{f.blocks:>7} blocks  {f.pointer_blocks:>3} ptr  {f.name}", file=out)


def create(args, out):
    disk, vol = _open(args)
    with disk:
        n = vol.create(args.name, args.size)
        print(f"{args.name}: descriptor {n}, {vol.stat(args.name).blocks} blocks", file=out)


def resize(args, out):
    disk, vol = _open(args)
    with disk:
        vol.resize(args.name, args.size)


def import_(args, out):
    name = args.name or os.path.basename(args.hostfile)
    try:
        host = open(args.hostfile, "rb")
    except OSError as e:
        raise Usage(f"{args.hostfile}: cannot read the host file: {e.strerror}") from None
    disk, vol = _open(args)
    with disk, host:
        length = os.fstat(host.fileno()).st_size
        vol.create(name, length)
        for at in range(0, length, CHUNK):
            vol.write(name, at, host.read(CHUNK))
        print(f"{name}: {length} bytes imported", file=out)


def export(args, out):
    disk, vol = _open(args, readonly=True)
    with disk:
        length = vol.stat(args.name).length
        try:
            host = open(args.hostfile, "wb")
        except OSError as e:
            raise Usage(f"{args.hostfile}: cannot write the host file: {e.strerror}") from None
        with host:
            for at in range(0, length, CHUNK):
                host.write(vol.read(args.name, at, min(CHUNK, length - at)))


def rm(args, out):
    disk, vol = _open(args)
    with disk:
        vol.delete(args.name)


def map_(args, out):
    disk, vol = _open(args, readonly=True)
    with disk:
        r = vol.resolve(args.name, args.block)
        n, fd = vol.descriptor(args.name)
        steps = [f"VDISK block {r.block} of '{args.name}'",
                 f"descriptor {n} addresses[{r.fd_index}] = {A.describe(fd.addresses[r.fd_index])}"]
        if r.pointer_block is not None:
            steps.append(f"pointer block {r.pointer_block} addresses[{r.pb_index}] = "
                         f"{A.describe(r.address)}")
        steps.append(f"disk sector {r.disk_sector}" + (" (to be zeroed: reads as zeros)" if r.tbz else ""))
        print(" -> ".join(steps), file=out)


def fsck_(args, out):
    disk = DiskImage.open(args.image, readonly=not args.repair)
    with disk:
        report = fsck(find(disk), repair=args.repair)
    for line in report.lines():
        print(line, file=out)
    state = "clean" if report.clean else ("repaired" if report.repaired else
                                         f"{len(report.problems)} problems (run with --repair)")
    print(f"{args.image}: {len(report.files)} files, {state}", file=out)
    return 0 if report.clean else (1 if report.repaired else 4)


COMMANDS = {"mkfs": mkfs, "ls": ls, "create": create, "resize": resize, "import": import_,
            "export": export, "rm": rm, "map": map_, "fsck": fsck_}

if __name__ == "__main__":
    sys.exit(main())
