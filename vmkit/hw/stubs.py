"""Entering privileged software written in Python: a handler called when EIP reaches an
address in its stub (on_execute), and, from inside one, the CPU made to execute a routine
of the software's own x86 (execute), as a kernel that is Python runs an `invlpg` and goes on.

A stub's address is one of the instruction counter's breakpoints (counter.c, or its Python
twin in counter.py without a C compiler): the run stops before the instruction and CPU.run
calls the handlers between runs.

A mixin of CPU (cpu.py), as delivery.py and io.py are: it uses the CPU's `uc`, `counter`,
registers, and the state CPU.__init__ sets up for it (`_stubs`), which run() reads too.
"""


class Stubs:
    """A CPU's stubs (see the module's docstring)."""

    def on_execute(self, address, handler):
        """Call handler(cpu) when EIP reaches `address`, before that instruction
        runs: how a stub hands over to Python. Returns a handle for `remove`.

        The address is one of the counter's breakpoints (counter.c): the run
        stops there before the instruction, the handler runs between runs (so the registers
        it writes take effect at once), and the run resumes at EIP, past the
        check if EIP is still `address`. No extra Unicorn code hook, which would
        slow every instruction."""
        handlers = self._stubs.setdefault(address, [])
        handlers.append(handler)                  # several at one address: in this order (Qiling's hook_address)
        self.counter.set_breaks(list(self._stubs))
        return (address, handler)

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
        self.counter.set_breaks(list(self._stubs))

    def execute(self, begin, end, **registers):
        """From inside an on_execute handler (or between slices): this CPU executes its code from
        `begin` up to `end` (with `registers` loaded first), then the interrupted
        EIP, EFLAGS and those registers are put back. How a kernel that is Python
        makes the CPU itself run an instruction such as `invlpg` and go on.
        A handler entered through the counter's breakpoints runs between runs, so this
        is a plain run (with the breakpoints off: the routine is not a stub). The nested
        instructions are not virtual time (nor is the Python kernel's own work); the
        counter is kept as it was. (Why between runs and not from a code hook: measured,
        Unicorn 2.1.4, uc_emu_start nests inside a hook, but writing EIP in a hook restarts
        the hooked instruction and a nested run forgets a pending emu_stop.)"""
        names = ("eip", "eflags") + tuple(registers)
        saved = dict(zip(names, self.read(*names)))
        state = self.counter.state
        kept = state.count, state.budget, state.spent, state.nbreaks, state.hit, state.wait_if, state.stretch_after
        state.count, state.budget, state.nbreaks, state.wait_if, state.stretch_after = 0, 1 << 62, 0, 0, 0
        try:
            self.write(**registers)
            self.uc.emu_start(begin, end)
        finally:
            if self._intr is not None and self._intr.n:    # (intr.py)
                self.drain_interrupts()
            (state.count, state.budget, state.spent, state.nbreaks, state.hit, state.wait_if,
             state.stretch_after) = kept
            self.write(**saved)
