"""Binder / JupyterHub (repo2docker) build the environment from apt.txt,
requirements.txt and runtime.txt; ./kit builds it from pyproject.toml and its
own apt-get calls. These fail when the two drift apart."""
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lines(name):
    return [line.partition("#")[0].strip() for line in (ROOT / name).read_text().splitlines()
            if line.partition("#")[0].strip()]


def kit_branch(name):
    text = (ROOT / "kit").read_text()
    return re.search(rf"^{name}\)\n(.*?);;", text, re.S | re.M).group(1)


def test_requirements_install_the_package_with_the_extras_kit_lab_installs():
    extra = re.search(r"setup (\S+)", kit_branch("lab")).group(1)
    assert lines("requirements.txt") == [f"-e .[{extra}]"]      # pyproject.toml is the one list
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in extras and any(d.startswith("jupyterlab") for d in extras[extra])


def test_apt_txt_lists_what_kit_lab_installs_with_apt_get():
    kit = (ROOT / "kit").read_text()
    setup = re.search(r"^setup\(\) \{.*?^\}", kit, re.S | re.M).group(0)
    assert set(lines("apt.txt")) == set(re.findall(r"apt_install \S+ (\S+)", setup)) == {"graphviz", "gcc"}


def test_runtime_python_meets_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low = tuple(int(x) for x in re.match(r">=\s*([\d.]+)", project["requires-python"]).group(1).split("."))
    runtime = tuple(int(x) for x in lines("runtime.txt")[0].removeprefix("python-").split("."))
    assert runtime >= low


def test_readme_has_the_binder_launch_link_pattern():
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/notebooks/00_the_machine.ipynb" in readme
