"""The project speaks only of itself: no text points outside it or at where it was developed.

Scans every tracked text file (this one excepted) and the report's output for references to
documents that are not part of the project (a design folder, its anchor and environment notes)
and to the circumstances of development. Published figures are cited by their public source
instead (docs/SOURCES.md).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Spelled in pieces so that the patterns themselves are no occurrence.
OUTSIDE = [
    ("a design-folder path", r"\bshared" + r"/"),
    ("the anchors note", r"\bANCHORS" + r"\.md\b"),
    ("the environment note", r"\bENVIRONMENT" + r"\.md\b"),
    ("the design folder", r"\bshared" + r"\s+design\b"),
    ("the workplace", r"\bthis\s+work" + r"place\b"),
    ("a lent machine", r"\b" + "le" + r"nt\b"),
    ("a working session", r"\bsess" + r"ions?\b"),
    ("the machines it was developed on", r"\bmachines\s+" + r"here\b"),
]
# "session" has technical meanings that are the project's own: pytest's session scope and
# fixtures, and POSIX process sessions (setsid). These uses are taken out before the scan.
TECHNICAL = [r'scope="session"', r"\bsession of its own\b", r"\bown session\b",
             r"\b(per|for the) session\b", r"\bsession server\b"]



def findings(text: str, where: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        cleaned = line
        for allowed in TECHNICAL:
            cleaned = re.sub(allowed, "", cleaned, flags=re.IGNORECASE)
        for what, pattern in OUTSIDE:
            if re.search(pattern, cleaned, re.IGNORECASE):
                out.append(f"{where}:{n}: {what}: {line.strip()[:120]}")
    return out


def tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                               check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    me = Path(__file__).resolve()
    files = []
    for name in filter(None, names):
        path = REPO / name
        if path.resolve() == me or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:  # text, not a binary
            files.append(path)
    return files


def scan_tracked() -> list[str]:
    out = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        out += findings(text, str(path.relative_to(REPO)))
    return out


def test_the_scan_finds_what_it_looks_for():
    assert findings("see " + "ANCHORS" + ".md", "x")
    assert findings("the GPU le" + "nt to us", "x")
    assert findings("this sess" + "ion ends", "x")
    assert not findings('@pytest.fixture(scope="session")', "x")
    assert not findings("each worker leads its own session", "x")
    assert not findings("silent talent", "x")


def test_no_tracked_file_points_outside_the_project():
    found = scan_tracked()
    assert not found, "\n".join(found)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "XDG_DATA_HOME": str(out / "xdg")}  # no table: the assumptions' text
    env.pop("COLOSSUS_BENCH_DB", None)
    proc = subprocess.run([sys.executable, "-m", "cli", "report", "--out", str(out), "--config",
                           "quick"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_the_report_points_nowhere_outside(report_dir):
    found = []
    for name in ("report.html", "report.md"):
        found += findings((report_dir / name).read_text(encoding="utf-8"), name)
    assert not found, "\n".join(found[:40])
