"""A machine description for the `vmkit` subcommands: a TOML/JSON file and/or
flags, checked key by key and normalised (defaults filled in, guest files
embedded) into the dict that machine.Machine builds and a replay file keeps.

A description (every key optional):

    cpus = 2                  # 1 or 2
    timer_period = 2000       # instructions between the COS's PIT ticks
    quantum = 2               # timer ticks per world's turn
    nics = 1                  # NICs on the board (0..2), shared by the kernel and the COS
    instructions = 1000000    # how long to run (or: seconds = 0.01, of the virtual clock)
    [[vms]]                   # or: vms = 2 (that many console VMs)
    name = "vm1"
    guest = "console"         # the built-in console guest, or a file:
                              # .bin raw code, .s/.asm x86 source, linked at 0 (the guest sees its memory from 0)
    memory = 32768
    cpu = 1
    [[inputs]]                # external inputs
    at = 200000               # instructions after the boot (the kernel loaded, VMs installed)
    serial = "help\\n"         # typed on the COS's COM1 (its console)
    # keys = [0x1e, 0x9e]     # or scancodes pressed on the 8042 keyboard
    # frame = "ffffffffffff0200000000770800..."   # or a frame arriving on NIC `nic` (default 0)
    # sensor = "jam"          # or the sensor: a sample, jammed (its line stuck), unjammed

Anything wrong in it is a UsageError: one line naming the problem.
"""
import base64
import json
import pathlib

try:
    import tomllib
except ImportError:                    # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from vmkit.hw import clock
from vmkit.hw.board import NIC_PORTS
from vmkit.hw.nic import MAX_FRAME, MIN_FRAME
from vmkit.lessons.worlds import VM_MEMORY
from vmkit.vmm import guests

# Virtual time is retired instructions; a virtual second is the virtual clock's (hw/clock.py).
INSTRUCTIONS_PER_SECOND = clock.VIRTUAL_HZ
MAX_INSTRUCTIONS = 2_000_000_000
MAX_VM_MEMORY = 4 << 20
MIN_TIMER_PERIOD = 1000
DEFAULTS = {"cpus": 1, "timer_period": 2000, "quantum": 2, "instructions": 1_000_000, "nics": 0}
KEYS = set(DEFAULTS) | {"seconds", "vms", "inputs"}
VM_KEYS = {"name", "guest", "memory", "cpu"}
INPUT_KEYS = {"at", "serial", "keys", "frame", "nic", "sensor"}
SENSOR_EVENTS = ("sample", "jam", "unjam")     # what the host can do to the sensor (hw/sensor.py)
BUILTIN_GUESTS = {"console": guests.console}
RESERVED_NAMES = {"cos", "kernel", "both", "dropped"}   # worlds' and the shared NIC's own names


class UsageError(Exception):
    """Bad input from the command line or a file: exit status 2, one line."""


def read_description(path):
    """A TOML or JSON machine description file, as a dict."""
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"machine description {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"machine description {path}: cannot read it ({e})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"machine description {path}: not valid {'JSON' if p.suffix == '.json' else 'TOML'} "
                         f"({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"machine description {path}: expected a table of keys, not {type(data).__name__}")
    return data


def _int(where, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{where} must be an integer from {low} to {high}, not {value!r}")
    return value


def _unknown(where, given, allowed):
    extra = sorted(set(given) - allowed)
    if extra:
        raise UsageError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def _guest(where, spec, base_dir, memory):
    """A VM's guest, normalised: "console" (built in), or {"file": its name,
    "source": x86 text or raw code, "image": its bytes in base64} so that a
    replay file carries it."""
    if isinstance(spec, dict):                      # already normalised (a replay file, --guest)
        _unknown(f"{where}.guest", spec, {"file", "source", "image"})
        try:
            size = len(base64.b64decode(spec["image"], validate=True))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{where}.guest.image must be the guest's bytes in base64") from None
        if not 0 < size <= memory:
            raise UsageError(f"{where}.guest is {size} bytes: it must be 1 to {memory} (its VM's memory)")
        return {"file": str(spec.get("file", "guest")), "source": bool(spec.get("source")), "image": spec["image"]}
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"{where}.guest must be 'console' or a file name, not {spec!r}")
    if spec in BUILTIN_GUESTS:
        return spec
    path = pathlib.Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise UsageError(f"guest file {spec}: no such file")
    size = path.stat().st_size
    if size > memory:
        raise UsageError(f"guest file {spec} is {size} bytes: too big for its VM's {memory} bytes of memory")
    if size == 0:
        raise UsageError(f"guest file {spec} is empty")
    return {"file": path.name, "source": path.suffix in (".s", ".asm"),
            "image": base64.b64encode(path.read_bytes()).decode()}


def normalise(data, base_dir=None, label="machine description"):
    """Check every key and fill in defaults: the description a replay file keeps."""
    _unknown(label, data, KEYS)
    out = dict(DEFAULTS)
    out["cpus"] = _int("cpus", data.get("cpus", 1), 1, 2)
    # below ~1000 instructions a tick, the COS spends its time in its timer handler and
    # never finishes loading the kernel (measured: 500 times out, 1000 boots); the PIT
    # counts 16 bits
    out["timer_period"] = _int("timer_period", data.get("timer_period", 2000), MIN_TIMER_PERIOD, 65536)
    out["quantum"] = _int("quantum", data.get("quantum", 2), 1, 1000)
    out["nics"] = _int("nics", data.get("nics", 0), 0, len(NIC_PORTS))
    if "seconds" in data and "instructions" in data:
        raise UsageError("give instructions or seconds, not both")
    if "seconds" in data:
        s = data["seconds"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s * INSTRUCTIONS_PER_SECOND <= MAX_INSTRUCTIONS:
            raise UsageError(f"seconds must be a number from {1 / INSTRUCTIONS_PER_SECOND} to "
                             f"{MAX_INSTRUCTIONS // INSTRUCTIONS_PER_SECOND}, not {s!r}")
        out["instructions"] = clock.instructions(s)
    else:
        out["instructions"] = _int("instructions", data.get("instructions", DEFAULTS["instructions"]),
                                   1, MAX_INSTRUCTIONS)
    vms = data.get("vms", [])
    if isinstance(vms, int) and not isinstance(vms, bool):
        vms = [{} for _ in range(_int("vms", vms, 0, 8))]
    if not isinstance(vms, list):
        raise UsageError(f"vms must be a count or a list of tables, not {vms!r}")
    out["vms"] = []
    for i, vm in enumerate(vms):
        where = f"vms[{i}]"
        if not isinstance(vm, dict):
            raise UsageError(f"{where} must be a table, not {vm!r}")
        _unknown(where, vm, VM_KEYS)
        memory = _int(f"{where}.memory", vm.get("memory", VM_MEMORY), guests.MIN_MEMORY, MAX_VM_MEMORY)
        name = vm.get("name", f"vm{i + 1}")
        if (not isinstance(name, str) or not name.isidentifier() or len(name) > 8
                or name in RESERVED_NAMES or name.startswith("system")):
            raise UsageError(f"{where}.name must be an identifier of up to 8 characters, not a name the "
                             f"kernel uses (cos, kernel, system0, ...): not {name!r}")
        if name in (v["name"] for v in out["vms"]):
            raise UsageError(f"{where}.name {name!r} is used twice")
        cpu = vm.get("cpu")
        if cpu is not None:
            cpu = _int(f"{where}.cpu", cpu, 0, out["cpus"] - 1)
        out["vms"].append({"name": name, "memory": memory, "cpu": cpu,
                           "guest": _guest(where, vm.get("guest", "console"), base_dir, memory)})
    out["inputs"] = normalise_inputs(data.get("inputs", []), out["nics"])
    return out


def normalise_inputs(inputs, nics=0):
    if not isinstance(inputs, list):
        raise UsageError(f"inputs must be a list of tables, not {inputs!r}")
    out = []
    for i, x in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(x, dict):
            raise UsageError(f"{where} must be a table, not {x!r}")
        _unknown(where, x, INPUT_KEYS)
        at = _int(f"{where}.at", x.get("at"), 1, MAX_INSTRUCTIONS)
        kinds = [k for k in ("serial", "keys", "frame", "sensor") if k in x]
        if len(kinds) != 1:
            raise UsageError(f"{where} needs one of serial (text), keys (scancodes), frame (hex bytes) "
                             f"or sensor ({', '.join(SENSOR_EVENTS)})")
        if "nic" in x and "frame" not in x:
            raise UsageError(f"{where}: nic goes with a frame")
        if "frame" in x:
            out.append({"at": at, **_frame(where, x, nics)})
        elif "sensor" in x:
            if x["sensor"] not in SENSOR_EVENTS:
                raise UsageError(f"{where}.sensor must be one of {', '.join(SENSOR_EVENTS)}, not {x['sensor']!r}")
            out.append({"at": at, "sensor": x["sensor"]})
        elif "serial" in x:
            if not isinstance(x["serial"], str) or not x["serial"]:
                raise UsageError(f"{where}.serial must be text, not {x['serial']!r}")
            out.append({"at": at, "serial": x["serial"]})
        else:
            keys = x["keys"]
            if not isinstance(keys, list) or not keys:
                raise UsageError(f"{where}.keys must be a list of scancodes, not {keys!r}")
            out.append({"at": at, "keys": [_int(f"{where}.keys", k, 0, 255) for k in keys]})
    return sorted(out, key=lambda x: x["at"])


def _frame(where, x, nics):
    """A frame from the host, arriving on one of the board's NICs (`nics` key)."""
    if not nics:
        raise UsageError(f"{where}: a frame needs a NIC on the board (nics = 1 or 2)")
    nic = _int(f"{where}.nic", x.get("nic", 0), 0, nics - 1)
    try:
        frame = bytes.fromhex(x["frame"]) if isinstance(x["frame"], str) else None
    except ValueError:
        frame = None
    if frame is None or not MIN_FRAME <= len(frame) <= MAX_FRAME:
        raise UsageError(f"{where}.frame must be {MIN_FRAME} to {MAX_FRAME} bytes in hex "
                         f"(destination MAC, source MAC, type, payload)")
    return {"frame": frame.hex(), "nic": nic}


def parse_type(text):
    """--type AT:TEXT: TEXT and Enter typed on the COS's console at virtual time AT."""
    at, sep, line = text.partition(":")
    if not sep or not at.strip().isdigit() or not line:
        raise UsageError(f"--type wants AT:TEXT (e.g. 200000:help), not {text!r}")
    return {"at": int(at), "serial": line + "\n"}


def add_arguments(parser):
    """The machine options every running subcommand takes."""
    g = parser.add_argument_group("the machine")
    g.add_argument("machine", nargs="?", metavar="DESCRIPTION",
                   help="a TOML or JSON machine description (flags below override it)")
    g.add_argument("--cpus", type=int, metavar="N", help="1 or 2 CPUs (default 1)")
    g.add_argument("--vms", type=int, metavar="N", help="how many console VMs to install (vm1, vm2, ...)")
    g.add_argument("--guest", action="append", metavar="FILE",
                   help="install a VM running FILE (.bin raw x86, .s/.asm source); repeatable")
    g.add_argument("--memory", type=int, metavar="BYTES", help=f"each VM's memory in bytes (default {VM_MEMORY})")
    g.add_argument("--timer-period", type=int, metavar="N", help="instructions between the COS's timer ticks (default 2000)")
    g.add_argument("--quantum", type=int, metavar="TICKS", help="timer ticks per world's turn (default 2)")
    run = g.add_mutually_exclusive_group()
    run.add_argument("-n", "--instructions", type=int, metavar="N",
                     help="virtual time to run, in instructions (default 1000000)")
    run.add_argument("--seconds", type=float, metavar="S",
                     help=f"virtual time to run, in virtual seconds of {INSTRUCTIONS_PER_SECOND:,} instructions")
    g.add_argument("--type", action="append", metavar="AT:TEXT", default=[],
                   help="type TEXT and Enter on the COS's console AT instructions after the boot; repeatable")


def from_args(args):
    """The normalised description from a file and/or flags (flags win)."""
    data, base_dir = {}, None
    if args.machine:
        data = read_description(args.machine)
        base_dir = pathlib.Path(args.machine).parent
    if args.seconds is not None:
        data.pop("instructions", None)
        data["seconds"] = args.seconds
    if args.instructions is not None:
        data.pop("seconds", None)
        data["instructions"] = args.instructions
    for key in ("cpus", "timer_period", "quantum"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.vms is not None:
        data["vms"] = _int("--vms", args.vms, 0, 8)
    if args.memory is not None or args.guest:
        vms = data.get("vms", [])
        vms = [{} for _ in range(vms)] if isinstance(vms, int) and not isinstance(vms, bool) else vms
        if not isinstance(vms, list):
            raise UsageError(f"vms must be a count or a list of tables, not {vms!r}")
        memory = _int("--memory", args.memory, guests.MIN_MEMORY, MAX_VM_MEMORY) if args.memory else None
        if memory:
            vms = [{**vm, "memory": memory} if isinstance(vm, dict) else vm for vm in vms]
        for g in args.guest or []:          # a flag's file is relative to the working directory
            vms.append({"name": f"vm{len(vms) + 1}", "memory": memory or VM_MEMORY,
                        "guest": _guest("--guest", g, None, memory or VM_MEMORY)})
        data["vms"] = vms
    if args.type:
        inputs = data.get("inputs", [])
        data["inputs"] = (inputs if isinstance(inputs, list) else []) + [parse_type(t) for t in args.type]
    return normalise(data, base_dir, f"machine description {args.machine}" if args.machine else "flags")
