"""Claims 23, 43: `./kit vmfs ...` works on a disk image from the shell, like vmkfstools."""
import os
import subprocess
import sys
from pathlib import Path

from vmkit.hw.disk import DiskImage
from vmkit.kernel.vmfs_disk import find
from vmkit.kernel.vmfs_format import FD_SIZE, SECTOR

ROOT = Path(__file__).resolve().parents[1]


def kit(*args, ok=True):
    r = subprocess.run([str(ROOT / "kit"), "vmfs", *map(str, args)], capture_output=True, text=True,
                       timeout=60)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_mkfs_create_import_export_ls_rm_fsck(tmp_path):
    img, host, back = tmp_path / "d.img", tmp_path / "host.bin", tmp_path / "back.bin"
    assert "partition type 0xfb" in kit("mkfs", img, "--size", "64M", "--block-size", "64K").stdout
    assert os.stat(img).st_blocks * 512 < 4 << 20                     # sparse: 64 MiB costs little
    kit("create", img, "vm1.vmdk", "20M")                               # 320 blocks: pointer block
    host.write_bytes(os.urandom(200_000))
    kit("import", img, host, "disk2")
    kit("export", img, "disk2", back)
    assert back.read_bytes() == host.read_bytes()
    lines = kit("ls", img).stdout.splitlines()
    assert lines[0].startswith("total 324 blocks of 64 KiB in use")
    assert lines[1].split()[-5:] == ["320", "blocks", "1", "ptr", "vm1.vmdk"]
    assert lines[2].split()[-6:] == ["200000", "4", "blocks", "0", "ptr", "disk2"]
    assert "-> pointer block" in kit("map", img, "vm1.vmdk", 300).stdout
    assert kit("fsck", img).stdout.strip().endswith("2 files, clean")
    kit("rm", img, "vm1.vmdk")
    assert [ln.split()[-1] for ln in kit("ls", img).stdout.splitlines()[1:]] == ["disk2"]


def test_fsck_reports_then_repairs_and_exit_codes_say_which(tmp_path):
    img = tmp_path / "d.img"
    kit("mkfs", img, "--size", "16M", "--block-size", "4K", "--fds", "8")
    kit("create", img, "a", "40K")
    with DiskImage.open(img) as disk:                 # mark a free block in use behind VMFS's back
        part = find(disk)
        from vmkit.kernel.vmfs import Volume
        Volume.open(part)._mark("fb", [500], True)
    r = kit("fsck", img, ok=False)
    assert r.returncode == 4 and "FB bitmap (bit 500): marked in use, but no file reaches it" in r.stdout
    r = kit("fsck", img, "--repair", ok=False)
    assert r.returncode == 1 and "-> freed" in r.stdout
    assert kit("fsck", img).returncode == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    img = tmp_path / "d.img"
    (tmp_path / "odd.img").write_bytes(bytes(1000))
    (tmp_path / "raw.img").write_bytes(bytes(2 << 20))
    kit("mkfs", img, "--size", "8M", "--block-size", "4K", "--fds", "8")
    cases = [(("ls", tmp_path / "none.img"), "no such disk image file"),
             (("ls", tmp_path / "odd.img"), "not a multiple of the 512-byte sector"),
             (("ls", tmp_path / "raw.img"), "sector 0 is blank: no partition table"),
             (("rm", img, "ghost"), "file 'ghost': no such file"),
             (("create", img, "big", "1G"), "FB bitmap"),
             (("create", img, "x", "12Q"), "is not a size"),
             (("import", img, tmp_path / "nothere"), "cannot read the host file"),
             (("mkfs", tmp_path / "tiny.img", "--size", "64K"), "do not fit a disk of 128"),
             (("mkfs", tmp_path / "raw.img", "--block-size", "1M"), "no room for a file block"),
             (("map", img, "ghost", "0"), "no such file")]
    for args, message in cases:
        r = kit(*args, ok=False)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "tiny.img").exists()            # a failed mkfs leaves nothing behind
    assert (tmp_path / "raw.img").read_bytes() == bytes(2 << 20)
    with DiskImage.open(img) as disk:                 # a damaged descriptor is named, not a traceback
        part = find(disk)
        from vmkit.kernel.vmfs import Volume
        sb = Volume.open(part).sb
        disk.write(part.first + sb.fd_table // SECTOR, b"\x01" * SECTOR)
    r = kit("ls", img, ok=False)
    assert r.returncode == 2 and "file descriptor 0 (checksum)" in r.stderr
    r = kit("fsck", img, "--repair", ok=False)
    assert r.returncode == 1 and "descriptor 0 cleared" in r.stdout
    assert FD_SIZE == 0x800
