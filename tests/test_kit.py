"""`./kit`'s install stamps and `./kit lab`'s command line, with the kit run against stand-ins.

A scratch project holds a copy of `kit` and `pyproject.toml` and a `.venv` whose `python` and
`jupyter` are shell scripts that log their arguments; `dot` and `chromium` stand-ins on PATH keep
apt-get out of it. What is asserted is what the kit asked pip and Jupyter to do."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOGGER = '#!/bin/sh\necho "$(basename "$0") $*${{JUPYTER_PORT:+ (JUPYTER_PORT=$JUPYTER_PORT)}}" >> "{log}"\n'


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "proj"
    (proj / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    shutil.copy(ROOT / "kit", proj / "kit")
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    log = tmp_path / "calls.log"
    log.write_text("")
    for name, where in (("python", proj / ".venv" / "bin"), ("jupyter", proj / ".venv" / "bin"),
                        ("dot", tmp_path / "bin"), ("chromium", tmp_path / "bin")):
        (where / name).write_text(LOGGER.format(log=log))
        (where / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_PORT"}
    env["PATH"] = f"{tmp_path / 'bin'}:{os.environ['PATH']}"

    def kit(*args):
        done = subprocess.run(["bash", str(proj / "kit"), *args], cwd=proj, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        calls = log.read_text().splitlines()
        log.write_text("")
        return done.stdout, calls
    kit.proj = proj
    return kit


def installs(calls):
    return [c for c in calls if "pip install" in c and "--upgrade pip" not in c]


def test_grade_after_test_installs_nothing(project):
    _, calls = project("test")
    assert installs(calls) == ["python -m pip install -q -e .[lab,test,browser]"]
    _, calls = project("grade")
    assert installs(calls) == []
    assert calls == ["python -m vmkit.grading"]      # (its own default: exercises/)
    _, calls = project("lab")
    assert installs(calls) == []


def test_each_extra_is_installed_once_whatever_the_order(project):
    assert installs(project("grade")[1]) == ["python -m pip install -q -e ."]
    assert installs(project("exercises")[1]) == []
    assert installs(project("lab")[1]) == ["python -m pip install -q -e .[lab]"]
    assert installs(project("notebooks")[1]) == []
    assert installs(project("test")[1]) == ["python -m pip install -q -e .[lab,test,browser]"]
    assert installs(project("bench")[1]) == []


def test_an_edited_pyproject_installs_again(project):
    project("test")
    with open(project.proj / "pyproject.toml", "a") as f:
        f.write("\n# edited\n")
    assert installs(project("grade")[1]) == ["python -m pip install -q -e ."]
    # The old file's stamps are gone: test's extras are installed again too.
    assert installs(project("test")[1]) == ["python -m pip install -q -e .[lab,test,browser]"]


def test_lab_says_port_address_and_how_to_stop_and_serves_the_whole_project(project):
    out, calls = project("lab")
    assert "http://localhost:8888" in out and "Ctrl-C twice" in out and "token=" in out
    (jupyter,) = [c for c in calls if c.startswith("jupyter ")]
    assert jupyter.endswith("(JUPYTER_PORT=8888)")
    assert f"--ServerApp.root_dir={project.proj}" in jupyter
    assert "--LabApp.default_url=/lab/tree/notebooks/00_the_machine.ipynb" in jupyter
    assert "--port" not in jupyter      # Jupyter refuses a second --port: the learner's must pass
    out, calls = project("lab", "--port", "9000")
    assert calls[-1].startswith("jupyter lab") and " --port 9000 " in calls[-1]
