"""The claims travel with the repository: docs/claims.md holds all 45, each with an anchor, and
every link to it from a notebook, the README or docs/ lands on a claim that exists.

A clone has no project folder next to it, so nothing tracked may send the reader outside the
repository for them."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "docs" / "claims.md"
N_CLAIMS = 45
ANCHOR = re.compile(r'<a id="(claim-\d+)"></a>')
# A Markdown link to claims.md, with an optional #fragment.
LINK = re.compile(r"\]\(([^)#\s]*claims\.md)(?:#([^)\s]*))?\)")
OUTSIDE = "../" + "shared"          # spelled in two parts so this file does not name it


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / p for p in out.stdout.decode().split("\0") if p]


def text_of(path):
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None


def markdown_of(path):
    """What a reader sees as Markdown: a notebook's markdown cells, or the file itself."""
    text = text_of(path)
    if text is None:
        return ""
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return text


def test_claims_file_holds_every_claim_once_in_order_each_behind_its_anchor():
    text = CLAIMS.read_text(encoding="utf-8")
    found = re.findall(r'<a id="claim-(\d+)"></a>(\d+)\. ', text)
    assert [int(a) for a, _ in found] == list(range(1, N_CLAIMS + 1))
    assert all(a == n for a, n in found), "an anchor sits in front of another claim's number"
    assert len(ANCHOR.findall(text)) == N_CLAIMS
    # The patent's own wording, first and last claim.
    assert "a first operating system (COS) initially installed to run on the hardware processor" in text
    assert text.rstrip().endswith("the kernel means thereby being provided for switching worlds.")


def test_no_tracked_file_points_outside_the_repository():
    offenders = [str(p.relative_to(ROOT)) for p in tracked_files()
                 if (t := text_of(p)) is not None and OUTSIDE in t]
    assert offenders == []


def test_every_link_to_the_claims_lands_on_a_claim():
    anchors = set(ANCHOR.findall(CLAIMS.read_text(encoding="utf-8")))
    links, broken = 0, []
    for path in tracked_files():
        if path.suffix not in (".md", ".ipynb"):
            continue
        for target, fragment in LINK.findall(markdown_of(path)):
            links += 1
            where = f"{path.relative_to(ROOT)} -> {target}#{fragment}"
            if (path.parent / target).resolve() != CLAIMS:
                broken.append(where + " (not docs/claims.md)")
            elif fragment and fragment not in anchors:
                broken.append(where + " (no such anchor)")
    assert broken == []
    assert links > 50


def test_every_notebook_and_the_readme_link_to_the_claims():
    readers = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")) + [ROOT / "README.md"]
    missing = [p.name for p in readers if not LINK.search(markdown_of(p))]
    assert missing == []
