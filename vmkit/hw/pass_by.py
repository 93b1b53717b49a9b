"""A stub breakpoint the counter passes by, in C, while its handler would only return
(pass_by.c says when, read from the CPU and from memory at the breakpoint).

A stop at a breakpoint costs a return from Unicorn, the Python handler and a new run (~10 µs);
a handler that decides from a few registers and words that it has nothing to do can leave that
decision to the counter. What the handler's decision also depends on that only Python knows
(which world the CPU runs, whether a switch is in flight) its owner says with `arm`, each time
that changes: the word to read, or None (stop). The handler stays the reference: anything the
C does not settle stops as before, and without the C library (counter.py's twin in Python)
every hit stops.

One per CPU (the counter has one such breakpoint). A handler added or removed anywhere on the
CPU disarms it (Counter.set_breaks) until its owner arms it again, and `arm` arms it only while
the handler is the address's only one: another handler there (a lesson's probe, a test's
watch) is always reached.
"""
from unicorn.x86_const import UC_X86_REG_CS, UC_X86_REG_ESP


class PassBy:
    """The breakpoint at `address`, whose handler `handler` (as given to on_execute) returns
    at once when CS holds `cs`,
    the u32 at physical ESP + `vector_at` is `below` or more, and the u32 the owner arms with
    is not 1 (pass_by.c)."""
    enabled = True          # False: every hit stops (tests compare the two)

    def __init__(self, cpu, address, handler, cs, vector_at, below):
        self.cpu, self.address, self.handler = cpu, address, handler   # (the very object on_execute got)
        self._stubs = cpu._stubs
        counter = cpu.counter
        self.state = state = counter.state
        self.compiled = counter.compiled
        if not self.compiled:
            return
        if state.pass_at not in (0, address):
            raise RuntimeError(f"CPU {cpu.index} already passes {state.pass_at:#x} by; one breakpoint per CPU")
        state.pass_on = 0
        state.pass_at, state.pass_cs, state.pass_vector, state.pass_below = address, cs, vector_at, below
        state.ram, state.ram_size = cpu.memory.address, cpu.memory.size
        state.cs_id, state.esp_id = UC_X86_REG_CS, UC_X86_REG_ESP

    def arm(self, word):
        """The handler's Python state changed: pass while the u32 at physical `word` is not 1;
        None: stop at every hit."""
        handlers = self._stubs.get(self.address)
        if (word is not None and self.compiled and self.enabled and handlers is not None
                and len(handlers) == 1 and handlers[0] is self.handler):
            self.state.pass_word = word
            self.state.pass_on = 1
        else:
            self.state.pass_on = 0

    @property
    def passed(self):
        """How many times the counter went past the breakpoint without stopping."""
        return self.state.passed if self.compiled else 0
