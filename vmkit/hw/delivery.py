"""Interrupt and exception delivery: what the silicon does between an event and its handler.

Unicorn delivers nothing by itself (cpu.py): every `int n`, exception and device
IRQ ends up here. The CPU reads IDTR, fetches the gate from *that* IDT in
emulated memory, checks it (type, DPL against CPL for a software `int`,
present), reads the target code segment's descriptor from the GDT and checks
the gate's offset against its limit (the new EIP, before anything is pushed,
as a real CPU does: #GP), switches to the TSS's ring-0 stack when the
privilege changes, pushes the frame (and the error code), clears IF for an
interrupt gate, and jumps. A failure while
delivering becomes the fault the hardware would raise; a failure to deliver
that becomes a double fault; a failing double fault shuts the CPU down.

From virtual-8086 mode (EFLAGS.VM), as a real CPU: the gate must lead to CPL 0, the
frame also holds ES, DS, FS and GS (above SS), which are then loaded null; an `int n`
below IOPL 3 is a #GP(0). Nothing in the kit enters that mode, but Unicorn 2.1.4 (QEMU)
enters it on an iretd at *any* CPL whose popped EFLAGS has VM (measured: a guest's
iretd at CPL 3; Intel enters it only from CPL 0 and ignores VM otherwise), so a guest
can, and its next fault must still reach its monitor, not shut the machine down.

Two paths, one behaviour. The common case is delivered in C (delivery.c, compiled into
the counter's library): the same reads, checks, frame and register load as `_deliver_python`,
in the same order, in one call: ~0.8 µs for a delivery at the same CPL, ~1.6 µs with the
CR0.PE toggle of a privilege change, against ~10-11 µs in Python (measured: the call alone,
ctypes included, Unicorn 2.1.4). C delivers only what it can deliver exactly as the Python
does; anything else it declines before writing a register or a byte (a check that fails,
virtual-8086 mode, an LDT selector, a conforming target segment, a table, TSS or stack
outside RAM, an argument outside 32 bits, a learner's `gate_decoder`), and the Python delivers it, so every fault, its
message, the #DF and the triple fault are the Python's. One failure is told by C instead of
declined, the commonest: an `int` from a CPL above its gate's DPL (a VM's int3, every time,
through its monitor's DPL 1 gate): C reads the `int`'s length (the fault's EIP) through the
CPU's MMU as `_int_length` does, and delivers that #GP in the same call if it can (else it
writes nothing of it); the Python raises the same DeliveryFault with the same message, and
`_deliver_or_fail` emits the fault and, if C delivered it, the delivery, as for any other.
The trace event and the CPU's counters are written by the Python on both paths;
`c_deliveries` counts what C did. Without a C compiler every delivery is the Python's.

A mixin of CPU: it uses the CPU's registers (read, write, read_with_tables,
_batch), its memory, trace and `gate_decoder` (exercise 00 plugs a learner's in).
"""
import ctypes
import struct

from unicorn import UcError
from unicorn.unicorn_py3 import unicorn as _uc
from unicorn import x86_const as X

from .counter import library
from .limits_decode import inside
from .x86 import (decode_gate, decode_segment, GATE_INT32, GATE_TRAP32, EFLAGS_IF, EFLAGS_IOPL, EFLAGS_TF,
                  EFLAGS_NT, EFLAGS_RF, EFLAGS_VM, TSS_ESP0, TSS_SS0, CR0_PG, DF, GP, NP, PF, TS, SS_FAULT)


class DeliveryFault(Exception):
    """Delivering a vector failed; the CPU must deliver this fault instead."""
    def __init__(self, vector, error_code, why, int_length=None, then=None):
        super().__init__(why)
        self.vector, self.error_code, self.why = vector, error_code, why
        self.int_length = int_length         # the failing `int`'s, when already read (delivery.c)
        self.then = then                     # delivery.c went on and delivered this fault:
                                             # (idt, handler, cpl) for its event, or the UcError


def _int_below_dpl(vector, cpl, dpl, int_length=None, then=None):
    return DeliveryFault(GP, vector * 8 + 2, f"int {vector:#x} from CPL {cpl} through a DPL {dpl} gate",
                         int_length, then)


C_IDS = tuple(getattr(X, "UC_X86_REG_" + name) for name in
              ("CS", "EFLAGS", "SS", "ESP", "CR0", "CR3", "IDTR", "GDTR", "TR", "EIP"))   # delivery.c's order


class _CDelivery(ctypes.Structure):
    """struct vmkit_delivery in delivery.c, field for field."""
    _fields_ = [("reg_read_batch", ctypes.c_void_p), ("reg_write_batch", ctypes.c_void_p),
                ("vmem_read", ctypes.c_void_p), ("ram", ctypes.c_void_p), ("ram_size", ctypes.c_uint64),
                ("ids", ctypes.c_int64 * len(C_IDS)),
                ("idt_base", ctypes.c_uint64), ("handler", ctypes.c_uint64),
                ("old_cpl", ctypes.c_uint64), ("new_cpl", ctypes.c_uint64), ("refused_cpl", ctypes.c_uint64), ("gate_dpl", ctypes.c_uint64),
                ("int_length", ctypes.c_uint64),
                ("error", ctypes.c_int64),
                ("delivered", ctypes.c_uint64), ("refused", ctypes.c_uint64), ("declined", ctypes.c_uint64)]


KIND_INT = {"int": 1}
_CPL_CHANGE = [f"{old}->{new}" for old in range(4) for new in range(4)]   # cpu.deliver's `cpl`
REFUSED, REFUSED_THEN_DELIVERED, REFUSED_THEN_FAILED = 2, 3, -2   # delivery.c's: an `int` through a
                                             # gate of lower DPL; and its #GP delivered; its load failed


def _c_delivery(memory):
    """delivery.c's state for one CPU on `memory`, and its function; (None, None) without
    the compiled library (no C compiler: every delivery is the Python's)."""
    lib = library()
    if lib is None:
        return None, None
    fn = lib.vmkit_deliver
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 5
    state = _CDelivery(ctypes.cast(_uc.uclib.uc_reg_read_batch, ctypes.c_void_p),
                       ctypes.cast(_uc.uclib.uc_reg_write_batch, ctypes.c_void_p),
                       ctypes.cast(_uc.uclib.uc_vmem_read, ctypes.c_void_p),
                       memory.address, memory.size, (ctypes.c_int64 * len(C_IDS))(*C_IDS))
    return state, fn


class Delivery:
    _c_state = None                          # delivery.c's, made at the first delivery

    @property
    def c_deliveries(self):
        """(delivered in C, refused in C (an `int` below its gate's DPL), declined by C: left
        to the Python) so far on this CPU; zeros before the first delivery or without the
        compiled library."""
        state = self._c_state
        return (state.delivered, state.refused, state.declined) if state else (0, 0, 0)

    def raise_fault(self, vector, error_code, eip, why="", done=None):
        self.trace.emit("cpu.fault", self.index, vector=vector, eip=eip,
                        error=error_code if error_code is not None else "-", why=why)
        self.deliver(vector, "fault", error_code, eip, done)

    def deliver(self, vector, kind, error_code=None, eip=None, done=None):
        """Vector `vector` through the IDT that IDTR names.

        kind: "int" (software; EIP is past the instruction), "fault"
        (EIP is the faulting instruction), "irq" (external, from the
        interrupt controller). A failure while delivering becomes the
        fault the hardware would raise; a failure to deliver that becomes
        a double fault; a failing double fault shuts the CPU down
        (a triple fault), as on a real PC. Only the *exception* #DF is a
        double fault: `int 8` is a software interrupt like any other (no
        error code; through a gate it may not use, a #GP). done: delivery.c's answer for this
        delivery, when it was already asked (intr.c hands over after a failed register load)."""
        eip = self["eip"] if eip is None else eip
        state = self.limits.state            # the CPU's own descriptor reads: no limit (limits.py)
        if state is not None:
            state.quiet += 1
        try:
            c = self._c_state if done is None else None
            # the common case, straight to delivery.c (one delivery per IRQ and per trap: the
            # Python frames of the general path cost about as much as the C call); anything
            # it does not deliver at once goes on below with its answer, as _deliver would
            if (c and self._gate_decoder is decode_gate and type(vector) is int and type(eip) is int
                    and 0 <= vector <= 0xFF and 0 <= eip <= 0xFFFFFFFF
                    and (error_code is None or type(error_code) is int and 0 <= error_code <= 0xFFFFFFFF)):
                done = self._c_fn(self._uch, self._c_ref, vector, kind == "int",
                                  error_code is not None, error_code or 0, eip)
                if done == 1:                # (_delivered, inlined: every IRQ and trap)
                    self.halted = False
                    self.delivered += 1
                    self.trace.emit("cpu.deliver", self.index, vector=vector, kind=kind, idt=c.idt_base,
                                    handler=c.handler, cpl=_CPL_CHANGE[c.old_cpl << 2 | c.new_cpl])
                    return True
            return self._deliver_or_fail(vector, kind, error_code, eip, done)
        finally:
            if state is not None:
                state.quiet -= 1

    def _deliver_or_fail(self, vector, kind, error_code, eip, done=None):
        """done: delivery.c's answer for this delivery when deliver() already asked it."""
        for _ in range(3):
            try:
                self._deliver(vector, kind, error_code, eip, done)
                return True
            except DeliveryFault as f:
                done = None
                if vector == DF and kind != "int":
                    break
                if kind == "int":                  # a fault of the `int` instruction itself
                    eip -= f.int_length or self._int_length(eip, vector)
                vector, kind, error_code = (DF, "fault", 0) if kind == "nested" else (f.vector, "nested", f.error_code)
                self.trace.emit("cpu.fault", self.index, vector=vector, eip=eip,
                                error=error_code, why=f.why)
                if f.then is not None:             # delivery.c delivered this fault in the same call
                    if isinstance(f.then, UcError):
                        raise f.then
                    self._delivered(vector, kind, *f.then)
                    return True
        self.stop(f"triple fault: cannot deliver a double fault (IDTR base={self['idtr'][1]:#x})")
        return False

    def _int_length(self, next_eip, vector):
        """`int n` is 2 bytes (CD n); int3, into and int1 are 1. EIP is a linear
        address: read through this CPU's MMU (read_linear; with paging on, a VM's
        guest sees its memory from 0, not at its physical address). Bytes it
        cannot read were not the `int` it just executed: 1."""
        try:
            code = self.read_linear(next_eip - 2, 2)
        except ValueError:                     # the CPU's LinearFault (mmu.py)
            return 1
        return 2 if code == bytes([0xCD, vector]) else 1

    def _deliver(self, vector, kind, error_code, eip, done=None):
        state = self._c_state
        if state is None:
            state, self._c_fn = _c_delivery(self.memory)
            self._c_state, self._c_ref = state or False, state and ctypes.byref(state)
        if state and self.gate_decoder is decode_gate:
            try:                                     # (ctypes would cut a wider integer silently)
                done = done if done is not None else (0 <= vector <= 0xFF and 0 <= eip <= 0xFFFFFFFF
                        and (error_code is None or 0 <= error_code <= 0xFFFFFFFF)
                        and self._c_fn(self._uch, self._c_ref, vector, KIND_INT.get(kind, 0),
                                       error_code is not None, error_code or 0, eip))
            except (TypeError, ctypes.ArgumentError):   # not an integer: the Python says what
                done = 0
            if done == 1:
                self._delivered(vector, kind, state.idt_base, state.handler, f"{state.old_cpl}->{state.new_cpl}")
                return
            if done == -1:                           # the register load failed, frame pushed
                raise UcError(state.error)
            if done:                                 # refused (and maybe its #GP delivered)
                then = (UcError(state.error) if done == REFUSED_THEN_FAILED else
                        (state.idt_base, state.handler, f"{state.old_cpl}->{state.new_cpl}")
                        if done == REFUSED_THEN_DELIVERED else None)
                raise _int_below_dpl(vector, state.refused_cpl, state.gate_dpl, state.int_length, then)
        self._deliver_python(vector, kind, error_code, eip)

    def _delivered(self, vector, kind, idt, handler, cpl):
        self.halted = False
        self.delivered += 1
        self.trace.emit("cpu.deliver", self.index, vector=vector, kind=kind, idt=idt, handler=handler, cpl=cpl)

    def _deliver_python(self, vector, kind, error_code, eip):
        # EXT: the fault arose delivering an event external to the program (an IRQ, or an
        # exception: "fault", "nested"); clear only for a software interrupt (Intel SDM 6.13)
        ext = 0 if kind == "int" else 1
        (old_cs, old_eflags, old_ss, old_esp, cr0, cr3), (idtr, gdtr, tr) = self.read_with_tables(
            ("cs", "eflags", "ss", "esp", "cr0", "cr3"), ("idtr", "gdtr", "tr"))   # GDTR once: both descriptors
        paged = cr3 if cr0 & CR0_PG else None       # (the tables' pages must be present: _reach)
        v86 = bool(old_eflags & EFLAGS_VM)
        if v86 and kind == "int" and old_eflags & EFLAGS_IOPL != EFLAGS_IOPL:
            raise DeliveryFault(GP, 0, f"int {vector:#x} in virtual-8086 mode below IOPL 3")
        _, idt_base, idt_limit, _ = idtr
        if vector * 8 + 7 > idt_limit:
            raise DeliveryFault(GP, vector * 8 + 2 + ext, f"vector {vector:#x} beyond IDT limit {idt_limit:#x}")
        self._reach(paged, idt_base + vector * 8, 8, f"IDT entry {vector:#x}")
        gate = self.gate_decoder(self._read(idt_base + vector * 8, 8, GP, vector * 8 + 2 + ext))
        if gate.type not in (GATE_INT32, GATE_TRAP32):
            raise DeliveryFault(GP, vector * 8 + 2 + ext, f"IDT entry {vector:#x} has type {gate.type:#x}, not a 32-bit interrupt or trap gate")
        if kind == "int" and gate.dpl < old_cs & 3:
            raise _int_below_dpl(vector, old_cs & 3, gate.dpl)
        if not gate.present:
            raise DeliveryFault(NP, vector * 8 + 2 + ext, f"IDT entry {vector:#x} not present")
        # (Intel's INT: the target's faults name its selector, with EXT for an external event)
        target = self._descriptor(gate.selector, GP, gdtr, ext, paged)
        if not (target.s and target.type & 8):
            raise DeliveryFault(GP, (gate.selector & ~3) + ext, f"gate selector {gate.selector:#x} is not a code segment")
        if not target.present:
            raise DeliveryFault(NP, (gate.selector & ~3) + ext, f"gate selector {gate.selector:#x}: its code segment is not present")
        # a conforming segment runs the handler at the CPL it interrupted; CS's RPL is the new
        # CPL whatever the gate's selector holds (a real CPU ignores that RPL)
        old_cpl = 3 if v86 else old_cs & 3
        new_cpl = old_cpl if target.type & 4 else target.dpl
        if v86 and new_cpl != 0:
            raise DeliveryFault(GP, (gate.selector & ~3) + ext, "a gate from virtual-8086 mode must lead to CPL 0")
        if target.dpl > old_cpl:
            raise DeliveryFault(GP, (gate.selector & ~3) + ext, "gate leads to a less privileged segment")
        new_cs = gate.selector & ~3 | new_cpl
        if gate.offset > target.limit:               # the new EIP, against the new CS's limit
            raise DeliveryFault(GP, ext, f"gate {vector:#x}'s offset {gate.offset:#x} is past the limit "
                                         f"{target.limit:#x} of its code segment {gate.selector:#x}")
        frame = [eip, old_cs, old_eflags]
        if new_cpl < old_cpl:                        # stack switch through the TSS
            tr_sel, tss, tss_limit, _ = tr
            if tss_limit < TSS_SS0 + 3:
                raise DeliveryFault(TS, tr_sel & ~3, "no TSS loaded to switch stacks from CPL 3")
            self._reach(paged, tss + TSS_ESP0, TSS_SS0 + 2 - TSS_ESP0, "the TSS's ESP0 and SS0")
            esp = self.memory.read_u32(tss + TSS_ESP0)
            ss = self.memory.read_u16(tss + TSS_SS0)
            frame += [old_esp, old_ss]
            if v86:                                  # and the real-mode data segments, then nulled
                frame += list(self.read("es", "ds", "fs", "gs"))
        else:
            esp, ss = old_esp, old_ss
        if error_code is not None:
            frame.insert(0, error_code)
        stack = self._descriptor(ss, TS, gdtr, ext, paged)
        # The TSS's stack, checked as the CPU loads SS. (A real CPU switches to the new CPL's
        # SS:ESP, SS1:ESP1 for CPL 1; the platform always to SS0:ESP0: its CR0.PE load cannot
        # reach CPL 1 with a DPL 1 SS, measured: Unicorn 2.1.4 refuses the batch.)
        if new_cpl < old_cpl:
            if ss & 3 or stack.dpl or not stack.s or stack.type & 8 or not stack.type & 2:
                raise DeliveryFault(TS, (ss & ~3) + ext, f"the TSS's stack segment {ss:#x} is not a "
                                                         f"writable data segment of DPL 0")
            if not stack.present:
                raise DeliveryFault(SS_FAULT, (ss & ~3) + ext, f"the TSS's stack segment {ss:#x} is not present")
        top, n = esp, len(frame)                     # each word's bytes inside SS's limit (#SS)
        if not all(inside(stack, (top - 4 * i) & 0xFFFFFFFF, 4) for i in range(1, n + 1)):
            raise DeliveryFault(SS_FAULT, ((ss & ~3) if new_cpl < old_cpl else 0) + ext,
                                f"the frame's {4 * n} bytes below ESP {top:#x} are past the limit "
                                f"{stack.limit:#x} of the stack segment {ss:#x}")
        esp = (esp - 4 * n) & 0xFFFFFFFF
        self._reach(paged, stack.base + esp, 4 * n, "the frame", write=True)
        self._write(stack.base + esp, struct.pack(f"<{n}I", *frame), SS_FAULT, ss & ~3)
        flags = old_eflags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
        if gate.type == GATE_INT32:
            flags &= ~EFLAGS_IF
        if v86:                                      # out of virtual-8086 mode before any load:
            self.write(eflags=flags)                 # with VM set a selector is a paragraph
            self._load_privileged(new_cs, ss, cr0, esp, flags, gate.offset)
            self.write(ds=0, es=0, fs=0, gs=0)
        elif new_cpl < old_cpl:
            self._load_privileged(new_cs, ss, cr0, esp, flags, gate.offset)
        elif new_cs != old_cs:
            self.write(cs=new_cs, esp=esp, eflags=flags, eip=gate.offset)
        else:
            self.write(esp=esp, eflags=flags, eip=gate.offset)
        self._delivered(vector, kind, idt_base, gate.offset, f"{old_cpl}->{new_cpl}")

    PRIVILEGED_LOAD = ("cr0", "cs", "ss", "cr0", "cs", "ss", "esp", "eflags", "eip")

    def _load_privileged(self, cs, ss, cr0, esp, eflags, eip):
        """Load ring-0 CS/SS from a less privileged context (Unicorn refuses a plain
        write: its check wants SS.DPL = CPL), then ESP, EFLAGS, EIP: CR0.PE cleared
        for the selector load (real-mode loads are unchecked and make CPL 0), set
        again, and the selectors loaded once more so their descriptors are read from
        the GDT. One uc_reg_write_batch call: it applies the writes in order, a
        register named twice included (measured, Unicorn 2.1.4), so nine writes cost
        one crossing into C instead of nine. QEMU flushes the whole TLB on each change of
        CR0.PE, and that is cheap here (measured, docs/machine.md): this call costs 1.69 µs
        in C, five writes without the toggle 0.96. The other way to CPL 0 (clear the CPL bits
        of env->hflags in a saved context, restore it, then load CS/SS at CPL 0: no flush)
        works, passes the suite and the trace-equality test, and costs 1.10 µs more for the
        save and restore: the same 3.1 µs per call, and the same entry cost within noise."""
        ids, vals, ptrs, n, _, _ = self._batch(self.PRIVILEGED_LOAD)
        for i, v in enumerate((cr0 & ~1, cs, ss, cr0, cs, ss, esp, eflags, eip)):
            vals[i] = v & 0xFFFFFFFF
        err = _uc.uclib.uc_reg_write_batch(self._uch, ids, ptrs, n)
        if err:
            raise UcError(err)

    def _descriptor(self, sel, fault, gdtr=None, ext=0, paged=None):
        _, table, limit, _ = self["gdtr"] if gdtr is None else gdtr
        if sel & 4:
            _, table, limit, _ = self["ldtr"]
        index = sel & ~7
        if (sel & ~3) == 0 or index + 7 > limit:
            raise DeliveryFault(fault, (sel & ~3) + ext, f"selector {sel:#x} outside its descriptor table")
        self._reach(paged, table + index, 8, f"the descriptor of selector {sel:#x}")
        return decode_segment(self._read(table + index, 8, fault, (sel & ~3) + ext))

    def _reach(self, paged, address, length, what, write=False):
        """With paging on (`paged`: CR3), a page the delivery reads or writes must be present,
        or the CPU takes a #PF there (CR2: the address; the error code: not present, a
        supervisor read or write), which becomes a #DF as any fault of a delivery does. The
        platform reads the tables and writes the frame at their linear addresses as physical
        ones (the kernel maps them so), but Unicorn reads the GDT through the page tables when
        a segment register is loaded, and from inside a hook it would leave by a longjmp
        (mmu.supervisor_present): so this is checked before anything is written."""
        if paged is not None and not self.supervisor_present(address & 0xFFFFFFFF, length, paged):
            self.write(cr2=address & 0xFFFFFFFF)
            raise DeliveryFault(PF, 2 if write else 0, f"{what} at linear {address & 0xFFFFFFFF:#x} is on a "
                                                        f"page not present (CR3 {paged:#x})")

    def _read(self, addr, n, fault, error):
        try:
            return self.memory.read(addr, n)
        except ValueError as e:
            raise DeliveryFault(fault, error, str(e))

    def _write(self, addr, data, fault, error):
        try:
            self.memory.write(addr, data, code=False)
        except ValueError as e:
            raise DeliveryFault(fault, error, str(e))
