"""Exact retired-instruction counting for a Unicorn CPU (see counter.c).

The C hook is compiled once with the system C compiler into the package's
folder (or a temporary one if that is read-only), in one library with the
segment-limit filter (limits*.c), the platform's interrupt delivery (delivery.c) and its
I/O check (io.c), named by a hash of their texts and the header they share (vmkit.h).
Without a compiler the CPU falls back to Unicorn's `count=`: full slices are
still exact, but a slice that stops early is charged whole (`Counter.exact` is
False), and every delivery is delivery.py's Python.
"""
import ctypes
import hashlib
import pathlib
import shutil
import subprocess
import tempfile

from unicorn import UC_HOOK_CODE, UcError
from unicorn.x86_const import UC_X86_REG_EFLAGS
from unicorn.unicorn_py3 import unicorn as _uc

# one library: the counter, the limit filter (its checks, its configurations, its flat
# stretch), the delivery, the I/O check; and the header they share, hashed with them (an edit
# to it builds the library again) but not compiled on its own
SOURCES = tuple(pathlib.Path(__file__).with_name(name) for name in (
    "counter.c", "limits.c", "limits_prepared.c", "limits_flat.c", "delivery.c", "io.c"))
HEADERS = (pathlib.Path(__file__).with_name("vmkit.h"),)
_emu_start = _uc.uclib.uc_emu_start


MAX_BREAKS = 8                  # as in counter.c
NO_HIT = 0xFFFFFFFFFFFFFFFF


class _State(ctypes.Structure):
    """struct vmkit_counter in vmkit.h, field for field."""
    _fields_ = [("count", ctypes.c_uint64), ("budget", ctypes.c_uint64), ("stop", ctypes.c_void_p),
                ("spent", ctypes.c_uint64), ("nbreaks", ctypes.c_uint64), ("hit", ctypes.c_uint64),
                ("skip", ctypes.c_uint64), ("first", ctypes.c_uint64),
                ("breaks", ctypes.c_uint64 * MAX_BREAKS),
                ("fetch_from", ctypes.c_uint64), ("limits", ctypes.c_void_p),   # limits.py's
                ("fetch_fault", ctypes.c_uint64), ("fetch_count", ctypes.c_uint64),
                ("low", ctypes.c_uint64),          # min(breaks, fetch_from): below it, only a count
                ("wait_if", ctypes.c_uint64), ("woke", ctypes.c_uint64),          # run(wake=True)
                ("reg_read", ctypes.c_void_p), ("eflags_id", ctypes.c_int64),
                ("stretch_after", ctypes.c_uint64), ("flat", ctypes.c_uint64)]   # limits.py's flat stretch


def _build():
    text = b"".join(source.read_bytes() for source in SOURCES + HEADERS)
    name = f"_counter_{hashlib.sha1(text).hexdigest()[:12]}.so"
    for folder in (SOURCES[0].parent, pathlib.Path(tempfile.gettempdir())):
        lib = folder / name
        if lib.exists():
            return ctypes.CDLL(str(lib))
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            return None
        try:
            tmp = folder / f"{name}.{id(text)}.tmp"
            subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), *map(str, SOURCES)],
                           check=True, capture_output=True)
            tmp.replace(lib)
            return ctypes.CDLL(str(lib))
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


_LIB = None


def library():
    """The compiled SOURCES (the counter, the limit filter, the delivery, the I/O check),
    or None."""
    global _LIB
    if _LIB is None:
        _LIB = _build() or False
    return _LIB or None


class Counter:
    """Counts instructions on one Unicorn instance; `run(begin, budget)` -> executed."""

    def __init__(self, uc):
        self.uc = uc
        lib = library()
        self.exact = lib is not None
        if self.exact:
            self.state = _State(0, 0, ctypes.cast(_uc.uclib.uc_emu_stop, ctypes.c_void_p), 0, 0, NO_HIT)
            self.state.fetch_from = self.state.low = NO_HIT   # no fetch checked until limits.py says
            self.state.reg_read = ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p)
            self.state.eflags_id = UC_X86_REG_EFLAGS
            self._handle = ctypes.c_size_t()
            err = _uc.uclib.uc_hook_add(uc._uch, ctypes.byref(self._handle), ctypes.c_int(UC_HOOK_CODE),
                                        ctypes.cast(lib.vmkit_count, ctypes.c_void_p),
                                        ctypes.byref(self.state), ctypes.c_uint64(1), ctypes.c_uint64(0))
            if err:
                raise RuntimeError(f"cannot install the instruction counter (unicorn error {err})")

    @property
    def budget_spent(self):
        """Did the last run end because its budget ran out (rather than hlt)?
        Without the exact counter nobody knows: None."""
        return bool(self.state.spent) if self.exact else None

    @property
    def count(self):
        """Instructions retired so far in the current `run`."""
        return self.state.count if self.exact else 0

    def uncount(self):
        """The instruction just counted did not run (the slice stopped before it)."""
        if self.exact and self.state.count:
            self.state.count -= 1

    def set_breaks(self, addresses):
        """The addresses where a run stops before executing (counter.c): the stubs
        through which Python privileged software is entered (CPU.on_execute)."""
        if not self.exact:
            raise RuntimeError("stub breakpoints need the C counter (no C compiler was found)")
        if len(addresses) > MAX_BREAKS:
            raise RuntimeError(f"at most {MAX_BREAKS} stub addresses per CPU, asked for {len(addresses)}")
        for i, a in enumerate(addresses):
            self.state.breaks[i] = a
        self.state.nbreaks = len(addresses)
        self._lower()

    def set_fetch_from(self, address):
        """The lowest linear address an instruction may start at and still cross the limit
        of a code segment that can be loaded (limits.py; NO_HIT: none)."""
        if self.exact:
            self.state.fetch_from = address
            self._lower()

    def _lower(self):
        s = self.state
        s.low = min([s.fetch_from] + [s.breaks[i] for i in range(s.nbreaks)])

    @property
    def hit(self):
        """The stub address that ended the last run, or None."""
        return None if not self.exact or self.state.hit == NO_HIT else self.state.hit

    @property
    def woke(self):
        """Did the last run stop because IF became set (run(wake=True))?"""
        return self.exact and bool(self.state.woke)

    def run(self, begin, budget, until, skip=None, wake=False):
        """Run; returns (instructions executed, the UcError that stopped it or None).
        skip: a stub address the run starts at whose handler already ran.
        wake: stop before the first instruction after the first at which EFLAGS.IF is
        set (an interrupt waits for it: counter.c); exact counter only.
        (uc_emu_start is called as the binding's emu_start calls it, without its Python
        frame: a kernel entry makes two runs. A hook's failure is raised the same way.)"""
        if not self.exact:
            try:
                self.uc.emu_start(begin, until, count=budget)
                return budget, None
            except UcError as e:
                return budget, e
        s, uc = self.state, self.uc
        s.count = s.spent = s.woke = 0
        s.budget, s.hit, s.first, s.wait_if = budget, NO_HIT, 1, int(wake)
        s.skip = NO_HIT if skip is None else skip
        uc._hook_exception = None
        status = _emu_start(uc._uch, begin, until, 0, 0)
        failed = uc._hook_exception
        if status:
            error = UcError(status)
        elif failed is None:
            error = None
        elif isinstance(failed, UcError):
            error = failed
        else:
            raise failed
        executed, s.count = s.count, 0     # the caller adds it to its total
        return executed, error
