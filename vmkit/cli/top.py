"""`vmkit top`: like esxtop, every world per CPU, refreshed as the machine runs;
`--batch N` prints N snapshots as CSV (like `esxtop -b`), for a plot.

The numbers are vmkit.lessons.top's (the notebook's top widget shows the same)."""
import csv
import sys
import time

from rich.live import Live
from rich.text import Text

from vmkit.hw import clock
from vmkit.lessons import top as lesson
from . import description, machine
from .description import UsageError


def add(sub):
    p = sub.add_parser("top", help="a live per-world, per-CPU view like esxtop (--batch N: CSV)",
                       description="Run the machine and show, per CPU, every world: its state, its share "
                                   "of virtual time since the last refresh, switches, timer ticks, IRQs taken, "
                                   "interrupts injected into its virtual CPU, traps by cause. Read from kernel "
                                   "memory and the trace.")
    description.add_arguments(p)
    p.add_argument("--interval", type=int, default=100_000, metavar="INSTRUCTIONS",
                   help="virtual time between snapshots (default 100000)")
    p.add_argument("-d", "--delay", type=float, default=0.25, metavar="SECONDS",
                   help="live view: wall-clock pause between refreshes, so you can watch (default 0.25; "
                        "the machine's virtual time does not depend on it); Ctrl-C quits")
    p.add_argument("-b", "--batch", type=int, metavar="N",
                   help="print N snapshots as CSV, one row per world per snapshot, one snapshot every "
                        "--interval (the run is N intervals long: -n does not apply)")
    p.set_defaults(run=run)


def _view(rows):
    """The live view: the same text the batch-less, terminal-less mode prints."""
    when = (f"vmkit top   virtual time {rows[0]['time']:,} = {clock.seconds(rows[0]['time']):.4f} s   "
            f"(Ctrl-C quits)\n\n") if rows else ""
    return Text(when + lesson.table(rows), no_wrap=True, overflow="crop")


def run(args):
    if args.interval < 1_000:
        raise UsageError(f"--interval must be at least 1000 instructions, not {args.interval}")
    if args.batch is not None and not 1 <= args.batch <= 100_000:
        raise UsageError(f"--batch must be from 1 to 100000, not {args.batch}")
    desc = description.from_args(args)
    m = machine.Machine(desc)
    view = lesson.Top(m.board, m.kernel)
    view.snapshot()                                  # the baseline: %VT from here on
    if args.batch is not None:
        out = csv.DictWriter(sys.stdout, fieldnames=("sample",) + lesson.COLUMNS, lineterminator="\n")
        out.writeheader()
        for sample in range(1, args.batch + 1):
            m.run_all(args.interval)
            for row in view.snapshot():
                out.writerow({"sample": sample, **row})
            if m.panic():
                break
    elif sys.stdout.isatty():
        with Live(_view(view.snapshot()), refresh_per_second=8) as live:
            try:
                for _ in m.run(step=args.interval):
                    live.update(_view(view.snapshot()))
                    time.sleep(max(0.0, args.delay))
            except KeyboardInterrupt:
                pass
    else:                                            # not a terminal: the last view, as text
        m.run_all()
        print(lesson.table(view.snapshot()))
    why = m.panic()
    if why:
        print(f"vmkit: the machine panicked: {why}", file=sys.stderr)
        return 1
    return 0
