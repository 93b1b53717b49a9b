"""Segment limits, which Unicorn does not check: the platform does.

An access whose offset runs past the limit of the segment it goes through is a
#GP(0) on a real CPU, or a #SS(0) when that segment is SS, at every CPL, and the
CPU checks it *before* paging translates the address. QEMU (and so Unicorn
2.1.4) loads base and limit into the hidden part of a segment register but
checks neither on a load, a store or a fetch. Checking every access from Python
would cost more than the emulation; so only accesses that *can* cross a limit
are looked at. What is checked, and how:

  - Data accesses, paging off (linear = physical): the linear ranges past the
    limit of every segment that can be loaded and does not reach 4 GiB get a
    memory hook limited to that range (limits_prepared.py: which ranges, and the
    configurations the filter keeps). In the hook, a filter in C (limits.c:
    `vmkit_limit`) lets through any access inside the limit of every segment
    register loaded now, and any access whose instruction cannot use the
    registers it is outside of (the instruction's prefixes and opcode, read in C:
    the kernel's pushes and flat DS go through while FS and GS still hold the
    COS's shorter segment); what is left is decoded in Python (limits_decode.py):
    the segment the instruction uses, and its limit decides.
  - Paging on: no hook (a memory hook is given the *physical* address then). A
    limit is checked where the access also faults on its page, and the #GP/#SS
    delivered instead of the #PF (limits_paging.py).
  - Instruction fetch: the C counter's code hook, which runs before every
    instruction anyway, compares the instruction's linear address with the
    lowest address past the limit of a loadable code segment (counter.c:
    `fetch_from`; a code hook is given the *linear* address, paged or not), and
    above it reads CS and checks the instruction's last byte against CS's
    limit (limits.c: `fetch_past_limit`): past it, the run stops before the
    instruction and #GP(0) is delivered at it. A fetch that page-faults is
    checked the same way in `page_fault` (limits_paging.py). A CS from an LDT is
    not checked.
  - An interrupt or exception: the gate's offset against the limit of the code
    segment it names (delivery.py: #GP, before anything is pushed).
  - A flat stretch: at CPL 0, paging off, with CS, SS, DS and ES flat, the hooks
    are off and the C counter guards each instruction instead (limits_flat.py).

SegmentLimits is one CPU's checks, in parts as the CPU is (cpu.py): Configurations
(limits_prepared.py), FlatStretch (limits_flat.py), SlowPath (limits_decode.py) and
PagingChecks (limits_paging.py). The C filter's state (struct vmkit_limits, vmkit.h) is
declared here. Without a C compiler (counter.library() is None) PythonChecks
(limits_python.py) hooks the same ranges in Python, and the Python counter checks the fetch.
"""
import ctypes

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc

from .limits_decode import FLAT, SEGMENT_REGS, SlowPath, Violation
from .limits_flat import STRETCH_AFTER, FlatStretch
from .limits_paging import PagingChecks
from .limits_python import PythonChecks
from .limits_prepared import PREPARED, RANGES, SELECTORS, Configurations, _Prepared
from .x86 import GP

_SLOW = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, ctypes.c_int)
_REG_READ_BATCH = ctypes.cast(_uc.uclib.uc_reg_read_batch, ctypes.c_void_p)


class _State(ctypes.Structure):
    """struct vmkit_limits in vmkit.h, field for field."""
    _fields_ = [("slow", ctypes.c_void_p),
                ("regs", ctypes.c_int64 * 6), ("nsel", ctypes.c_uint64),
                ("base", ctypes.c_uint64 * SELECTORS), ("limit", ctypes.c_uint64 * SELECTORS),
                ("code", ctypes.c_uint64 * SELECTORS),
                ("ram", ctypes.c_void_p), ("ram_size", ctypes.c_uint64), ("eip_id", ctypes.c_int64), ("cr0_id", ctypes.c_int64),
                ("quiet", ctypes.c_uint64), ("reg_read_batch", ctypes.c_void_p),
                ("calls", ctypes.c_uint64), ("looked", ctypes.c_uint64),
                ("gdt_base", ctypes.c_uint64), ("gdt_limit", ctypes.c_uint64), ("gdtr_id", ctypes.c_int64),
                ("counter", ctypes.c_void_p), ("flat_run", ctypes.c_uint64), ("fsgs_flat", ctypes.c_uint64),
                ("eflags_id", ctypes.c_int64), ("dr7_id", ctypes.c_int64),
                ("hook_add", ctypes.c_void_p), ("hook_del", ctypes.c_void_p), ("hook_type", ctypes.c_int64),
                ("suspended", ctypes.c_uint64),
                ("nranges", ctypes.c_uint64), ("first", ctypes.c_uint64 * RANGES), ("last", ctypes.c_uint64 * RANGES),
                ("nhooks", ctypes.c_uint64), ("hooks", ctypes.c_uint64 * RANGES),
                ("current", ctypes.c_int64), ("clock", ctypes.c_uint64),
                ("reused", ctypes.c_uint64), ("misses", ctypes.c_uint64),
                ("pending", _Prepared), ("prepared", _Prepared * PREPARED)]


class SegmentLimits(Configurations, FlatStretch, SlowPath, PagingChecks, PythonChecks):
    """One CPU's limit checks (see the module's docstring)."""

    def __init__(self, cpu, library):
        self.cpu = cpu
        self.lib = library
        self.pending = ctypes.c_uint64()    # 1 while a violation is held: intr.c reads it
        self.violation = None
        self.decoded = 0                    # accesses the C filter handed to Python (the slow path)
        self.stretches = 0                  # flat stretches begun (tests, figures)
        self.state = None                   # the C filter's (limits.c); `quiet` > 0 while the
        if library is None:                 # platform delivers: its register writes load CS and SS
            self._python_start()            # (limits_python.py)
            return
        self._slow = _SLOW(self._on_slow)   # kept alive: C holds a pointer to it
        self.state = _State(ctypes.cast(self._slow, ctypes.c_void_p).value,
                            (ctypes.c_int64 * 6)(*(getattr(X, "UC_X86_REG_" + r.upper())
                                                   for r in SEGMENT_REGS)), 0)
        s = self.state
        s.ram, s.ram_size = cpu.memory.address, cpu.memory.size
        s.eip_id, s.cr0_id, s.reg_read_batch = X.UC_X86_REG_EIP, X.UC_X86_REG_CR0, _REG_READ_BATCH.value
        s.gdtr_id = X.UC_X86_REG_GDTR
        s.eflags_id, s.dr7_id = X.UC_X86_REG_EFLAGS, X.UC_X86_REG_DR7
        s.hook_add = ctypes.cast(_uc.uclib.uc_hook_add, ctypes.c_void_p).value
        s.hook_del = ctypes.cast(_uc.uclib.uc_hook_del, ctypes.c_void_p).value
        s.hook_type, s.current = UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, -1
        self._at = ctypes.addressof(s)
        self._uch = cpu.uc._uch
        self._refresh, self._install = library.vmkit_limits_refresh, library.vmkit_limits_install
        self._suspend, self._resume_c = library.vmkit_limits_suspend, library.vmkit_limits_resume
        for f in (self._refresh, self._install, self._resume_c):
            f.restype = ctypes.c_int64
        self._suspend.restype = None
        self._refresh.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint64)
        for f in (self._install, self._suspend, self._resume_c):
            f.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        c = self._counter = cpu.counter.state
        c.limits = ctypes.addressof(s)      # the fetch check reads CS's limit here
        s.counter = ctypes.addressof(c)     # the filter asks the counter for a flat stretch
        c.stretch_after = STRETCH_AFTER

    @property
    def violation(self):
        """The access past a limit the last run stopped for (limits_decode.py), or None."""
        return self._violation

    @violation.setter
    def violation(self, v):
        self._violation = v
        self.pending.value = v is not None

    # ---- after the run stopped -----------------------------------------------------
    def take(self):
        """The violation the last run stopped for (its store undone; or an instruction
        fetched past CS's limit, which the counter stopped before), or None."""
        v, self.violation = self.violation, None
        c = self.cpu.counter.state
        if v is None and c is not None and c.fetch_fault:
            address, c.fetch_fault = c.fetch_fault - 1, 0
            cs = self._descriptor(self.cpu["cs"])
            v = Violation(GP, self.cpu["eip"], address, 1, "cs", cs.limit if cs else FLAT, None, c.fetch_count)
            return v
        if isinstance(v, Exception):            # the platform's own failure: stop, as a handler's does
            self.cpu.stop(f"the segment-limit check failed: {type(v).__name__}: {v}")
            raise v
        if v is not None and v.old is not None:          # physical: drops translated code too
            self.cpu.memory.write(self.cpu.translate_linear(v.address), v.old)
        return v
