"""Real-browser check of notebooks/00_the_machine.ipynb.

Starts JupyterLab on 127.0.0.1 (free port, no token, every Jupyter/IPython/home folder inside the
pytest tmp dir), opens a tmp copy of the notebook in Debian's Chromium driven by Playwright, runs
every cell through the Run menu and checks that the two widgets answer the user:

* the Stepper's "Step" button, focused and pressed with Enter and then Space, advances the
  "next:" line by one instruction each time (the expected text is computed here from a fresh
  emulated board, not from the widget);
* the IrqPanel's "Raise IRQ" button adds one run to the handler of the IDT the CPU has loaded,
  in the table the panel renders.

Skips when Playwright is not importable or Chromium is missing. Needs (what `./kit test` installs):
`pip install playwright` (never `playwright install`) and `apt-get install chromium`.
On failure a screenshot and the server log are left in the pytest tmp dir; the message names them.
"""
import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# One browser and one server: keep this file in one xdist group (`--dist loadfile` already does).
pytestmark = pytest.mark.xdist_group("browser")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path("notebooks") / "00_the_machine.ipynb"

SERVER_START_TIMEOUT = 60     # s: process start until /api answers
PAGE_TIMEOUT = 60             # s: notebook opened and its kernel idle
RUN_ALL_TIMEOUT = 120         # s: Run All Cells until every code cell has finished
UI_TIMEOUT = 15               # s: any single UI reaction (menu, widget update)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# ---------------------------------------------------------------- environment and server

def _chromium():
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium_path():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not importable: `pip install playwright` into the venv "
                    "(do not run `playwright install`; the test uses Debian's chromium)")
    path = _chromium()
    if path is None:
        pytest.skip("chromium not found at /usr/bin/chromium or on PATH: `apt-get install chromium`")
    return path


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _isolated_env(base):
    """os.environ with every Jupyter/IPython folder, HOME and TMPDIR inside `base`."""
    dirs = {"JUPYTER_CONFIG_DIR": base / "jupyter" / "config",
            "JUPYTER_DATA_DIR": base / "jupyter" / "data",
            "JUPYTER_RUNTIME_DIR": base / "jupyter" / "runtime",
            "IPYTHONDIR": base / "ipython",
            # Chromium writes ~/.config/chromium/Crash Reports and ~/.cache/dconf whatever its
            # profile dir is; Jupyter's helpers may write under ~ too. Keep all of it here.
            "HOME": base / "home",
            "XDG_CONFIG_HOME": base / "home" / ".config",
            "XDG_CACHE_HOME": base / "home" / ".cache",
            "XDG_DATA_HOME": base / "home" / ".local" / "share",
            "TMPDIR": base / "tmp"}          # the kernel's scratch disk images land here
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "JUPYTER_PASSWORD")}
    env.update({k: str(v) for k, v in dirs.items()})
    env["PYTHONDONTWRITEBYTECODE"] = "1"    # the kernel imports vmkit from the repo
    config = dirs["JUPYTER_CONFIG_DIR"]
    # No "get Jupyter news?" popup and no update check (both would reach the network).
    _write_json(config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
                / "notification.jupyterlab-settings", {"fetchNews": "false", "checkForUpdates": False})
    # jupyter-lsp runs `npm prefix --global` at start (writes ~/.npm/_logs); not needed here.
    _write_json(config / "jupyter_server_config.json",
                {"ServerApp": {"jpserver_extensions": {"jupyter_lsp": False}}})
    return env


def _children(pid):
    """{child pid: argv} of the live processes whose parent is `pid` (Linux /proc)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(proc.name)] = [a.decode(errors="replace") for a in
                                         (proc / "cmdline").read_bytes().split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            continue
    return found


def _log_tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


class LabServer:
    def __init__(self, proc, url, log, env, served):
        self.proc, self.url, self.log, self.env, self.served = proc, url, log, env, served

    def kernel_argv(self):
        return [argv for argv in _children(self.proc.pid).values()
                if any("ipykernel" in a for a in argv)]


def _start_lab(base, served):
    env = _isolated_env(base)
    # The notebook's kernelspec ("python3") must be this venv's ipykernel.
    probe = subprocess.run(
        [sys.executable, "-c", "import json; from jupyter_client.kernelspec import KernelSpecManager as K;"
         "s = K().get_kernel_spec('python3'); print(json.dumps([s.argv, s.resource_dir]))"],
        env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, f"could not resolve the python3 kernelspec:\n{probe.stderr}"
    argv, resource_dir = json.loads(probe.stdout)
    # jupyter_client replaces a bare "python"/"python3" argv[0] by the server's sys.executable.
    assert argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                       sys.executable), f"kernelspec python3 runs {argv[0]!r}, not {sys.executable}"
    assert "ipykernel" in " ".join(argv), f"kernelspec python3 is not ipykernel: {argv}"

    log_path = base / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
           "--IdentityProvider.token=", "--PasswordIdentityProvider.hashed_password=",
           f"--ServerApp.root_dir={served}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(proc, None, log_path, env, served)
    # --port=0: the OS picks a free port; the server writes it to jpserver-<pid>.json.
    info = Path(env["JUPYTER_RUNTIME_DIR"]) / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with code {proc.returncode} at start; "
                                 f"log {log_path}:\n{_log_tail(log_path)}")
        if server.url is None and info.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                server.url = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
        if server.url:
            try:
                with urllib.request.urlopen(server.url + "/api", timeout=2) as r:
                    if r.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    _stop_lab(server)
    raise AssertionError(f"jupyter lab did not answer on {server.url or '(no port yet)'}/api within "
                         f"{SERVER_START_TIMEOUT} s; log {log_path}:\n{_log_tail(log_path)}")


def _stop_lab(server):
    proc = server.proc
    kernels = {pid: argv for pid, argv in _children(proc.pid).items()}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)        # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Kernels run in their own session; kill any the server left behind (same pid, same argv).
    for pid, argv in kernels.items():
        with contextlib.suppress(OSError):
            if (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == argv[0]):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path):
    base = tmp_path_factory.mktemp("browser")
    # Serve a copy: the browser may save the notebook, and the checked-in file must not change.
    served = base / "served"
    (served / NOTEBOOK).parent.mkdir(parents=True)
    shutil.copy2(ROOT / NOTEBOOK, served / NOTEBOOK)
    start = time.monotonic()
    server = _start_lab(base, served)
    server.start_seconds = time.monotonic() - start
    server.base = base
    yield server
    _stop_lab(server)


# ---------------------------------------------------------------- page helpers

def _text(s):
    return " ".join(s.split())


def _html_text(fragment):
    return _text(html.unescape(re.sub(r"<[^>]+>", " ", fragment)))


def _expected_after_step(shown):
    """The Stepper's "next:" text one instruction after `shown`, from a fresh board run here."""
    from vmkit.lessons import machine
    from vmkit.ui.render import next_instruction_html

    board = machine.stepping_machine()
    try:
        def line():
            return _text(_html_text(next_instruction_html(board, board.cpu))
                         + (" (halted)" if board.cpu.halted else ""))
        for _ in range(500):
            if line() == shown:
                board.step()
                return line()
            if board.cpu.halted:
                break
            board.step()
        raise AssertionError(f"the page shows {shown!r}, which a fresh stepping machine never "
                             "shows within 500 steps")
    finally:
        board.close()


def _irq_rows(page):
    """{line: (handler A ran, handler B ran)} from the IrqPanel's table as rendered."""
    rows = page.locator(".widget-html", has_text="handler A ran").locator("tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.textContent.trim()))")
    return {int(r[0]): (int(r[2]), int(r[3])) for r in rows if len(r) == 4}


def _wait_until(page, what, condition, timeout):
    """Poll `condition` until truthy; else fail with `what` (a string, or a callable for the
    state at the time of failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {what() if callable(what) else what}")
        page.wait_for_timeout(100)


CELLS_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim());
  // Tracebacks render as stderr text, like warnings do: tell them apart by what stops running.
  const stderr = [...panel.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.textContent.trim().slice(-3000));
  const status = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .map(e => e.textContent.trim()).find(t => /\\|\\s*\\S+$/.test(t) && t.includes('|')) || '';
  return {prompts, stderr, status};
}"""


# ---------------------------------------------------------------- the test

def test_widgets_respond_in_jupyterlab(lab, chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright, expect, Error as PlaywrightError

    code_cells = sum(c["cell_type"] == "code"
                     for c in json.loads((lab.served / NOTEBOOK).read_text())["cells"])
    timings = {"server start": lab.start_seconds}
    shot = tmp_path / "failure.png"
    browser_env = dict(os.environ)
    browser_env.update({k: lab.env[k] for k in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                                                "XDG_DATA_HOME")})
    phase = "starting chromium"
    page = failure = None
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                     args=CHROMIUM_ARGS, env=browser_env, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT * 1000)
            expect.set_options(timeout=UI_TIMEOUT * 1000)

            def menu(top, item):
                page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{top}$")).click()
                page.locator(".lm-Menu-item:visible", has_text=re.compile(rf"^{re.escape(item)}")).click()

            def cells():
                return page.evaluate(CELLS_STATE_JS) or {"prompts": [], "stderr": [], "status": ""}

            phase = f"opening /lab/tree/{NOTEBOOK.as_posix()}?reset and waiting for its kernel to be idle"
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.as_posix()}?reset", timeout=PAGE_TIMEOUT * 1000)
            def loaded():
                s = cells()
                return len(s["prompts"]) == code_cells and s["status"].endswith("| Idle")
            _wait_until(page, lambda: f"expected {code_cells} code cells and the kernel status "
                        f"'... | Idle'; last seen {cells()}", loaded, PAGE_TIMEOUT)
            timings["page + kernel"] = time.monotonic() - t0

            # The stored prompts already read [1]..[9]: clear them so "finished" is unambiguous.
            phase = "Edit → Clear Outputs of All Cells"
            menu("Edit", "Clear Outputs of All Cells")
            _wait_until(page, lambda: f"prompts still numbered: {cells()['prompts']}",
                        lambda: not any(re.search(r"\d", p) for p in cells()["prompts"]), UI_TIMEOUT)

            phase = "Run → Run All Cells"
            t_run = time.monotonic()
            menu("Run", "Run All Cells")

            def numbered(s):
                return all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"])

            def finished():
                s = cells()
                if any("*" in p for p in s["prompts"]) or not s["status"].endswith("| Idle"):
                    return None
                # A cell that raises stops the run: the cells after it stay unnumbered.
                return s if numbered(s) or s["stderr"] else None
            state = _wait_until(page, lambda: f"the cells did not all finish; last seen {cells()}",
                                finished, RUN_ALL_TIMEOUT)
            if not numbered(state):
                raise AssertionError(f"a cell failed in the browser (prompts {state['prompts']}):\n"
                                     + "\n---\n".join(state["stderr"]))
            timings["run all"] = time.monotonic() - t_run

            phase = "the widgets to render after Run All"
            t_ui = time.monotonic()
            step = page.locator(".widget-button", has_text=re.compile(r"^\s*Step\s*$"))
            raise_irq = page.locator(".widget-button", has_text=re.compile(r"^\s*Raise IRQ\s*$"))
            next_line = page.locator(".widget-html", has_text=re.compile(r"^\s*next:"))
            for what, loc in (("Stepper's 'Step' button (.widget-button)", step),
                              ("Stepper's 'next:' line (.widget-html)", next_line),
                              ("IrqPanel's 'IRQ line' dropdown (.widget-dropdown)",
                               page.locator(".widget-dropdown", has_text="IRQ line")),
                              ("IrqPanel's A/B toggle buttons (.widget-toggle-buttons)",
                               page.locator(".widget-toggle-buttons", has_text="load IDT")),
                              ("IrqPanel's 'Raise IRQ' button (.widget-button)", raise_irq)):
                phase = f"finding the {what}"
                expect(loc, f"{what} not rendered").to_have_count(1)
                expect(loc, f"{what} not visible").to_be_visible()

            phase = "checking the kernel is this venv's python"
            kernels = lab.kernel_argv()
            assert kernels, "no ipykernel process under the server"
            assert all(k[0] == sys.executable for k in kernels), \
                f"kernel runs {[k[0] for k in kernels]}, expected {sys.executable}"

            # Keyboard: focus Step, press Enter, then Space; each must retire one instruction.
            for key in ("Enter", "Space"):
                phase = f"pressing {key} on the focused 'Step' button"
                before = _text(next_line.text_content())
                expected = _expected_after_step(before)
                assert expected != before, f"reference machine does not advance from {before!r}"
                step.scroll_into_view_if_needed()
                step.focus()
                assert step.evaluate("b => b === document.activeElement"), \
                    "the 'Step' button did not take the keyboard focus"
                page.keyboard.press(key)
                try:
                    _wait_until(page, "", lambda: _text(next_line.text_content()) == expected, UI_TIMEOUT)
                except AssertionError:
                    raise AssertionError(
                        f"the 'next:' line did not advance by one instruction within "
                        f"{UI_TIMEOUT} s: before {before!r}, expected {expected!r}, "
                        f"shown {_text(next_line.text_content())!r}") from None

            # Mouse: Raise IRQ adds one run to the handler of the IDT that IDTR names.
            phase = "clicking 'Raise IRQ'"
            line = int(page.locator(".widget-dropdown select").evaluate(
                "s => s.options[s.selectedIndex].textContent"))
            status = _text(page.locator(".widget-html", has_text="IDTR (read from the CPU)").text_content())
            m = re.search(r"→ IDT ([AB])$", status)
            assert m, f"IrqPanel status does not name IDT A or B: {status!r}"
            before = _irq_rows(page).get(line, (0, 0))
            expected = (before[0] + 1, before[1]) if m[1] == "A" else (before[0], before[1] + 1)
            raise_irq.scroll_into_view_if_needed()
            raise_irq.click()
            try:
                _wait_until(page, "", lambda: _irq_rows(page).get(line) == expected, UI_TIMEOUT)
            except AssertionError:
                raise AssertionError(
                    f"the IRQ table has no row 'IRQ {line} | handler A ran {expected[0]} | "
                    f"handler B ran {expected[1]}' within {UI_TIMEOUT} s (IDTR: {status!r}); "
                    f"rows before {before}, now {_irq_rows(page)}") from None
            timings["interactions"] = time.monotonic() - t_ui
        except (AssertionError, PlaywrightError) as e:
            if page is not None:
                with contextlib.suppress(PlaywrightError):
                    page.screenshot(path=str(shot))
            # Playwright's own messages end in a long "Call log:"; the first lines say it all.
            failure = str(e).split("\nCall log:")[0].strip() or type(e).__name__
        finally:
            browser.close()
    if failure:
        pytest.fail(f"browser check failed while {phase}:\n  {failure}\n"
                    f"  screenshot: {shot if shot.exists() else '(none taken)'}\n"
                    f"  server log: {lab.log}", pytrace=False)
    timings["browser total"] = time.monotonic() - t0
    print("\nbrowser test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
