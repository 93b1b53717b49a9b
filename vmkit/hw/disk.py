"""A disk image: a host file of 512-byte sectors behind the SCSI controller.

The file is the disk, byte for byte: sector n lives at offset n * 512, so
a learner can look at the image with `xxd` and see what their driver
wrote. Images are created sparse (`truncate`), so a 1 GiB disk costs no
host space until it is written. Reads and writes go straight to the file
with `pread`/`pwrite` (no Python-side cache), so two controllers opened on
the same file in turn see each other's writes and a crash loses nothing
the guest was told was written; `flush()` adds an `fsync` for durability.

Every problem with the host file is a `DiskImageError` (a ValueError) that
names the path and the problem, because the person who sees it is a
learner pointing a notebook at the wrong file, not a Python programmer.
Range errors are DiskImageErrors too, but the SCSI controller checks
ranges itself and answers the guest with CHECK CONDITION: the guest can
never make this class raise into the board.
"""
import os
import stat

SECTOR = 512


class DiskImageError(ValueError):
    """The host file cannot serve as a disk image (or a request falls outside it)."""


class DiskImage:
    SECTOR = SECTOR

    def __init__(self, path, fd, sectors, readonly):
        """Use `DiskImage.create` or `DiskImage.open`; this only stores what they checked."""
        self.path, self._fd, self.sectors, self.readonly = str(path), fd, sectors, readonly

    # ---- making and opening ---------------------------------------------
    @classmethod
    def create(cls, path, sectors, overwrite=False):
        """A new all-zero image of `sectors` sectors, sparse on the host."""
        path = os.fspath(path)
        if not isinstance(sectors, int) or sectors <= 0:
            raise DiskImageError(f"{path}: a disk needs a positive whole number of sectors, "
                                 f"not {sectors!r}")
        if os.path.isdir(path):
            raise DiskImageError(f"{path}: is a directory, not a disk image file")
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise DiskImageError(f"{path}: already exists; refusing to overwrite it "
                                 f"(pass overwrite=True to replace it)") from None
        except OSError as e:
            raise DiskImageError(f"{path}: cannot create the disk image: {e.strerror}") from None
        try:
            os.ftruncate(fd, sectors * SECTOR)
        except OSError as e:
            os.close(fd)
            raise DiskImageError(f"{path}: cannot size the image to {sectors} sectors: "
                                 f"{e.strerror}") from None
        return cls(path, fd, sectors, readonly=False)

    @classmethod
    def open(cls, path, readonly=False):
        """An existing image; its size must be a positive multiple of 512 bytes."""
        path = os.fspath(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DiskImageError(f"{path}: no such disk image file") from None
        except OSError as e:
            raise DiskImageError(f"{path}: cannot look at the disk image: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise DiskImageError(f"{path}: is a directory, not a disk image file")
        if not stat.S_ISREG(st.st_mode):
            raise DiskImageError(f"{path}: is not a regular file")
        if st.st_size == 0:
            raise DiskImageError(f"{path}: is empty (0 bytes); a disk image holds at least "
                                 f"one {SECTOR}-byte sector")
        if st.st_size % SECTOR:
            raise DiskImageError(f"{path}: size {st.st_size} bytes is not a multiple of the "
                                 f"{SECTOR}-byte sector ({st.st_size % SECTOR} bytes left over)")
        try:
            fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except PermissionError:
            what = "readable" if readonly else "readable and writable"
            hint = "" if readonly else " (open it with readonly=True to only read it)"
            raise DiskImageError(f"{path}: permission denied: the image is not {what} "
                                 f"by this user{hint}") from None
        except OSError as e:
            raise DiskImageError(f"{path}: cannot open the disk image: {e.strerror}") from None
        return cls(path, fd, st.st_size // SECTOR, readonly)

    # ---- sectors ---------------------------------------------------------
    def _check(self, lba, count):
        if self._fd is None:
            raise DiskImageError(f"{self.path}: the disk image is closed")
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise DiskImageError(f"{self.path}: sectors {lba}..{lba + count - 1} are outside "
                                 f"the disk's {self.sectors} sectors")

    def read(self, lba, count):
        """`count` sectors from `lba` (a sparse hole reads as zeros)."""
        self._check(lba, count)
        data = os.pread(self._fd, count * SECTOR, lba * SECTOR)
        return data.ljust(count * SECTOR, b"\0")      # another process shrank the file: zeros

    def write(self, lba, data):
        """Write whole sectors starting at `lba`."""
        data = bytes(data)
        if len(data) % SECTOR:
            raise DiskImageError(f"{self.path}: a write must be whole {SECTOR}-byte sectors, "
                                 f"got {len(data)} bytes")
        self._check(lba, len(data) // SECTOR)
        if self.readonly:
            raise DiskImageError(f"{self.path}: the disk image is open read-only")
        view = memoryview(data)
        offset = lba * SECTOR
        while view:                                   # pwrite may write less than asked
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    # ---- lifetime --------------------------------------------------------
    @property
    def closed(self):
        return self._fd is None

    def flush(self):
        """Make every completed write durable on the host (fsync)."""
        if self._fd is not None and not self.readonly:
            os.fsync(self._fd)

    def close(self):
        """Flush and release the file; closing twice is harmless."""
        if self._fd is not None:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else ("ro" if self.readonly else "rw")
        return f"<DiskImage {self.path} {self.sectors} sectors {state}>"
