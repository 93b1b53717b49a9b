"""A learner's function as the kernel calls it, bounded: a call that has not
returned after CALL_LIMIT seconds, or that tries to end the grader's process
(sys.exit, raise SystemExit or KeyboardInterrupt), is stopped and named with
the arguments of that call, so the hint can say which request or block it was.
Once stopped, the function is not called again: every later call raises the
same Stopped at once (a kernel that turns a resolver's error into a failed
request would otherwise wait out the limit for each block).

The runner's time limit (runner.TIME_LIMIT) would stop an endless loop too,
but only as "timed out", a minute later, without saying which call looped. A
legitimate call takes microseconds; the limit is wall-clock time only because a
loop that never ends retires no instructions of the emulated machine (it is
Python, in the kernel's handler), and it decides nothing when no call hangs.
SIGALRM interrupts Python code only, on the main thread; elsewhere (a notebook's
thread) the call runs unbounded and the runner's limit remains."""
import signal
import threading

CALL_LIMIT = 5                  # seconds: some hundred thousand times a legitimate call


class Stopped(Exception):
    """The learner's call was stopped; str() says which call and why; `hung`: it did not return."""
    def __init__(self, text, hung=False):
        super().__init__(text)
        self.hung = hung


def bounded(function, describe):
    """`function`, stopped after CALL_LIMIT seconds; describe(*args) names a call in words."""
    stopped = []

    def call(*args):
        if stopped:                             # it hung once: the next call is not waited for
            raise stopped[0]
        if threading.current_thread() is not threading.main_thread():
            return function(*args)

        def stop(signum, frame):
            raise Stopped(f"{describe(*args)} had not returned after {CALL_LIMIT} s: a loop that never ends?",
                          hung=True)
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, CALL_LIMIT)
        try:
            return function(*args)
        except Stopped as e:
            stopped.append(e)
            raise
        except (SystemExit, KeyboardInterrupt) as e:
            stopped.append(Stopped(f"{describe(*args)} raised {type(e).__name__}: the grader calls your "
                                   "function, which must return (or raise an Exception), not end the process"))
            raise stopped[0] from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    call.__name__ = getattr(function, "__name__", "call")
    return call
