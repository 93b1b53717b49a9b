"""A flat stretch: the segment-limit hooks off while no access can be past a limit
(limits.py says what is checked, and where).

The hooks cost every access in their ranges (Unicorn's hook path and the filter: ~60 ns
each, measured), and in the COS's world the range past the COS's limit is all of the
kernel's memory: its stack, its data, its work loop's counter. While CS, SS, DS and ES are
flat (base 0, limit 4 GiB, in the table the filter judges from) at CPL 0, paging off, no
access an instruction makes through them can be past a limit, so the platform takes the
hooks off. It does not trust the code to stay so: the C counter, which runs before every
instruction anyway, reads each instruction's prefixes and opcode from memory while the hooks
are off and stops the run before any it has not listed as harmless (limits_flat.c:
`flat_allows`): a segment register load (`mov`/`pop` to one, `lds` & co., a far
`jmp`/`call`/`ret`, `iretd`), an FS or GS prefix while that register is not flat, `int`, an
instruction that can fault (`div`, `bound`, an invalid encoding, x87), `popfd` (TF), I/O, and
anything that changes CR0, GDTR or the debug registers; so no delivery happens with the
hooks off, and the hooks are back (`after_run`, from CPU.run) after every such run, whatever
ended it, before any handler or delivery runs. When a stretch begins: the filter counts the
accesses in a row it saw in that state, and at STRETCH_AFTER it asks the counter to stop
before the next instruction (not a run's first: it may be a breakpoint the run resumes
past), which reads the registers again there (also EFLAGS.TF and VM, DR7's enables, GDTR
against the table) and stops if all hold; the platform then removes the hooks and the run
goes on. Both stops count the instruction as a breakpoint's hit does, and CPU.run takes it
back: the same instructions retire in the same virtual time (a port's stop request in the
same run keeps it, as the counter would have). Measured (Unicorn 2.1.4): a memory hook
added after code was translated fires for that code, and one deleted stops firing at once,
with no retranslation; called from C (limits_prepared.c adds and deletes the hooks),
`uc_hook_del` ~0.1 µs, `uc_hook_add` ~0.25 µs (through ctypes from Python, 3 and 3-8 µs); a
stretch costs 10-15 µs, so only a long one pays: the kernel's work loop (3,000 iterations,
two accesses each) does, a kernel entry's few pushes (made while DS and ES still hold the
COS's segments) do not begin one.
"""
from .limits_prepared import HOOK_FAILED

FLAT_WANT, FLAT_ON, FLAT_STOP, FLAT_END = 1, 2, 4, 8   # as in vmkit.h
# Filtered accesses in a row at CPL 0 with CS, SS, DS, ES flat after which the hooks are
# suspended (a flat stretch): a suspension and the hooks' return cost 10-15 µs, the filter
# ~60 ns an access (measured: the module's docstring).
STRETCH_AFTER = 256


class FlatStretch:
    """A part of SegmentLimits (limits.py): a flat stretch begun and ended. Uses its `state`
    (the C filter's), `lib`, `_counter` (the C counter's state) and the C functions it looked up."""

    @property
    def suspended(self):
        """A flat stretch: the hooks off, `ranges` still wanted."""
        return self.state is not None and bool(self.state.suspended)

    def after_run(self, other_stop):
        """After every run whose counter has its `flat` set (CPU.run): a stretch that had the
        hooks off ends (they are back before anything else runs); one the counter stopped to
        begin starts, unless the run also stopped for something else (`other_stop`: a
        fault, a violation, a port's stop request). True: the counter stopped before an
        instruction it counted (as a breakpoint's hit), only to begin or end a stretch: the
        run goes on there, and the instruction counts when it runs."""
        if self.lib is None:
            return False
        c = self._counter
        flat = c.flat
        if flat & FLAT_ON:
            self._resume()
            return bool(flat & FLAT_END) and not other_stop
        if not flat & FLAT_STOP:
            return False                    # (FLAT_WANT: the counter looks at its next instruction)
        c.flat = 0
        if other_stop:
            return False
        self._suspend(self._uch, self._at)   # (paging is off: the counter checked)
        self.stretches += 1
        c.flat = FLAT_ON
        return True

    def _resume(self):
        """The hooks back, as `ranges` wants them (a stretch over)."""
        if self.state.suspended:
            got = self._resume_c(self._uch, self._at)
            if got:
                raise RuntimeError(f"cannot hook the ranges past the segment limits (unicorn error {HOOK_FAILED - got})")
