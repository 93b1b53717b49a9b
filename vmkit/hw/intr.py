"""Unicorn's interrupt hook: every `int n` and exception the CPU raises, in the middle of a run.

Unicorn delivers none of them (cpu.py): its hook hands each to the platform, which reads
the exception record Unicorn never clears (unicorn_quirks.take_exception), lets a segment
limit come first, and delivers through the IDT (delivery.py). The teaching run takes ~860 of
them per 4M instructions (mostly the #GP of a displaced COS's or a guest's privileged
instruction, and a VM's int3), and in Python each cost several µs inside the run (the ctypes
callback into Python, a context save, two trace events, the delivery's glue; measured: 7.7 ms
of Python hooks inside runs per 4M, 0.8 ms with intr.c, the whole run ~4% faster).

Two paths, one behaviour. With the C library the hook Unicorn calls is intr.c's: it does what
`_on_interrupt` does, in the same order (the record read and cleared, EIP, the limit filter
quieted, delivery.c called as Delivery.deliver calls it), and when that delivered, notes what
was delivered; everything else it hands to `_on_interrupt`, the reference, before writing
anything (intr.c lists the cases). What C notes becomes the same trace events, stamped with
the virtual time of the hook, and the same counters (`drain_interrupts`): before any other
Python of this CPU can emit an event (at the start of each of its Python hooks, CPU._callback,
and of a store to its local APIC, lapic.py: Unicorn's MMIO callback, not a hook)
and when the run ends (CPU.run, Stubs.execute), so the trace holds the same events in the same
order. Without the C library, or while a learner's gate decoder is plugged in (intr.c's
`off`), every call is the Python's.

A mixin of CPU (cpu.py), as delivery.py is.
"""
import ctypes
import struct

from unicorn import UcError, UC_HOOK_INTR
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn.unicorn_py3.unicorn import uc_hook_h, HOOK_INTR_CFUNC

from . import unicorn_quirks
from .delivery import _CDelivery, _CPL_CHANGE, _c_delivery, _int_below_dpl
from .x86 import decode_gate, ERROR_CODE_VECTORS, EXCEPTION_NAMES, GP, PF, UD

SOFTWARE_INT_6 = bytes([0xCD, UD])  # `int 6`, which Unicorn reports as an invalid opcode
# #BP and #OF come only from an instruction (int3, into, int n), which Unicorn reports as such
# (measured: its exception record says "int" for all four): no need to read the record (a
# context save, ~2 µs) on a patched iretd's or pushfd's every int3
ONLY_SOFTWARE = frozenset((3, 4))
RECORDS = 16                         # as in intr.c
RESULTS = ("idt_base", "handler", "old_cpl", "new_cpl", "refused_cpl", "gate_dpl", "int_length")
HANDED_DELIVERY, HANDED_RESTORE = 1, 2
REFUSED_THEN_DELIVERED = 3
_RECORD = struct.Struct("<14Q")      # struct vmkit_intr_record


class _CIntr(ctypes.Structure):
    """struct vmkit_intr in intr.c, field for field."""
    _fields_ = [("python", ctypes.c_void_p), ("context_save", ctypes.c_void_p),
                ("context_restore", ctypes.c_void_p), ("reg_read", ctypes.c_void_p),
                ("context", ctypes.c_void_p),
                ("is_int", ctypes.c_void_p), ("error", ctypes.c_void_p), ("old_exception", ctypes.c_void_p),
                ("count", ctypes.c_void_p), ("quiet", ctypes.c_void_p), ("violation", ctypes.c_void_p),
                ("delivery", ctypes.c_void_p), ("results", ctypes.c_void_p), ("counts", ctypes.c_void_p),
                ("eip_id", ctypes.c_int64), ("error_vectors", ctypes.c_uint64), ("off", ctypes.c_uint64),
                ("handed", ctypes.c_uint64), ("handed_vector", ctypes.c_uint64),
                ("handed_is_int", ctypes.c_uint64), ("handed_eip", ctypes.c_uint64),
                ("handed_has_error", ctypes.c_uint64), ("handed_error", ctypes.c_uint64),
                ("handed_result", ctypes.c_uint64),
                ("in_c", ctypes.c_uint64), ("to_python", ctypes.c_uint64), ("n", ctypes.c_uint64),
                ("records", ctypes.c_uint64 * (_RECORD.size // 8 * RECORDS))]


def _field(structure, name):
    return ctypes.addressof(structure) + getattr(type(structure), name).offset


class Interrupts:
    """A CPU's interrupt hook (see the module's docstring)."""
    _intr = None                         # intr.c's state, with the C library

    def _hook_interrupts(self, lib):
        """Unicorn's interrupt hook: intr.c's with the C library `lib` (the Python one behind
        it), else the Python one. Returns what must be kept alive."""
        python = self._callback(HOOK_INTR_CFUNC, self._on_interrupt)
        delivery, fn = _c_delivery(self.memory) if lib is not None else (None, None)
        if delivery is None or self.limits.state is None:
            handle = uc_hook_h()
            err = _uc.uclib.uc_hook_add(self._uch, ctypes.byref(handle), UC_HOOK_INTR, python, None,
                                        ctypes.c_uint64(1), ctypes.c_uint64(0))
            if err:
                raise UcError(err)
            return [python]
        self._c_state, self._c_fn, self._c_ref = delivery, fn, ctypes.byref(delivery)   # (Delivery's,
                                                                      # made now, not at its first call)
        offsets = [getattr(_CDelivery, name).offset for name in RESULTS]
        assert offsets == list(range(offsets[0], offsets[0] + 8 * len(RESULTS), 8))
        uc = self.uc
        views = uc.__dict__.get("_vmkit_take") or unicorn_quirks._take_views(uc)
        uc._vmkit_take = views
        _, context, is_int_at, error_at, old_at = views
        state = self._intr = _CIntr()
        state.python = ctypes.cast(python, ctypes.c_void_p).value
        state.context_save = ctypes.cast(_uc.uclib.uc_context_save, ctypes.c_void_p).value
        state.context_restore = ctypes.cast(_uc.uclib.uc_context_restore, ctypes.c_void_p).value
        state.reg_read = ctypes.cast(_uc.uclib.uc_reg_read, ctypes.c_void_p).value
        state.context = context.value
        state.is_int, state.error, state.old_exception = (ctypes.addressof(v) for v in (is_int_at, error_at, old_at))
        state.count = ctypes.addressof(self.counter.state)             # its first field: the count
        state.quiet = _field(self.limits.state, "quiet")
        state.violation = ctypes.addressof(self.limits.pending)
        state.delivery = ctypes.addressof(delivery)
        state.results = ctypes.addressof(delivery) + offsets[0]
        state.counts = _field(delivery, "delivered")
        state.eip_id = X.UC_X86_REG_EIP
        state.error_vectors = sum(1 << v for v in ERROR_CODE_VECTORS)
        state.off = self._gate_decoder is not decode_gate
        handle = uc_hook_h()
        err = _uc.uclib.uc_hook_add(self._uch, ctypes.byref(handle), UC_HOOK_INTR,
                                    ctypes.cast(lib.vmkit_intr, ctypes.c_void_p), ctypes.byref(state),
                                    ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err:
            raise UcError(err)
        return [python, state]

    def drain_interrupts(self):
        """What intr.c delivered since the last drain, as the Python path would have recorded it:
        its trace events (at the virtual time of the hook: Board.now's, with the count the
        counter had then) and the CPU's counters. (Called once per such run, mostly for one
        record: the events' dicts made here as literals, the records unpacked in place.)"""
        state = self._intr
        n, state.n = state.n, 0
        board, index, emit_at, records = self.board, self.index, self.trace.emit_at, state.records
        base = board.clock + self.lead + self.done if board.running_cpu is self else None
        for i in range(n):
            (count, vector, is_int, eip, has_error, error, result, idt, handler, old_cpl, new_cpl,
             refused_cpl, gate_dpl, int_length) = _RECORD.unpack_from(records, i * _RECORD.size)
            at = base + count if base is not None else board.now()
            cpl = _CPL_CHANGE[old_cpl << 2 | new_cpl]
            if result == REFUSED_THEN_DELIVERED:          # (Delivery._deliver_or_fail's f.then)
                f = _int_below_dpl(vector, refused_cpl, gate_dpl)
                emit_at(at, "cpu.fault", index, {"vector": GP, "eip": eip - int_length,
                                                 "error": f.error_code, "why": f.why})
                emit_at(at, "cpu.deliver", index, {"vector": GP, "kind": "nested", "idt": idt,
                                                   "handler": handler, "cpl": cpl})
            elif is_int:
                emit_at(at, "cpu.deliver", index, {"vector": vector, "kind": "int", "idt": idt,
                                                   "handler": handler, "cpl": cpl})
            else:                                         # (Delivery.raise_fault's)
                emit_at(at, "cpu.fault", index, {"vector": vector, "eip": eip,
                                                 "error": error if has_error else "-",
                                                 "why": EXCEPTION_NAMES.get(vector, "exception")})
                emit_at(at, "cpu.deliver", index, {"vector": vector, "kind": "fault", "idt": idt,
                                                   "handler": handler, "cpl": cpl})
            self.halted = False
            self.delivered += 1

    @property
    def gate_decoder(self):
        return self._gate_decoder

    @gate_decoder.setter
    def gate_decoder(self, decoder):
        """A learner's decoder (exercise 00) is the Python delivery's alone: intr.c hands every
        interrupt to the Python while one is plugged in, as delivery.c declines."""
        self._gate_decoder = decoder
        if self._intr is not None:
            self._intr.off = decoder is not decode_gate

    # ---- the Python hook: the reference, and what intr.c hands over ------------------
    def _on_interrupt(self, uc, vector, _):
        intr = self._intr
        if intr is not None and intr.handed:
            return self._handed(intr, vector)
        if vector >= 32 or vector in ONLY_SOFTWARE:   # the CPU raises only 0..31 itself, and
            self.deliver(vector, "int", eip=self["eip"])   # #BP, #OF only for int3, into, int n
            return
        is_int, error = unicorn_quirks.take_exception(uc)   # (a fault's record cleared)
        if not is_int and self.limits.violation is not None:
            uc.emu_stop()                    # the same access was past its segment's limit, which
            return                           # a CPU checks first: run() delivers that
        if is_int:                           # int n / int3 / into: EIP is already past it
            self.deliver(vector, "int", eip=self["eip"])
        else:
            past = self.limits.page_fault() if vector == PF else None   # the limit comes first
            if past is not None:
                self.raise_fault(past.vector, 0, past.eip, past.why)
                return
            self.raise_fault(vector, error if vector in ERROR_CODE_VECTORS else None,
                             self["eip"], EXCEPTION_NAMES.get(vector, "exception"))

    def _handed(self, intr, vector):
        """intr.c went as far as the Python would have and stopped where only the Python
        goes on: a failed context restore (take_exception raises), or a delivery whose
        register load failed after its frame was pushed (vmkit_deliver's answer, which
        Delivery.deliver goes on from as when it called delivery.c itself)."""
        handed, intr.handed = intr.handed, 0
        if handed == HANDED_RESTORE:
            raise UcError(intr.handed_result)
        done = intr.handed_result - (1 << 64) if intr.handed_result >> 63 else intr.handed_result
        eip = intr.handed_eip
        if intr.handed_is_int:
            self.deliver(vector, "int", eip=eip, done=done)
        else:
            self.raise_fault(vector, intr.handed_error if intr.handed_has_error else None, eip,
                             EXCEPTION_NAMES.get(vector, "exception"), done=done)

    def _on_invalid(self, uc, _):
        """Unicorn 2.1.4 sends `int 6` (CD 06) here too, not to the interrupt
        hook, with EIP at the instruction (measured: it takes any exception 6
        for an invalid opcode). `int 6` is a valid instruction, so those two
        bytes at EIP mean a software interrupt, not #UD."""
        eip = self["eip"]
        if self._reads(eip, 2) == SOFTWARE_INT_6:
            self.deliver(UD, "int", eip=eip + 2)
        else:
            self.raise_fault(UD, None, eip, "invalid opcode")
        return True
