"""VMFS figures for `./kit bench`: the tools on a 1 GiB sparse image, and file MB/s beside a raw
read of the image file, in one run (asserts nothing; the ratios are what to read)."""
import os
import subprocess
import sys
import tempfile
import time

from vmkit.hw.disk import DiskImage
from vmkit.kernel.vmfs import Volume
from vmkit.kernel.vmfs_disk import add_partition, find

MB = 1 << 20


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def tool(*args):
    subprocess.run([sys.executable, "-m", "vmkit.kernel.vmfs_tool", *map(str, args)], check=True,
                   capture_output=True)


def tools_on_1g(folder):
    img = os.path.join(folder, "tools.img")
    return {"mkfs (1 GiB sparse image)": timed(lambda: tool("mkfs", img, "--size", "1G")),
            "create a 512 MiB file": timed(lambda: tool("create", img, "big.vmdk", "512M")),
            "fsck": timed(lambda: tool("fsck", img)),
            "image's host space (MiB)": os.stat(img).st_blocks * 512 / MB}


def throughput(folder, size=64 * MB):
    """(write MB/s, read MB/s, raw read MB/s of the same extent of the image file)."""
    img = os.path.join(folder, "rw.img")
    data = os.urandom(size)
    with DiskImage.create(img, (size + 64 * MB) // 512) as disk:
        vol = Volume.mkfs(add_partition(disk))
        vol.create("f", size)
        w = timed(lambda: vol.write("f", 0, data))
        vol = Volume.open(find(disk))
        r = min(timed(lambda: vol.read("f")) for _ in range(3))
        start = vol.resolve("f", 0).disk_sector * 512
    fd = os.open(img, os.O_RDONLY)
    try:
        raw = min(timed(lambda: os.pread(fd, size, start)) for _ in range(3))
    finally:
        os.close(fd)
    return size / MB / w, size / MB / r, size / MB / raw


def kernel_path(folder, size=64 * MB):
    """(write, read) MB/s of a VMFS file through the kernel's SCSI path (ScsiDisk, shared queue)."""
    from vmkit.kernel.vmfs_scsi import ScsiDisk
    from vmkit.lessons import takeover
    board, cos, loader = takeover.takeover(disk=DiskImage.create(os.path.join(folder, "k.img"),
                                                                (size + 16 * MB) // 512))
    try:
        vol = Volume.mkfs(add_partition(ScsiDisk(loader.kernel)), block_size=64 << 10, fds=8)
        vol.create("f", size)
        data = os.urandom(size)
        w = timed(lambda: vol.write("f", 0, data))
        r = min(timed(lambda: vol.read("f")) for _ in range(3))      # as the raw read: best of 3
    finally:
        board.close()
    return size / MB / w, size / MB / r


def guest_path(folder, size=4 * MB):
    """(write, read) MB/s of a guest streaming its VDISK in 256 KiB requests: its SCSI driver at
    CPL 3, the VMM's virtual adapter, the kernel's resolution, the shared controller."""
    from vmkit.kernel.vdisk import MAX_TRANSFER
    from vmkit.lessons import takeover
    from vmkit.vmm import disk_guest
    from vmkit.vmm.vdisk_device import detach_vdisk, install_vm_with_vdisk
    img = os.path.join(folder, "g.img")
    with DiskImage.create(img, (size + 16 * MB) // 512) as disk:
        Volume.mkfs(add_partition(disk), block_size=MB, fds=8).create("g.vmdk", size)
    board, cos, loader = takeover.takeover(disk=DiskImage.open(img))
    count, rates = MAX_TRANSFER // 512, []
    try:
        for op in ("write", "read"):
            steps = [("stream", 0, count, size // MAX_TRANSFER, op)]
            vm = install_vm_with_vdisk(loader.kernel, disk_guest.program(op, steps), disk_guest.MEMORY,
                                       op, "g.vmdk")
            t = time.perf_counter()
            board.run_until(lambda: b"done" in vm.vmm.console, 200_000_000, f"the guest's {op}s")
            rates.append(size / MB / (time.perf_counter() - t))
            detach_vdisk(loader.kernel, vm)
    finally:
        board.close()
    return rates


def main():
    with tempfile.TemporaryDirectory() as folder:
        for what, value in tools_on_1g(folder).items():
            unit = "" if "host space" in what else " s"
            print(f"VMFS tools, {what + ':':40} {value:8.2f}{unit}")
        w, r, raw = throughput(folder)
        print(f"VMFS file, 64 MiB written (image file):          {w:8.0f} MB/s")
        print(f"VMFS file, 64 MiB read (image file):             {r:8.0f} MB/s  ({r / raw:.2f} of raw)")
        print(f"raw read of the same extent of the image file:   {raw:8.0f} MB/s")
        kw, kr = kernel_path(folder)
        print(f"VMFS file via the kernel's SCSI path, 64 MiB written: {kw:6.1f} MB/s")
        print(f"VMFS file via the kernel's SCSI path, 64 MiB read:    {kr:6.1f} MB/s  ({kr / raw:.3f} of raw)")
        gw, gr = guest_path(folder)
        print(f"VDISK from a guest (256 KiB requests), 4 MiB written: {gw:6.1f} MB/s")
        print(f"VDISK from a guest (256 KiB requests), 4 MiB read:    {gr:6.1f} MB/s  ({gr / raw:.3f} of raw)")


if __name__ == "__main__":
    main()
