"""DiskImage: a host file of 512-byte sectors, and clear errors for bad files."""
import os

import pytest

from vmkit.hw.disk import DiskImage, DiskImageError


def test_create_is_sparse_zeroed_and_sized(tmp_path):
    path = tmp_path / "d.img"
    with DiskImage.create(path, 1 << 20) as disk:              # 512 MiB
        assert disk.sectors == 1 << 20
        assert disk.read(12345, 2) == bytes(1024)
    st = os.stat(path)
    assert st.st_size == 512 << 20
    assert st.st_blocks * 512 < 1 << 20                          # sparse: nearly nothing on disk


def test_write_read_roundtrip_and_layout(tmp_path):
    path = tmp_path / "d.img"
    data = bytes(range(256)) * 4
    with DiskImage.create(path, 8) as disk:
        disk.write(3, data)
        assert disk.read(3, 2) == data
        assert disk.read(2, 1) == bytes(512)
    raw = path.read_bytes()
    assert raw[3 * 512:5 * 512] == data                          # sector n at offset n*512


def test_persists_across_open(tmp_path):
    path = tmp_path / "d.img"
    disk = DiskImage.create(path, 4)
    disk.write(1, b"\xab" * 512)
    disk.close()
    disk.close()                                                 # twice is harmless
    with DiskImage.open(path) as again:
        assert again.sectors == 4 and again.read(1, 1) == b"\xab" * 512


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "d.img"
    DiskImage.create(path, 2).close()
    with pytest.raises(DiskImageError, match=f"{path}.*already exists"):
        DiskImage.create(path, 2)
    with DiskImage.create(path, 3, overwrite=True) as disk:
        assert disk.sectors == 3


@pytest.mark.parametrize("sectors", [0, -1, 1.5])
def test_create_needs_positive_sectors(tmp_path, sectors):
    with pytest.raises(DiskImageError, match="positive"):
        DiskImage.create(tmp_path / "d.img", sectors)


def test_open_missing(tmp_path):
    with pytest.raises(DiskImageError, match=r"nope\.img: no such disk image file"):
        DiskImage.open(tmp_path / "nope.img")


def test_open_directory(tmp_path):
    with pytest.raises(DiskImageError, match="is a directory"):
        DiskImage.open(tmp_path)
    with pytest.raises(DiskImageError, match="is a directory"):
        DiskImage.create(tmp_path, 1)


@pytest.mark.parametrize("size, what", [(0, "empty"), (1000, "not a multiple of the 512")])
def test_open_bad_size(tmp_path, size, what):
    path = tmp_path / "bad.img"
    path.write_bytes(bytes(size))
    with pytest.raises(DiskImageError, match=what) as e:
        DiskImage.open(path)
    assert str(path) in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permission cannot fail")
def test_open_unreadable(tmp_path):
    path = tmp_path / "locked.img"
    path.write_bytes(bytes(512))
    path.chmod(0)
    with pytest.raises(DiskImageError, match="permission denied"):
        DiskImage.open(path, readonly=True)


def test_readonly_refuses_writes(tmp_path):
    path = tmp_path / "d.img"
    DiskImage.create(path, 2).close()
    with DiskImage.open(path, readonly=True) as disk:
        assert disk.read(0, 2) == bytes(1024)
        with pytest.raises(DiskImageError, match="read-only"):
            disk.write(0, bytes(512))


def test_range_and_shape_errors_are_disk_errors(tmp_path):
    with DiskImage.create(tmp_path / "d.img", 4) as disk:
        with pytest.raises(DiskImageError, match="outside the disk's 4 sectors"):
            disk.read(3, 2)
        with pytest.raises(DiskImageError, match="whole 512-byte sectors"):
            disk.write(0, b"x" * 100)
    with pytest.raises(DiskImageError, match="closed"):
        disk.read(0, 1)
    assert isinstance(DiskImageError("x"), ValueError)


def test_permission_denied_message(tmp_path, monkeypatch):
    """The same check as above, provoked by hand so it also runs as root."""
    path = tmp_path / "locked.img"
    path.write_bytes(bytes(512))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(DiskImageError, match=r"locked\.img: permission denied.*readonly=True"):
        DiskImage.open(path)
