"""The `vmkit` command, run as a subprocess as a shell or CI runs it.

What is asserted is the machine's: text the COS and the guests printed on
their serial ports, counters in kernel memory against the trace's events,
the trace's digest across two runs."""
import csv
import io
import json
import os
import pathlib
import subprocess
import sys

import pytest

from vmkit.cli import replay as replay_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = "200000"


def vmkit(*args, cwd=ROOT, code=None, stdin=""):
    """Run `python -m vmkit ARGS` (or the Python `code`); CompletedProcess."""
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "vmkit"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv + [str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, input=stdin)


def one_line_error(out, *words):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---- help -------------------------------------------------------------------------
def test_help_reads_well():
    out = vmkit("--help")
    assert out.returncode == 0
    for command in ("boot", "top", "trace", "replay"):
        assert command in out.stdout
        sub = vmkit(command, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: vmkit {command}"), sub.stdout
    assert "--batch" in vmkit("top", "--help").stdout
    assert "--kinds" in vmkit("trace", "--help").stdout


def test_entry_point_is_declared():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["vmkit"].partition(":")
    assert module == "vmkit.cli" and name == "main"
    assert vmkit().returncode == 2                     # no subcommand: the help, status 2


# ---- boot ---------------------------------------------------------------------------
def test_boot_two_cpus_two_vms_prints_every_console():
    out = vmkit("boot", "--cpus", 2, "--vms", 2, "-n", RUN, "--tail", 0)
    assert out.returncode == 0, out.stderr
    assert "vmkload: vmkernel running; COS displaced" in out.stdout     # printed by the COS's x86
    assert "hello from vm1" in out.stdout and "hello from vm2" in out.stdout
    assert "== vm1 (virtual COM1, CPU 1) ==" in out.stdout            # the kernel placed it on CPU 1
    assert "2 CPUs, 2 VMs" in out.stdout


def test_boot_description_types_on_the_cos_console(tmp_path):
    desc = tmp_path / "m.toml"
    desc.write_text('instructions = 200000\n[[vms]]\nname = "web"\n'
                    '[[inputs]]\nat = 50000\nserial = "help\\n"\n')
    out = vmkit("boot", desc, "--tail", 0)
    assert out.returncode == 0, out.stderr
    assert "cos: commands: help ticks devices insmod rmmod mem" in out.stdout   # the COS read and ran it
    assert "hello from web" in out.stdout


def test_boot_guest_files_binary_and_source(tmp_path):
    from vmkit.hw.asm import assemble
    (tmp_path / "hi.bin").write_bytes(assemble("mov edx, 0x3f8\nmov al, 0x68\nout dx, al\nmov al, 0x69\n"
                                               "out dx, al\nmov al, 10\nout dx, al\nl: hlt\njmp l", 0))
    (tmp_path / "msg.s").write_text("start: mov edx, 0x3f8\nlea esi, [msg]\nnext: mov al, [esi]\n"
                                    "test al, al\njz done\nout dx, al\ninc esi\njmp next\n"
                                    "done: hlt\njmp done\nmsg: .asciz \"linked at my base\\n\"\n")
    out = vmkit("boot", "--guest", "hi.bin", "--guest", "msg.s", "-n", 100000, "--record", "r.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "== vm1 (virtual COM1, CPU 0) ==\nhi\n" in out.stdout
    assert "== vm2 (virtual COM1, CPU 0) ==\nlinked at my base\n" in out.stdout
    (tmp_path / "hi.bin").unlink()                     # the replay file carries the guests
    again = vmkit("replay", tmp_path / "r.json", "--tail", 0)
    assert again.returncode == 0 and "identical" in again.stdout, again.stderr
    assert "== vm2 (virtual COM1, CPU 0) ==\nlinked at my base\n" in again.stdout


def test_boot_panic_is_a_non_zero_status_with_the_reason():
    """Zero the kernel's IDT in memory: the next interrupt finds no gate, the
    CPU cannot deliver #NP nor #DF, and shuts down (a triple fault)."""
    code = ("import sys\nfrom vmkit.cli import machine, main\nfrom vmkit.kernel import layout\n"
            "build = machine.Machine.__init__\n"
            "def broken(self, desc):\n    build(self, desc)\n"
            "    self.board.memory.write(self.kernel.base + layout.IDT, bytes(256 * 8))\n"
            "machine.Machine.__init__ = broken\nsys.exit(main(sys.argv[1:]))")
    out = vmkit("boot", "--vms", 1, "-n", RUN, code=code)
    assert out.returncode == 1
    assert "the machine panicked: CPU 0 stopped: triple fault" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_machine_that_does_not_come_up_is_one_line_and_status_1():
    """insmod given too few instructions to finish: the build stops, named."""
    code = ("import sys\nfrom vmkit.lessons import takeover\nfrom vmkit.cli import main\n"
            "takeover.COMMAND_LIMIT = 1000\nsys.exit(main(sys.argv[1:]))")
    out = vmkit("boot", code=code)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("vmkit: the machine did not come up: the COS did not finish 'insmod' "
                                  "within 1000 instructions")
    one_line_error(vmkit("boot", "--timer-period", 500), "timer_period", "1000")


# ---- trace ----------------------------------------------------------------------------
def test_trace_json_lines_kinds_and_time_window():
    full = vmkit("trace", "--vms", 1, "-n", RUN)
    events = [json.loads(line) for line in full.stdout.splitlines()]
    assert full.returncode == 0 and len(events) > 500
    assert set(events[0]) == {"time", "cpu", "kind", "data"}
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    part = vmkit("trace", "--vms", 1, "-n", RUN, "--kinds", "switch.b*,vm.*", "--from", 50000, "--to", 150000)
    picked = [json.loads(line) for line in part.stdout.splitlines()]
    assert picked == [e for e in events if (e["kind"] == "switch.begin" or e["kind"].startswith("vm."))
                      and 50000 <= e["time"] < 150000]
    assert {e["kind"] for e in picked} == {"switch.begin", "vm.console"}
    summary = vmkit("trace", "--vms", 1, "-n", RUN, "--summary")
    counts = {line.split()[1]: int(line.split()[0]) for line in summary.stdout.splitlines()[:-1]}
    assert counts["switch.begin"] == sum(e["kind"] == "switch.begin" for e in events)
    assert sum(counts.values()) == len(events)
    assert full.stderr.split("sha256 ")[1] == summary.stderr.split("sha256 ")[1]   # same run, same trace


def test_keys_pressed_reach_the_cos_through_the_kernel(tmp_path):
    """Scancodes at a virtual time: the 8042 raises IRQ 1, the kernel forwards the
    line and injects vector 0x21 into the displaced COS."""
    (tmp_path / "k.toml").write_text("[[inputs]]\nat = 30000\nkeys = [0x1e, 0x9e]\n")
    out = vmkit("trace", tmp_path / "k.toml", "-n", 60000, "--kinds", "kbd.key,kernel.inject,load.switched")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    booted = max(e["time"] for e in events if e["kind"] == "load.switched")
    keys = [e for e in events if e["kind"] == "kbd.key"]
    assert [e["data"]["code"] for e in keys] == [0x1e, 0x9e] and keys[0]["time"] > booted
    assert any(e["kind"] == "kernel.inject" and e["data"]["vector"] == 0x21 and e["time"] > keys[0]["time"]
               for e in events)


def test_a_frame_from_the_host_reaches_the_kernels_shared_nic(tmp_path):
    """A broadcast frame on nic0's wire: the real NIC takes it into the kernel's
    ring, the kernel sorts it to both itself and the COS; top counts it for the COS."""
    frame = "ffffffffffff" + "020000000077" + "0800" + b"hello".hex()
    (tmp_path / "n.toml").write_text(f'nics = 1\n[[inputs]]\nat = 30000\nframe = "{frame}"\n')
    out = vmkit("trace", tmp_path / "n.toml", "-n", 60000, "--kinds", "nic.rx,nic.share_rx")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["nic.rx", "nic.share_rx"]
    assert events[0]["data"]["length"] == 19 and events[1]["data"]["to"] == "both"
    rows = list(csv.DictReader(io.StringIO(vmkit("top", tmp_path / "n.toml", "--batch", 1,
                                                 "--interval", 60000).stdout)))
    assert [(r["world"], r["packets"]) for r in rows] == [("cos", "1")]
    (tmp_path / "bad.toml").write_text('[[inputs]]\nat = 1\nframe = "ffff"\n')
    one_line_error(vmkit("boot", tmp_path / "bad.toml"), "inputs[0]", "needs a NIC")
    (tmp_path / "bad.toml").write_text('nics = 1\n[[inputs]]\nat = 1\nframe = "ffff"\n')
    one_line_error(vmkit("boot", tmp_path / "bad.toml"), "inputs[0].frame", "14 to 1514 bytes")


def test_a_jammed_sensor_from_outside_storms_the_cos(tmp_path):
    """A device event as an input: the sensor's line stuck high; the kernel forwards
    IRQ 5 again and again, and the COS gets fewer of its own ticks printed."""
    (tmp_path / "j.toml").write_text('[[inputs]]\nat = 30000\nsensor = "jam"\n')
    jammed = [json.loads(line) for line in
              vmkit("trace", tmp_path / "j.toml", "-n", RUN, "--kinds", "irq.queued,serial,sensor.*").stdout.splitlines()]
    calm = [json.loads(line) for line in vmkit("trace", "-n", RUN, "--kinds", "irq.queued,serial").stdout.splitlines()]
    assert [e["kind"] for e in jammed].count("sensor.jammed") == 1
    assert sum(e["kind"] == "irq.queued" and e["data"]["line"] == 5 for e in jammed) > 100
    assert sum(e["kind"] == "irq.queued" and e["data"]["line"] == 5 for e in calm) == 0
    ticks = lambda events: sum(e["kind"] == "serial" and e["data"]["line"].startswith("cos: tick") for e in events)
    assert ticks(jammed) < ticks(calm)
    (tmp_path / "bad.toml").write_text('[[inputs]]\nat = 1\nsensor = "melt"\n')
    one_line_error(vmkit("boot", tmp_path / "bad.toml"), "inputs[0].sensor", "'melt'")


# ---- top ------------------------------------------------------------------------------
def test_top_batch_csv_agrees_with_the_machine():
    out = vmkit("top", "--cpus", 2, "--vms", 2, "--batch", 3, "--interval", 50000)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["sample"] for r in rows} == {"1", "2", "3"}
    last = [r for r in rows if r["sample"] == "3"]
    assert {(r["cpu"], r["world"]) for r in last} == {("0", "cos"), ("0", "vm2"), ("1", "system1"), ("1", "vm1")}
    for cpu in ("0", "1"):                       # each CPU's time is shared out among its worlds
        assert abs(sum(float(r["pct"]) for r in last if r["cpu"] == cpu) - 100) < 0.5
    for r in last:                               # the virtual CPU's trap counter (kernel memory)
        causes = sum(int(r[c]) for c in ("gp", "bp", "pf", "other"))   # = the faults the trace saw
        assert int(r["traps"]) == (causes if r["kind"] != "system" else 0), r
    vm1 = [int(r["switches"]) for r in rows if r["world"] == "vm1"]
    assert vm1 == sorted(vm1) and vm1[-1] > vm1[0]


def test_top_on_a_terminal_is_a_live_view():
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "vmkit", "top", "--vms", "1", "-n", "200000", "-d", "0"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "140"},
                         stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:                  # the other end closed
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert p.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert text.count("vmkit top   virtual time") >= 2          # refreshed as it ran
    assert "virtual time 224,000" in text and " vm1 " in text


def test_top_without_a_terminal_prints_the_last_view():
    out = vmkit("top", "--vms", 1, "-n", 100000)
    assert out.returncode == 0
    head, *rows = out.stdout.splitlines()
    assert head.split()[:4] == ["CPU", "world", "kind", "state"] and len(rows) == 2


# ---- replay ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """One recorded run (a command typed at 60,000): its file's text and trace digest."""
    path = tmp_path_factory.mktemp("recording") / "bug.vmkit.json"
    out = vmkit("boot", "--cpus", 2, "--vms", 2, "-n", RUN, "--type", "60000:ticks", "--record", path)
    assert out.returncode == 0, out.stderr
    return path.read_text(), out.stdout.split("trace sha256 ")[1].split(")")[0]


def record(tmp_path, recording):
    path = tmp_path / "bug.vmkit.json"
    path.write_text(recording[0])
    return path, recording[1]


def test_replay_gives_the_identical_trace(tmp_path, recording):
    path, recorded = record(tmp_path, recording)
    out = vmkit("replay", path, "--tail", 3)
    assert out.returncode == 0, out.stderr
    assert f"replayed: " in out.stdout and out.stdout.count(recorded) == 2 and "identical" in out.stdout
    trace = vmkit("trace", "--cpus", 2, "--vms", 2, "-n", RUN, "--type", "60000:ticks", "--summary")
    assert trace.stderr.strip().endswith(recorded)          # the same run by another subcommand


def test_interactive_lines_are_typed_recorded_and_replayed(tmp_path):
    path = tmp_path / "session.json"
    out = vmkit("boot", "--interactive", "-n", RUN, "--record", path, stdin="devices\n")
    assert out.returncode == 0, out.stderr
    assert "devices\ncos: pic ports 0x20-0x21" in out.stdout        # the COS echoed and ran it
    typed = json.loads(path.read_text())["machine"]["inputs"]
    assert [x["serial"] for x in typed] == ["devices\n"] and typed[0]["at"] > 0
    again = vmkit("replay", path, "--tail", 0)
    assert again.returncode == 0 and "identical" in again.stdout
    assert "devices\ncos: pic ports 0x20-0x21" in again.stdout


def test_an_interrupted_interactive_run_replays_identically(tmp_path):
    """Ctrl-C wherever it lands (the wall clock decides): the run ends between two
    pieces, and the recording replays to the same trace."""
    import signal
    import time
    path = tmp_path / "stopped.json"
    p = subprocess.Popen([sys.executable, "-m", "vmkit", "boot", "-i", "-n", "50000000", "--record", str(path)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"ticks\n")
    p.stdin.flush()
    assert p.stdout.readline()          # the paced run has begun (its Ctrl-C handler is set): a
    time.sleep(1)                       # fixed sleep alone lost the race on a loaded machine
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and b"Traceback" not in err, err
    assert b"-- end of the interactive run --" in out
    again = vmkit("replay", path)
    assert again.returncode == 0 and "identical" in again.stdout, again.stderr


def test_replay_notices_a_different_run(tmp_path, recording):
    """A re-sealed file with another input time: the run differs, and replay says so."""
    path, _ = record(tmp_path, recording)
    body = json.loads(path.read_text())
    del body["digest"]
    body["machine"]["inputs"][0]["at"] += 1000
    path.write_text(json.dumps({**body, "digest": replay_file._seal(body)}))
    out = vmkit("replay", path)
    assert out.returncode == 1                   # typed at 24,000 + 61,000: the runs part there
    assert out.stderr.strip() == ("vmkit: the replayed trace differs from the recorded one, "
                                  "first between virtual time 0 and 100,000")


# ---- bad input: one line, status 2 --------------------------------------------------
def test_unknown_subcommand_and_flag():
    one_line_error(vmkit("frobnicate"), "invalid choice", "frobnicate")
    one_line_error(vmkit("boot", "--frobnicate"), "unrecognized arguments", "--frobnicate")
    one_line_error(vmkit("boot", "--cpus", 3), "cpus", "3")


def test_description_with_an_unknown_key(tmp_path):
    (tmp_path / "m.toml").write_text("cpus = 1\nspeed = 3\n")
    one_line_error(vmkit("boot", tmp_path / "m.toml"), "unknown key 'speed'")
    (tmp_path / "v.json").write_text(json.dumps({"vms": [{"name": "a", "ram": 4096}]}))
    one_line_error(vmkit("boot", tmp_path / "v.json"), "vms[0]", "unknown key 'ram'")
    (tmp_path / "n.toml").write_text('[[vms]]\nname = "system1"\n')     # top would mistake it for CPU 1's
    one_line_error(vmkit("boot", tmp_path / "n.toml"), "vms[0].name", "'system1'")
    (tmp_path / "g.json").write_text(json.dumps({"vms": [{"guest": {"image": "not base64!"}}]}))
    one_line_error(vmkit("boot", tmp_path / "g.json"), "vms[0].guest.image", "base64")
    (tmp_path / "broken.toml").write_text("cpus = \n")
    one_line_error(vmkit("boot", tmp_path / "broken.toml"), "not valid TOML")


def test_guest_file_missing_or_too_big(tmp_path):
    one_line_error(vmkit("boot", "--guest", tmp_path / "nope.bin"), "nope.bin", "no such file")
    (tmp_path / "big.bin").write_bytes(bytes(0x9000))
    one_line_error(vmkit("boot", "--guest", tmp_path / "big.bin"), "big.bin", "36864 bytes", "too big")


def test_replay_file_from_another_version_or_edited(tmp_path, recording):
    path, _ = record(tmp_path, recording)
    data = json.loads(path.read_text())
    edited = tmp_path / "edited.json"
    edited.write_text(path.read_text().replace('"ticks\\n"', '"mem\\n"'))
    one_line_error(vmkit("replay", edited), "changed after it was recorded")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**data, "vmkit": "0.0.1"}))
    one_line_error(vmkit("replay", old), "written by vmkit 0.0.1")
    one_line_error(vmkit("replay", tmp_path / "missing.json"), "no such file")
    (tmp_path / "junk.json").write_text("{not json")
    one_line_error(vmkit("replay", tmp_path / "junk.json"), "not JSON")


def test_the_notebook_widget_shows_what_top_prints():
    """The same machine, run the same way: the widget's rows are the command's CSV rows."""
    from vmkit.lessons import smp
    from vmkit.ui.top_panel import TopPanel
    board, cos, kernel, vms = smp.two_cpus(vms=("vm1", "vm2"))
    rows = TopPanel(board, kernel).run(50_000, 3)
    out = vmkit("top", "--cpus", 2, "--vms", 2, "--batch", 3, "--interval", 50000)
    printed = [r for r in csv.DictReader(io.StringIO(out.stdout)) if r["sample"] == "3"]
    assert [{k: str(v) for k, v in r.items()} for r in rows] == [
        {k: v for k, v in r.items() if k != "sample"} for r in printed]


def test_seconds_are_the_virtual_clocks_and_the_run_says_them():
    """One virtual clock (hw/clock.py): a description in seconds runs that many of its
    instructions, and the run's summary gives virtual seconds of the same clock."""
    from vmkit.cli import description
    from vmkit.hw.clock import VIRTUAL_HZ
    assert description.normalise({"seconds": 0.002})["instructions"] == VIRTUAL_HZ // 500 == 200_000
    out = vmkit("boot", "--seconds", "0.002")
    assert f"ran 200,000 instructions after the boot, 0.0020 virtual s" in out.stdout
