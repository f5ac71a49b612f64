"""The GPU-node campaign script, rehearsed on CPU: the same script with environment overrides
only (quick suite, smoke timing, gloo instead of NCCL, a small cap). Stages are independent, a
stage that times out loses no other stage's rows, the export and summary always happen (also
after SIGTERM), carried wheels go to their own folder, and the script is shellcheck-clean."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "device_campaign.sh"


def rehearsal_env(out: Path, **extra) -> dict:
    return {**os.environ, "OUT": str(out), "SUITE": "quick", "TIMING": "smoke",
            "ALLREDUCE_BACKEND": "gloo", "ALLREDUCE_MAX": "64K", "PYTHON": sys.executable,
            "CAMPAIGN_WHEELS": str(out.parent / "no-wheels"), **extra}


def stages(out: Path) -> dict[str, str]:
    rows = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()]
    return {name: rc for name, rc, _ in rows}


def jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def tiny_wheel(folder: Path) -> Path:
    """A real (minimal) wheel: pip installs it like SQLAlchemy's."""
    folder.mkdir()
    path = folder / "campaign_probe-0.1-py3-none-any.whl"
    dist = "campaign_probe-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("campaign_probe/__init__.py", "OK = True\n")
        z.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: campaign-probe\n"
                                       "Version: 0.1\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return folder


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_script_is_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_cpu_rehearsal_every_stage_kept_and_exported(tmp_path):
    out = tmp_path / "out"
    env = rehearsal_env(out, CAMPAIGN_CAP_S="150", CAMPAIGN_GEMM_S="4",
                        CAMPAIGN_ATTENTION_S="20", CAMPAIGN_WHEELS=str(tiny_wheel(
                            tmp_path / "wheels")), CAMPAIGN_SITE=str(tmp_path / "site"))
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    wall = time.monotonic() - t0
    assert (tmp_path / "site" / "campaign_probe" / "__init__.py").exists()  # not in the image
    st = stages(out)
    assert list(st) == ["facts", "bandwidth", "gemm", "attention", "decode",
                        "telemetry_overhead", "allreduce"] or "cap" in st.values()
    assert st["facts"] == "0" and st["bandwidth"] == "0"
    assert st["gemm"] == "124"  # killed by its own 4 s timeout ...
    rows = jsonl(out)
    workloads = {r["workload"] for r in rows}
    assert "membw" in workloads  # ... and the rows of the stage before it are all there
    assert all(r["status"] in ("ok", "skipped") for r in rows), [r["error"] for r in rows]
    if st.get("allreduce") == "0":
        assert "allreduce" in workloads
    assert proc.returncode == 1  # a stage timed out
    tail = proc.stdout.strip().splitlines()
    summary = proc.stdout[proc.stdout.rindex("== campaign summary"):]
    assert "gemm" in summary and "timed out" in summary and "rows:" in summary
    assert any(line.startswith("  membw") for line in tail[-8:])  # the summary comes last
    assert wall < 150 + 60  # the cap, plus the export and a stage's kill grace


@pytest.mark.slow
def test_sigterm_still_exports_what_finished(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=rehearsal_env(
        out, CAMPAIGN_CAP_S="200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "stages.tsv").exists() and "bandwidth" in (out / "stages.tsv").read_text():
                break
            time.sleep(0.2)
        time.sleep(1.0)  # inside the gemm stage now
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "130" in stages(out).values()
    assert any(r["workload"] == "membw" for r in jsonl(out))
    assert "== campaign summary" in stdout


@pytest.mark.xfail(strict=True, reason="results/cli.py imports results.upload (and psycopg) at "
                   "start, so every verb fails on the GPU image, which has no psycopg; fix: "
                   "import upload lazily in results/cli.py (not this part's file)")
def test_the_verbs_start_without_psycopg_as_on_the_gpu_image(tmp_path):
    shim = tmp_path / "shim" / "psycopg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no psycopg on the GPU image')\n")
    proc = subprocess.run([sys.executable, "-m", "cli", "info", "--json"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{shim.parent}:{ROOT}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["device"]["kind"] in ("cpu", "cuda")
