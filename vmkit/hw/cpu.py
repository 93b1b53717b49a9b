"""One x86 CPU: Unicorn executes instructions, the platform delivers interrupts.

Unicorn delivers nothing by itself: every `int n` and exception reaches a
hook, and device interrupts do not exist for it at all. So the platform does
what the silicon would do (delivery.py): read IDTR from the CPU, fetch the
gate from *that* IDT in emulated memory, check it, switch to the TSS's ring-0
stack when coming from CPL 3, push the frame (and the error code), clear IF
for an interrupt gate, and jump. Whoever's IDT is loaded gets the interrupts.

Measured Unicorn 2.1.4 defects worked around here (see also
unicorn_quirks.py):
  - the exception record is never cleared (second fault becomes #DF);
  - `reg_write` of a ring-0 CS/SS while CPL 3 fails: we clear CR0.PE for
    the selector load (real-mode loads are unchecked and make CPL 0), set
    PE again, and load the selectors once more so their descriptors are
    read from the GDT;
  - `in`/`out` never check IOPL or the TSS I/O bitmap: we do (io.c), and raise #GP(0);
  - `int 6` reaches the invalid-opcode hook, not the interrupt hook: we tell
    it from #UD by its bytes;
  - a register write inside an I/O hook is not honoured until the
    translation block ends, so an I/O fault stops the slice and is
    delivered from the run loop, with EIP pointing at the `in`/`out`.
Virtual time: Unicorn's `count=` does not report how many instructions ran
before an early stop (hlt, an I/O fault, a fault on missing memory), so
the CPU counts retired instructions itself with a code hook (counter.c; counter.py's
twin in Python without a C compiler):
virtual time is exact, and a slice can be cut short when a device
schedules an event inside it.

The CPU is in parts, each a mixin in a file of its own: registers.py (its registers by
name, through Unicorn's C API), intr.py (Unicorn's interrupt and invalid-opcode hooks: the
common case in C, intr.c), delivery.py (interrupts and exceptions), io.py (in/out and
their check), mmu.py (memory as this CPU sees it: linear addresses, its TLB, its translated
code), stubs.py (Python entered at a stub's address, and the CPU made to execute from
inside a handler). Here: the CPU made, the run loop, and Unicorn's other hooks.
"""
import ctypes

import unicorn
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.arch.intel import UcRegMMR
from unicorn.unicorn_py3.unicorn import uc_hook_h, HOOK_INSN_INVALID_CFUNC
from unicorn import (Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL,
                     UC_HOOK_INSN_INVALID, UC_HOOK_MEM_UNMAPPED)
from unicorn import x86_const as X

from .counter import Counter, library, NO_HIT
from .delivery import Delivery
from .intr import Interrupts
from .io import PortAccess
from .limits import SegmentLimits
from .mmu import MMU
from .registers import Registers
from .stubs import Stubs
from .x86 import decode_gate, GP

MEMORY_ERRORS = {getattr(unicorn, "UC_ERR_" + n) for n in (
    "READ_UNMAPPED", "WRITE_UNMAPPED", "FETCH_UNMAPPED", "READ_PROT", "WRITE_PROT", "FETCH_PROT")}
NO_ADDRESS = 0xFFFFFFFF          # `until` for emu_start: never reached
_lib = _uc.uclib
_reg_read = _lib.uc_reg_read      # run()'s EIP, one C call (looked up once)
EIP = X.UC_X86_REG_EIP


class CPU(Registers, Interrupts, Delivery, PortAccess, MMU, Stubs):
    def __init__(self, index, board):
        self.lead = 0                        # instructions ahead of the board's clock (board.run)
        self.index = index
        self.board = board
        self.memory = board.memory
        self.trace = board.trace
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map_ptr(0, self.memory.size, UC_PROT_ALL, self.memory.address)
        self.memory.attach(self.invalidate_code)
        self.gate_decoder = decode_gate      # exercise 00 plugs a learner's decoder in here
        self.halted = False
        self.shutdown = None                 # why the CPU stopped for good (triple fault)
        self.delivered = 0                   # vectors delivered, for counters and benchmarks
        self._io_fault = None
        self._stop_requested = False
        self._stubs = {}                          # address -> handlers (on_execute)
        self._resume_at = None                    # a stub whose handler ran; resume past the check
        self.done = 0
        uc = self.uc
        self.counter = Counter(uc)
        self._count_state = self.counter.state     # (progress)
        self._uch, self._scratch, self._mmr = uc._uch, ctypes.c_uint64(), UcRegMMR()
        self._scratch_ref = ctypes.byref(self._scratch)
        self._eip = ctypes.c_uint64()             # run()'s own: only EIP is ever read into it
        self._eip_ref = ctypes.byref(self._eip)
        self._batches, self._buffers = {}, {}      # (registers.py's, mmu.py's)
        self._readers = self._make_readers()
        lib = library()
        self.limits = SegmentLimits(self, lib)
        self._hooks = self._hook_interrupts(lib) + [         # (intr.py)
            self._hook(UC_HOOK_INSN_INVALID, HOOK_INSN_INVALID_CFUNC, self._on_invalid)]
        self._unmapped = None               # the address of the last access to memory the machine lacks
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)   # becomes #GP in run()
        self._io = self._hook_ports(lib)      # in/out: io.py (with the C library, io.c's check)

    def _hook(self, kind, cfunc, method, *instruction):
        """A hook from Unicorn's C straight into `method`: the binding's hook_add puts two
        Python frames between them, on every call (each VM's patched iretd is an int3).
        A failure is kept for emu_start to raise and stops the run, as the binding does."""
        fptr, handle = self._callback(cfunc, method), uc_hook_h()
        err = _lib.uc_hook_add(self._uch, ctypes.byref(handle), kind, fptr, None, ctypes.c_uint64(1),
                               ctypes.c_uint64(0), *(ctypes.c_int(i) for i in instruction))
        if err:
            raise UcError(err)
        return fptr                                     # (kept: Unicorn calls it)

    def _callback(self, cfunc, method):
        """`method` as a C function of type `cfunc` for Unicorn (or io.c) to call."""
        uc = self.uc

        def entry(_uch, *args):
            try:
                intr = self._intr
                if intr is not None and intr.n:     # what intr.c delivered comes first (intr.py)
                    self.drain_interrupts()
                return method(uc, *args)
            except BaseException as e:
                if uc._hook_exception is None:
                    uc._hook_exception = e
                uc.emu_stop()
                return 0                                # (an `in` must give C a number)
        return cfunc(entry)

    def descriptors_changed(self, cpl=None, paging=None, loading=None):
        """The GDT this CPU's GDTR names was loaded or edited (or, with `cpl`, software
        is about to run at that CPL; with `paging`, about to turn paging on or off; with
        `loading`, (base, limit), about to lgdt that GDT): the platform reads its
        descriptors again for the segment-limit checks (limits.py)."""
        self.limits.refresh(cpl, paging, loading)

    # ---- running ---------------------------------------------------------
    def run(self, budget, wake=False):
        """Execute up to `budget` instructions of virtual time.

        Returns `budget` when the CPU used the whole slice (running, or
        halted and idle for the rest of it), fewer when the board asked it
        to stop early because a device scheduled an event inside the slice,
        or, with `wake` (an interrupt waits on IF), at the first instruction
        boundary with IF set: where the INTR pin would take it (counter.c).

        Each kernel entry is two runs and a world switch three (~7 per tick of the
        teaching run), so the loop reads the C counter's fields itself rather than
        through Counter's properties, reads EIP with one C call, and asks limits.py
        only when the run left something for it (a violation, a fetch past CS's limit)."""
        self.done = 0
        self._stop_requested = False
        counter = self.counter
        limits, refusals, state, stubs = self.limits, self._io, counter.state, self._stubs
        uch, eip_ref, eip_value, intr = self._uch, self._eip_ref, self._eip, self._intr
        known = None                         # EIP as read after a handler ran: not read twice
        while self.done < budget:
            if self.shutdown or self.halted:
                return budget
            self._io_fault = None
            if known is None:
                _reg_read(uch, EIP, eip_ref)
                eip = eip_value.value
            else:
                eip, known = known, None
            skip, self._resume_at = self._resume_at, None
            if refusals is not None:
                refusals.refused = 0
            try:
                executed, error = counter.run(eip, budget - self.done, NO_ADDRESS,
                                              skip if skip == eip else None, wake)
            except BaseException:              # a hook's own exception: the limit hooks
                if intr is not None and intr.n:
                    self.drain_interrupts()
                limits.after_run(True)         # come back all the same (limits_flat.py)
                raise
            if intr is not None and intr.n:    # what intr.c delivered in the run (intr.py)
                self.drain_interrupts()
            if refusals is not None and refusals.refused:     # io.c stopped the run
                self._io_fault = (GP, 0, refusals.eip, refusals.at_count)
            io_fault = self._io_fault
            if state.flat and limits.after_run(
                    limits._violation is not None or error is not None or io_fault
                    or self._stop_requested):
                self.done += executed - 1      # a flat stretch began or ended before an instruction
                continue                       # counted there: it runs (and counts) now (limits_flat.py)
            violation = limits.take() if limits._violation is not None or state.fetch_fault else None
            if violation is not None:
                executed = violation.count     # the access counts; it did not happen (limits_decode.py)
            elif io_fault:
                # the denied in/out counts; what the counter saw after its emu_stop does not
                # (whether it sees the next instruction depends on where a translation block ends)
                executed = io_fault[3]
            self.done += executed
            # A denied in/out stops the run only after it (emu_stop inside its hook): the counter
            # may already stand at a breakpoint on the next instruction. The #GP comes first, or
            # the instruction would be skipped with neither its port access nor its fault.
            hit = state.hit
            if hit != NO_HIT and error is None and violation is None and not io_fault:
                self._resume_at = known = hit
                for handler in list(stubs.get(hit, ())):
                    self._call_handler(handler, hit)
                    _reg_read(uch, EIP, eip_ref)
                    known = eip_value.value
                    if self.shutdown or known != hit:
                        break                  # the software there moved on (or stopped)
                if self._stop_requested or known == hit:
                    self.done -= 1             # counted at the hit; it runs (and counts) on resume
                if self.shutdown or self._stop_requested:
                    return self.done if self._stop_requested else budget
                continue                       # (at `known`, read once above)
            if violation is not None:
                self.raise_fault(violation.vector, 0, violation.eip, violation.why)
            elif error is not None:
                self._on_stop_error(error)
            elif io_fault:
                vector, code, eip, _ = io_fault
                self.raise_fault(vector, code, eip, "I/O port access above IOPL")
            elif self._stop_requested or state.woke:
                return self.done
            elif not state.spent:              # neither the budget nor a stop: a hlt
                self._halt()
                if self.interrupts_enabled and self.board.interrupt_pending(self):
                    return self.done           # INTR is asserted: hlt ends at once (board delivers)
        return self.done

    def _halt(self):
        self.halted = True
        self.trace.emit("cpu.halt", self.index, eip=self["eip"] - 1, interrupts=self.interrupts_enabled)

    def progress(self):
        """Instructions retired so far in the current `run`.
        (Every trace event asks, through Board.now: the counter's field read directly.)"""
        return self.done + self._count_state.count

    def request_stop(self):
        """End the current slice after this instruction (the board must re-plan).
        Measured (Unicorn 2.1.4, a ten-line probe): asked from an `in`/`out` hook, the
        run stops before the next instruction, but the C counter has already counted
        it (`nop; out; nop`: 3 counted, EIP at the second nop): virtual time runs one
        instruction ahead there. Kept, as the recorded traces (tests/fixtures) have it."""
        self._stop_requested = True
        self.uc.emu_stop()

    def _on_unmapped(self, uc, access, address, size, value, data):
        self._unmapped = address
        return False

    def _on_stop_error(self, err):
        eip = self["eip"]
        if err.errno in MEMORY_ERRORS:
            at, self._unmapped = self._unmapped, None
            past = self.limits.unmapped(at) if at is not None else None   # the limit comes first
            if past is not None:
                self.raise_fault(past.vector, 0, past.eip, past.why)
                return
            self.raise_fault(GP, 0, eip, f"access to memory the machine does not have ({err})")
        else:
            self.stop(f"emulator stopped: {err} at eip={eip:#x}")

    def stop(self, why):
        self.shutdown = why
        self.uc.emu_stop()                  # may be inside a hook, mid-slice
        self.trace.emit("cpu.shutdown", self.index, why=why)
