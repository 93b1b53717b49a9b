"""`vmkit boot`: build the machine, run it, print every world's console.

Exit status 0 when the run ends with the machine up (a VM that crashed is
reported: the kernel stopping one VM is the design working), 1 when it
panicked (a CPU shut down, the COS faulted), with the reason."""
import argparse
import os
import select
import signal
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vmkit.hw import clock
from . import description, machine, replay, trace
from .description import UsageError

EXAMPLE = """a machine description (TOML; JSON has the same keys), e.g. m.toml:
  cpus = 2
  instructions = 500000
  [[vms]]
  name = "web"
  cpu = 1                       # optional: the kernel places it otherwise
  [[vms]]
  guest = "mine.bin"            # .bin raw x86, .s/.asm source; relative to m.toml
  [[inputs]]
  at = 50000                    # instructions after the boot
  serial = "devices\\n"          # typed on the COS's console; or keys = [scancodes],
                                # sensor = "jam", frame = "<hex>" (with nics = 1)
then: vmkit boot m.toml"""
PROGRESS_MIN = 5_000_000        # shorter runs take about a second or two: no bar
PACE = 500_000                  # --interactive: instructions per wall-clock second, so a person can type
LINE = 256                      # --interactive: bytes read at a time (one look per piece)
STEP = 20_000                   # --interactive: instructions between looks at the keyboard


def add(sub):
    p = sub.add_parser("boot", help="boot the COS, load the vmkernel, install VMs, run, print the consoles",
                       description="Boot the COS, insmod the vmkernel (it displaces the COS), install the "
                                   "VMs, run for the given virtual time and print each world's console. "
                                   "Exit status 1 if the machine panicked, 2 for bad input.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    description.add_arguments(p)
    p.add_argument("--tail", type=int, default=20, metavar="LINES",
                   help="print the last LINES lines of each console (0: all; default 20)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="type on the COS's console: each line read from standard input is typed on its COM1 "
                        f"at the virtual time it arrives (run paced at {PACE:,} instructions a second; "
                        "Ctrl-C or the end of the run stops); with --record the lines are recorded")
    p.add_argument("--record", metavar="FILE",
                   help="write a replay file of this run (vmkit replay FILE runs it again)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None,
                     help=f"show a progress bar (default: on a terminal, for runs of {PROGRESS_MIN:,}+)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show one")
    p.set_defaults(run=run)


def run_with_progress(m, show):
    """Run the machine; a rich progress bar on stderr if `show`."""
    total = m.desc["instructions"]
    if not show:
        m.run_all()
        return
    columns = (TextColumn("running"), BarColumn(), MofNCompleteColumn(), TextColumn("instructions"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("run", total=total)
        for done in m.run():
            bar.update(task, completed=done)


def interactive(m):
    """Run paced; stdin lines go to the COS's COM1 at the virtual time they arrive;
    the COS's console is echoed as it grows. Ctrl-C ends the run between two
    pieces, never inside one, so a recording of it replays the same."""
    shown, began, pending, stop = 0, time.monotonic(), b"", []
    fd = sys.stdin.fileno() if sys.stdin is not None else None
    previous = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        for done in m.run(step=STEP):
            text = m.cos.console()
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if stop:
                break
            if fd is not None and select.select([fd], [], [], 0)[0]:
                data = os.read(fd, LINE)     # unbuffered: select sees what is really waiting
                pending += data
                if not data:                 # end of input: the run goes on to its end
                    fd, pending = None, pending + b"\n" if pending else b""
                elif len(pending) >= LINE and b"\n" not in pending:
                    pending += b"\n"          # no Enter in sight: send what there is
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    m.type_now(line.rstrip(b"\r").decode("latin-1") + "\n")
            time.sleep(max(0.0, began + done / PACE - time.monotonic()))
    finally:
        signal.signal(signal.SIGINT, previous)
    print("\n-- end of the interactive run --")


def run(args):
    if args.tail < 0:
        raise UsageError(f"--tail must be 0 or more, not {args.tail}")
    desc = description.from_args(args)
    m = machine.Machine(desc)
    show = args.progress if args.progress is not None else (
        sys.stderr.isatty() and desc["instructions"] >= PROGRESS_MIN)
    if args.interactive:
        interactive(m)
    else:
        run_with_progress(m, show)
    print(m.consoles_text(args.tail))
    ran = m.board.clock - m.start
    print(f"vmkit: ran {ran:,} instructions after the boot, {clock.seconds(ran):.4f} virtual s "
          f"(virtual time {m.board.clock:,}; {clock.VIRTUAL_HZ:,} instructions a virtual second), "
          f"{desc['cpus']} CPU{'s' if desc['cpus'] > 1 else ''}, {len(m.vms)} VM{'s' if len(m.vms) != 1 else ''}")
    if args.record:
        replay.write(args.record, m)
        print(f"vmkit: recorded to {args.record} (trace sha256 {trace.digest(m.board.trace)})")
    why = m.panic()
    if why:
        print(f"vmkit: the machine panicked: {why}", file=sys.stderr)
        return 1
    return 0
