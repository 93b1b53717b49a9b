"""One home per name: the save area's layout and counters live in kernel/save_area.py, the switch's
x86 in kernel/switch_x86.py, and every module takes them from there. switch.py imports only what it
uses, so a reader (and pyflakes) finds each name where it is defined, not also as `switch.X`."""
import ast
import io
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL = ROOT / "vmkit" / "kernel"
HOMES = ("save_area", "switch_x86")


def _defined(path):
    """The names a module defines at its top level (not those it imports)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


HOMED = {name: home for home in HOMES for name in _defined(KERNEL / f"{home}.py")}


def _switch_aliases(tree, path):
    """The names the kernel's switch module is bound to in a file."""
    in_kernel = path.parent == KERNEL
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module == "vmkit.kernel" or
                                                  (in_kernel and node.level == 1 and node.module is None)):
            aliases.update(a.asname or a.name for a in node.names if a.name == "switch")
    return aliases


def _misplaced(path):
    """Where a file takes a save_area or switch_x86 name through switch: `switch.X` or
    `from ...switch import X`."""
    tree = ast.parse(path.read_text())
    aliases, found = _switch_aliases(tree, path), []
    in_kernel = path.parent == KERNEL
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr in HOMED):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: switch.{node.attr} "
                         f"(lives in {HOMED[node.attr]})")
        elif isinstance(node, ast.ImportFrom) and (node.module == "vmkit.kernel.switch" or
                                                    (in_kernel and node.level == 1 and node.module == "switch")):
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from switch import {a.name} "
                      f"(lives in {HOMED[a.name]})" for a in node.names if a.name in HOMED]
    return found


def test_every_importer_takes_the_names_from_their_home():
    assert len(HOMED) > 20 and {"read_area", "ITEMS", "LOAD", "SAVED"} <= set(HOMED)   # (the scan sees them)
    files = [p for d in ("vmkit", "tests", "solutions", "exercises") for p in sorted((ROOT / d).rglob("*.py"))]
    assert [line for p in files for line in _misplaced(p)] == []


def test_switch_imports_only_what_it_uses():
    pyflakes = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter
    out = io.StringIO()
    path = KERNEL / "switch.py"
    pyflakes.check(path.read_text(), str(path), Reporter(out, out))
    assert out.getvalue() == ""
