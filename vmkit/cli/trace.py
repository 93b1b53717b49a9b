"""`vmkit trace`: run the machine and write its trace (`board.trace`) as JSON
Lines, one event a line: {"time": virtual time, "cpu": index or null (the
board), "kind": "irq.raise", "data": {...}} — what pandas.read_json(lines=True)
and jq read. `--summary` counts the events by kind instead.

The digest of a run is the SHA-256 of the whole trace in this form; replay
compares it."""
import collections
import contextlib
import fnmatch
import hashlib
import json
import sys

from . import description, machine
from .description import UsageError


def _plain(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def event_json(e):
    """One event as a JSON line (keys sorted: the same event gives the same bytes)."""
    return json.dumps({"time": e.time, "cpu": e.cpu, "kind": e.kind,
                       "data": {k: _plain(v) for k, v in e.data.items()}}, sort_keys=True)


def digest(trace):
    """SHA-256 of the whole trace as JSON Lines."""
    return checkpoints(trace)[-1][2]


def checkpoints(trace, every=100_000):
    """[(virtual time, events so far, SHA-256 of the trace so far)] at every
    `every` instructions of virtual time, and at the end: where two runs part."""
    h, out, mark = hashlib.sha256(), [], every
    for i, e in enumerate(trace.events):
        while e.time >= mark:
            out.append((mark, i, h.hexdigest()))
            mark += every
        h.update(event_json(e).encode() + b"\n")
    last = trace.events[-1].time if trace.events else 0
    return out + [(last, len(trace.events), h.hexdigest())]


def select(events, kinds=None, start=None, stop=None):
    """Events whose kind matches one of the globs, with start <= time < stop."""
    patterns = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    return [e for e in events
            if (patterns is None or any(fnmatch.fnmatchcase(e.kind, p) for p in patterns))
            and (start is None or e.time >= start) and (stop is None or e.time < stop)]


def add(sub):
    p = sub.add_parser("trace", help="run and write the trace as JSON Lines (or --summary: counts by kind)",
                       description="Run the machine and write every trace event as a JSON line "
                                   "(time, cpu, kind, data): readable by pandas and jq.")
    description.add_arguments(p)
    p.add_argument("--kinds", metavar="GLOBS", help="only these kinds, comma-separated globs: irq.*,switch.*")
    p.add_argument("--from", dest="start", type=int, metavar="TIME", help="only events at virtual time >= TIME (since power-on: the boot and load take the first ~24,000)")
    p.add_argument("--to", dest="stop", type=int, metavar="TIME", help="only events at virtual time < TIME")
    p.add_argument("--summary", action="store_true", help="print the number of events of each kind instead")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(run=run)


def run(args):
    if args.start is not None and args.stop is not None and args.stop <= args.start:
        raise UsageError(f"--to {args.stop} must be after --from {args.start}")
    desc = description.from_args(args)
    try:                                      # before the run: a bad path costs nothing
        out = open(args.output, "w") if args.output else sys.stdout
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror}") from None
    m = machine.Machine(desc)
    m.run_all()
    events = select(m.board.trace.events, args.kinds, args.start, args.stop)
    with out if args.output else contextlib.nullcontext():
        if args.summary:
            counts = collections.Counter(e.kind for e in events)
            for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                out.write(f"{n:>8}  {kind}\n")
            out.write(f"{len(events):>8}  events in all\n")
        else:
            for e in events:
                out.write(event_json(e) + "\n")
    print(f"vmkit: {len(events)} of {len(m.board.trace)} events; trace sha256 {digest(m.board.trace)}",
          file=sys.stderr)
    why = m.panic()
    if why:
        print(f"vmkit: the machine panicked: {why}", file=sys.stderr)
        return 1
    return 0

