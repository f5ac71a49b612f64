"""The set-up script (dev.sh) and CI's entry point (.ci/run): lint, usage, idempotence, exit codes.

The full set-up from nothing is what CI itself runs on a clean clone (`.ci/run`); here the
script is checked without installing anything: a second call over a complete environment
skips every step.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("dev.sh", ".ci/run")


def sh(*args, env=None, cwd=REPO, timeout=120):
    return subprocess.run(list(args), cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must lint the shell scripts: no shellcheck")
        pytest.skip("no shellcheck (apt-get install shellcheck)")
    res = sh("shellcheck", *SCRIPTS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_usage():
    res = sh("./dev.sh", "help")
    assert res.returncode == 0 and "./dev.sh run" in res.stdout and "./dev.sh test" in res.stdout
    res = sh("./dev.sh", "bogus")
    assert res.returncode == 2 and "unknown command 'bogus'" in res.stderr


def test_a_second_call_skips_what_exists(tmp_path):
    """An environment with torch, Triton and the project already there: nothing is installed,
    no package manager is asked (DEV_NO_APT), every step says it is done."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    checksum = sh("sh", "-c", "cksum <pyproject.toml").stdout.strip()
    (venv / ".colossus-bench-test").write_text(f"{REPO} {checksum}\n")
    import triton

    res = sh("./dev.sh", "setup-test", env={"VENV": str(venv), "DEV_NO_APT": "1"})
    assert res.returncode == 0, res.stderr
    assert f"{venv} exists" in res.stderr and "the project (test) is installed" in res.stderr
    if triton.__version__ == "3.8.0":
        assert "present: kept" in res.stderr
    assert "installing" not in res.stderr.replace("not installed", "")
    for server in ("PostgreSQL", "Chromium", "Slurm", "shellcheck"):
        assert server in res.stderr  # present, or skipped with the reason


@pytest.mark.parametrize(("inner", "outer"), [(0, 0), (1, 1), (2, 2), (5, 1)])
def test_ci_fails_when_the_tests_fail_or_none_ran(tmp_path, inner, outer):
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    fake = tmp_path / "dev.sh"
    fake.write_text(f'#!/bin/sh\n[ "$1" = test ] || exit 99\nexit {inner}\n')
    fake.chmod(0o755)
    res = sh(str(tmp_path / ".ci" / "run"), cwd=tmp_path)
    assert res.returncode == outer, res.stderr
    if inner == 5:
        assert "no tests" in res.stderr
