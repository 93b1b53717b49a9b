"""`vmkit replay FILE`: run a recorded machine again and check that its trace
is identical.

`vmkit boot --record FILE` writes what a run took from outside: the machine
description (guests embedded), the inputs with their virtual times, how long
it ran, and the SHA-256 of its trace. Virtual time is retired instructions,
so the same description and inputs give the same trace: a learner sends an
instructor a replay file of a bug, and the instructor sees the same run.

The file names the format and the vmkit version that wrote it and carries a
digest of its own contents: a file from another version, or edited by hand,
is refused (a one-line error), since it would not replay the same run."""
import hashlib
import json
import sys
from importlib import metadata

from . import description, machine
from .description import UsageError
from .trace import checkpoints

FORMAT = "vmkit-replay"
FORMAT_VERSION = 1


def vmkit_version():
    try:
        return metadata.version("vmkit")
    except metadata.PackageNotFoundError:          # run from a source tree not installed
        return "unknown"


def _seal(body):
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def summary(trace):
    """What a replay file keeps of the trace: its length, digest and checkpoints."""
    marks = checkpoints(trace)
    return {"events": len(trace), "sha256": marks[-1][2], "checkpoints": [list(c) for c in marks]}


def parted(recorded, replayed):
    """The virtual time span where two runs' traces first differ: (after, by)."""
    before = 0
    for (t, n, h), (t2, n2, h2) in zip(recorded, replayed):
        if (t, n, h) != (t2, n2, h2):
            return before, t
        before = t
    return before, None


def write(path, m):
    """Record machine `m` (after its run) to `path`."""
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "vmkit": vmkit_version(),
            "machine": {**m.desc, "instructions": m.board.clock - m.start},
            "trace": summary(m.board.trace)}
    try:
        with open(path, "w") as f:
            json.dump({**body, "digest": _seal(body)}, f, indent=1, sort_keys=True)
            f.write("\n")
    except OSError as e:
        raise UsageError(f"cannot write the replay file {path}: {e.strerror}") from None


def read(path):
    """The recorded body, checked: UsageError if it is not a replay file of this
    vmkit, or was changed after it was written."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"replay file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"replay file {path}: cannot read it ({e})") from None
    except ValueError as e:
        raise UsageError(f"replay file {path}: not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"replay file {path}: not a vmkit replay file")
    if data.get("format_version") != FORMAT_VERSION or data.get("vmkit") != vmkit_version():
        raise UsageError(
            f"replay file {path} was written by vmkit {data.get('vmkit')} (format {data.get('format_version')}); "
            f"this is vmkit {vmkit_version()} (format {FORMAT_VERSION}), whose machine may run it differently")
    body = {k: v for k, v in data.items() if k != "digest"}
    if data.get("digest") != _seal(body):
        raise UsageError(f"replay file {path} was changed after it was recorded (its digest does not match)")
    return body


def add(sub):
    p = sub.add_parser("replay", help="run a recorded run again (vmkit boot --record FILE) and compare traces",
                       description="Rebuild the recorded machine, apply its inputs at their virtual times, "
                                   "and compare the trace's SHA-256 with the recorded one.")
    p.add_argument("file", metavar="FILE", help="a replay file written by `vmkit boot --record FILE`")
    p.add_argument("--tail", type=int, metavar="LINES",
                   help="also print the last LINES lines of each console (0: all; default: no consoles)")
    p.set_defaults(run=run)


def run(args):
    body = read(args.file)
    desc = description.normalise(body["machine"])
    m = machine.Machine(desc)
    m.run_all()
    if args.tail is not None:
        print(m.consoles_text(max(0, args.tail)))
    recorded, replayed = body["trace"], summary(m.board.trace)
    print(f"recorded: {recorded['events']} events, trace sha256 {recorded['sha256']}")
    print(f"replayed: {replayed['events']} events, trace sha256 {replayed['sha256']}")
    if replayed == recorded:
        print("identical")
        return 0
    after, by = parted(recorded.get("checkpoints", []), replayed["checkpoints"])
    where = f"between virtual time {after:,} and {by:,}" if by is not None else f"after virtual time {after:,}"
    print(f"vmkit: the replayed trace differs from the recorded one, first {where}", file=sys.stderr)
    return 1
