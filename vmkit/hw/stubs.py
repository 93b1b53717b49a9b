"""Entering privileged software written in Python: a handler called when EIP reaches an
address in its stub (on_execute), and, from inside one, the CPU made to execute a routine
of the software's own x86 (execute), as a kernel that is Python runs an `invlpg` and goes on.

With the C counter, a stub's address is one of the counter's breakpoints (counter.c): the
run stops before the instruction and CPU.run calls the handlers between runs. Without it
(no C compiler), a Python code hook calls them from inside the run, and CPU._run_counted
resumes past the hook's address.

A mixin of CPU (cpu.py), as delivery.py and io.py are: it uses the CPU's `uc`, `counter`,
registers, and the state CPU.__init__ sets up for it (`_stubs`, `_stub_hooks`,
`_hook_ran_at`, `_hook_stopped_at`, `_handler_at`, `_executed`), which run() reads too.
"""
from unicorn import UC_HOOK_CODE

from . import unicorn_quirks


class Stubs:
    """A CPU's stubs (see the module's docstring)."""

    def on_execute(self, address, handler):
        """Call handler(cpu) when EIP reaches `address`, before that instruction
        runs: how a stub hands over to Python. Returns a handle for `remove`.

        The address is one of the C counter's breakpoints (counter.c): the run
        stops there before the instruction, the handler runs between runs (so the registers
        it writes take effect at once), and the run resumes at EIP, past the
        check if EIP is still `address`. No extra Unicorn code hook, which would
        slow every instruction. Without the C counter (no compiler), a Python
        code hook does the same from inside the run."""
        handlers = self._stubs.setdefault(address, [])
        handlers.append(handler)                  # several at one address: in this order (Qiling's hook_address)
        handle = (address, handler)
        if self.counter.exact:
            self.counter.set_breaks(list(self._stubs))
            return handle

        def fire(uc, at, size, _):
            if self._hook_ran_at == at:
                self._hook_ran_at = None
                return
            self._hook_ran_at = None
            stopping = self._stop_requested
            self._handler_at, self._executed = at, False
            try:
                self._call_handler(handler, at)
            finally:
                self._handler_at = None
            if self._stop_requested and (not stopping or self._executed):
                self._hook_stopped_at = at
                self.counter.uncount()
        self._stub_hooks[handle] = self.uc.hook_add(UC_HOOK_CODE, fire, None, address, address)
        return handle

    def _call_handler(self, handler, at):
        """The handler is the software at `at` (a kernel's dispatcher): its failure
        stops this CPU, as a panic would, and is raised once to whoever runs the board."""
        try:
            handler(self)
        except Exception as e:
            self.stop(f"the handler at {at:#x} failed: {type(e).__name__}: {e}")
            raise

    def remove(self, handle):
        """Stop entering the handler `on_execute` gave this handle for."""
        address, handler = handle
        self._stubs[address].remove(handler)
        if not self._stubs[address]:
            del self._stubs[address]
        if self.counter.exact:
            self.counter.set_breaks(list(self._stubs))
        else:
            self.uc.hook_del(self._stub_hooks.pop(handle))
            unicorn_quirks.clear_exception_record(self.uc)   # hook_del under paging once left a #DF

    def execute(self, begin, end, **registers):
        """From inside an on_execute handler (or between slices): this CPU executes its code from
        `begin` up to `end` (with `registers` loaded first), then the interrupted
        EIP, EFLAGS and those registers are put back. How a kernel that is Python
        makes the CPU itself run an instruction such as `invlpg` and go on.
        A handler entered through the C counter's breakpoints runs between runs,
        so this is a plain run (with the breakpoints off: the routine is not a stub).
        Without the C counter the handler runs inside a code hook, and then:
        measured (Unicorn 2.1.4): uc_emu_start nests inside a hook, and the outer
        run resumes at the restored EIP; but writing EIP in a hook restarts the
        hooked instruction (its hooks run again) and a nested run forgets a pending
        emu_stop. So the slice is ended here, before the hooked instruction, as a
        handler that stops the slice does, and the next slice starts there without
        running the handler again. The nested instructions are not virtual time
        (nor is the Python kernel's own work); the counter is kept as it was."""
        nested = self._handler_at is not None          # else: between slices, the CPU stopped
        names = ("eip", "eflags") + tuple(registers)
        saved = dict(zip(names, self.read(*names)))
        state = self.counter.state if self.counter.exact else None
        if state is not None:
            kept = state.count, state.budget, state.spent, state.nbreaks, state.hit, state.wait_if, state.stretch_after
            state.count, state.budget, state.nbreaks, state.wait_if, state.stretch_after = 0, 1 << 62, 0, 0, 0
        try:
            self.write(**registers)
            self.uc.emu_start(begin, end)
        finally:
            if state is not None:
                (state.count, state.budget, state.spent, state.nbreaks, state.hit, state.wait_if,
                 state.stretch_after) = kept
            self.write(**saved)
            if nested:
                self._executed = True
                self.request_stop()
