"""Exact retired-instruction counting for a Unicorn CPU (see counter.c).

The C hook is compiled once with the system C compiler into the package's
folder (or a temporary one if that is read-only), in one library with the
segment-limit filter (limits*.c), the platform's interrupt delivery (delivery.c) and its
I/O check (io.c), named by a hash of their texts and the header they share (vmkit.h).
Without a compiler the same counter is a Python code hook (Counter._python_hook):
virtual time, the stub breakpoints, the wait for IF and the fetch check stay exact (the
recorded traces are the same), at the cost of a Python call per instruction; every
delivery and I/O check is the Python's (delivery.py, io.py), and the segment-limit
checks are made in Python (limits_python.py). `library()` says so once, as a warning.
"""
import ctypes
import hashlib
import pathlib
import shutil
import subprocess
import tempfile
import warnings

from unicorn import UC_HOOK_CODE, UcError
from unicorn.x86_const import UC_X86_REG_EFLAGS
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC

from .x86 import EFLAGS_IF

# one library: the counter, the limit filter (its checks, its configurations, its flat
# stretch), the delivery, the I/O check; and the header they share, hashed with them (an edit
# to it builds the library again) but not compiled on its own
SOURCES = tuple(pathlib.Path(__file__).with_name(name) for name in (
    "counter.c", "limits.c", "limits_prepared.c", "limits_flat.c", "delivery.c", "io.c", "switch_seal.c",
    "pass_by.c", "intr.c", "switch_verify.c"))
HEADERS = (pathlib.Path(__file__).with_name("vmkit.h"),)
_emu_start = _uc.uclib.uc_emu_start


MAX_BREAKS = 8                  # as in counter.c
NO_HIT = 0xFFFFFFFFFFFFFFFF
_NONE_HELD = memoryview(bytes(8)).cast("Q")


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
                ("stretch_after", ctypes.c_uint64), ("flat", ctypes.c_uint64),   # limits.py's flat stretch
                ("seal", ctypes.c_void_p),        # switch_seal.py's: a switch's step done at a breakpoint
                ("pass_at", ctypes.c_uint64), ("pass_on", ctypes.c_uint64), ("pass_cs", ctypes.c_uint64),
                ("pass_word", ctypes.c_uint64), ("pass_vector", ctypes.c_uint64),   # pass_by.py's
                ("pass_below", ctypes.c_uint64), ("passed", ctypes.c_uint64), ("ram", ctypes.c_void_p),
                ("ram_size", ctypes.c_uint64), ("cs_id", ctypes.c_int64), ("esp_id", ctypes.c_int64)]


def _build():
    """The library, built if no folder holds it yet; None if it cannot be (no compiler,
    or the compiler failed in every folder)."""
    text = b"".join(source.read_bytes() for source in SOURCES + HEADERS)
    name = f"_counter_{hashlib.sha1(text).hexdigest()[:12]}.so"
    folders = (SOURCES[0].parent, pathlib.Path(tempfile.gettempdir()))
    for folder in folders:                 # built before (a compiler since removed, say)
        if (folder / name).exists():
            return ctypes.CDLL(str(folder / name))
    cc = _compiler()
    if cc is None:
        return None
    for folder in folders:
        lib = folder / name
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
COMPILERS = ("cc", "gcc", "clang")
WITHOUT = ("vmkit: cannot build its C library ({why}); running without it: the same machine, but its "
           "instruction counter and segment-limit checks run in Python, much slower (the graders take ~80 s "
           "instead of ~5). Install a C compiler "
           "(Debian/Ubuntu: apt-get install gcc) and start Python again.")


def _compiler():
    for name in COMPILERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def library():
    """The compiled SOURCES (the counter, the limit filter, the delivery, the I/O check),
    or None (no compiler, or it failed: a warning says so, once a process)."""
    global _LIB
    if _LIB is None:
        _LIB = _build() or False
        if _LIB is False:
            why = (f"no C compiler: none of {', '.join(COMPILERS)} on PATH" if _compiler() is None
                   else f"{_compiler()} failed to compile {', '.join(s.name for s in SOURCES)}")
            warnings.warn(WITHOUT.format(why=why), RuntimeWarning, stacklevel=2)
    return _LIB or None


class _PythonState:
    """counter.c's state for the counter in Python (no C compiler): the same fields, as plain
    attributes (the CPU's run loop, the board's clock and stubs.py read them by these names)."""
    __slots__ = [name for name, _ in _State._fields_]

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)
        self.breaks = [0] * MAX_BREAKS
        self.hit = self.fetch_from = self.low = self.skip = NO_HIT


class Counter:
    """Counts instructions on one Unicorn instance; `run(begin, budget)` -> executed.

    Without a C compiler the same hook is Python (`_python_hook`): virtual time, the stub
    breakpoints and the fetch check stay exact, each instruction a Python call (slower)."""

    def __init__(self, uc):
        self.uc = uc
        lib = library()
        self.compiled = lib is not None
        self._handle = ctypes.c_size_t()
        self._held, self._drain = _NONE_HELD, None       # (drain)
        if self.compiled:
            self.state = _State(0, 0, ctypes.cast(_uc.uclib.uc_emu_stop, ctypes.c_void_p), 0, 0, NO_HIT)
            self.state.fetch_from = self.state.low = NO_HIT   # no fetch checked until limits.py says
            self.state.reg_read = ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p)
            self.state.eflags_id = UC_X86_REG_EFLAGS
            hook, data = ctypes.cast(lib.vmkit_count, ctypes.c_void_p), ctypes.byref(self.state)
        else:
            self.state = _PythonState()
            self._hook_fn = HOOK_CODE_CFUNC(self._python_hook())    # kept: Unicorn calls it
            hook, data = ctypes.cast(self._hook_fn, ctypes.c_void_p), None
        err = _uc.uclib.uc_hook_add(uc._uch, ctypes.byref(self._handle), ctypes.c_int(UC_HOOK_CODE),
                                    hook, data, ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise RuntimeError(f"cannot install the instruction counter (unicorn error {err})")

    def _python_hook(self):
        """counter.c's vmkit_count in Python, on the same state: before each instruction,
        stop at the budget, at a breakpoint (counted: the handler runs "at" it), or, with
        wait_if, at the first boundary after the first where EFLAGS.IF is set."""
        s, uch, stop, read = self.state, self.uc._uch, _uc.uclib.uc_emu_stop, _uc.uclib.uc_reg_read
        eflags = ctypes.c_uint64()
        eflags_ref = ctypes.byref(eflags)

        def count(_uch, address, size, _data):
            first = s.first
            if s.wait_if and not first:
                read(uch, UC_X86_REG_EFLAGS, eflags_ref)
                if eflags.value & EFLAGS_IF:
                    s.woke = 1
                    stop(uch)
                    return
            s.first = 0
            if address >= s.low:
                if s.nbreaks and not (first and address == s.skip) and address in s.breaks[:s.nbreaks]:
                    s.hit = address
                    s.count += 1
                    stop(uch)
                    return
                if address >= s.fetch_from and s.limits and s.limits(address, size):
                    s.fetch_fault, s.fetch_count = address + 1, s.count
                    stop(uch)
                    return
            if s.count >= s.budget:
                s.spent = 1
                stop(uch)
                return
            s.count += 1
        return count

    def seal(self, arming, count, drain):
        """A world switch's step done at a breakpoint (switch_seal.py): `arming`, the C's
        struct for this CPU (kept alive here: the hook holds its address). The events it
        records wait in a buffer whose count is `count[0]`: `drain()` is called at the end of
        every run that left some, while this counter still holds the run's count (the CPU
        adds it to its total after)."""
        self._arming = arming
        self.state.seal = ctypes.addressof(arming)
        self._held, self._drain = count, drain

    @property
    def budget_spent(self):
        """Did the last run end because its budget ran out (rather than hlt)?"""
        return bool(self.state.spent)

    @property
    def count(self):
        """Instructions retired so far in the current `run`."""
        return self.state.count

    def uncount(self):
        """The instruction just counted did not run (the slice stopped before it)."""
        if self.state.count:
            self.state.count -= 1

    def set_breaks(self, addresses):
        """The addresses where a run stops before executing (counter.c): the stubs
        through which Python privileged software is entered (CPU.on_execute)."""
        if len(addresses) > MAX_BREAKS:
            raise RuntimeError(f"at most {MAX_BREAKS} stub addresses per CPU, asked for {len(addresses)}")
        for i, a in enumerate(addresses):
            self.state.breaks[i] = a
        self.state.nbreaks = len(addresses)
        self.state.pass_on = 0          # a handler added or removed: pass_by.py arms it again
        if self.state.seal:             # and a switch's step armed in C is the Python's (a probe
            self._arming.armed = 0      # added at the dispatcher mid-switch sees SAVED)
        self._lower()

    def set_fetch_from(self, address):
        """The lowest linear address an instruction may start at and still cross the limit
        of a code segment that can be loaded (limits.py; NO_HIT: none)."""
        self.state.fetch_from = address
        self._lower()

    def _lower(self):
        s = self.state
        s.low = min([s.fetch_from] + [s.breaks[i] for i in range(s.nbreaks)])

    @property
    def hit(self):
        """The stub address that ended the last run, or None."""
        return None if self.state.hit == NO_HIT else self.state.hit

    @property
    def woke(self):
        """Did the last run stop because IF became set (run(wake=True))?"""
        return bool(self.state.woke)

    def run(self, begin, budget, until, skip=None, wake=False):
        """Run; returns (instructions executed, the UcError that stopped it or None).
        skip: a stub address the run starts at whose handler already ran.
        wake: stop before the first instruction after the first at which EFLAGS.IF is
        set (an interrupt waits for it: counter.c).
        (uc_emu_start is called as the binding's emu_start calls it, without its Python
        frame: a kernel entry makes two runs. A hook's failure is raised the same way.)"""
        s, uc = self.state, self.uc
        s.count = s.spent = s.woke = 0
        s.budget, s.hit, s.first, s.wait_if = budget, NO_HIT, 1, int(wake)
        s.skip = NO_HIT if skip is None else skip
        uc._hook_exception = None
        status = _emu_start(uc._uch, begin, until, 0, 0)
        if self._held[0]:
            self._drain()
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
