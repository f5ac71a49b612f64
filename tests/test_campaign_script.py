"""The GPU-node campaign script, rehearsed on CPU: the same script with environment overrides
only (quick suite, smoke timing, gloo instead of NCCL, a small cap). Stages are independent, a
stage that times out loses no other stage's rows, the export and summary always happen (also
after SIGTERM), the wheels in .whl/ go to their own folder, and the script is shellcheck-clean."""

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


def hanging_on(folder: Path, arg: str) -> Path:
    """A Python for the script that hangs when called with `arg` (a stage that never ends on
    its own, whatever the machine's speed) and is the real one otherwise."""
    folder.mkdir()
    path = folder / "python"
    path.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "{arg}" ] && exec sleep 300; done\n'
                    f'exec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_cpu_rehearsal_every_stage_kept_and_exported(tmp_path):
    out = tmp_path / "out"
    # the gemm stage hangs, so its own 4 s timeout is what ends it (the quick suite's CPU gemm
    # cases can finish inside 4 s); a --budget far beyond each stage's limit, so no budget
    # ends a stage first
    env = rehearsal_env(out, CAMPAIGN_CAP_S="150", CAMPAIGN_GEMM_S="4",
                        CAMPAIGN_RUN_MARGIN_S="-100",
                        PYTHON=str(hanging_on(tmp_path / "bin", "gemm/*")),
                        CAMPAIGN_ATTENTION_S="20", CAMPAIGN_WHEELS=str(tiny_wheel(
                            tmp_path / "wheels")), CAMPAIGN_SITE=str(tmp_path / "site"))
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    wall = time.monotonic() - t0
    assert (tmp_path / "site" / "campaign_probe" / "__init__.py").exists()  # not in the image
    st = stages(out)
    # the cheap stages before attention, the one that time-boxes itself (findings of the review)
    assert list(st) == ["facts", "bandwidth", "gemm", "telemetry_overhead", "allreduce",
                        "decode", "attention"] or "cap" in st.values()
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
    assert "== sqlalchemy " in proc.stdout


@pytest.mark.slow
def test_sigterm_still_exports_what_finished(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=rehearsal_env(
        out, CAMPAIGN_CAP_S="200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            # the stage after bandwidth has started (its log is opened as it starts; the
            # export between stages comes before it)
            if (out / "stages.tsv").exists() and "bandwidth" in (out / "stages.tsv").read_text() \
                    and (out / "gemm.log").exists():
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


def test_the_verbs_start_without_psycopg_as_on_the_gpu_image(tmp_path):
    shim = tmp_path / "shim" / "psycopg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no psycopg on the GPU image')\n")
    proc = subprocess.run([sys.executable, "-m", "cli", "info", "--json"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{shim.parent}:{ROOT}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["device"]["kind"] in ("cpu", "cuda")


# ---- set-up, refused rows, time bounds ------------------------------------------------------
def shim(folder: Path, **modules: str) -> Path:
    """A folder of stand-in top-level modules (name -> source), first on PYTHONPATH."""
    for name, source in modules.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(source)
    return folder


def test_without_sqlalchemy_one_line_and_exit_2_before_any_stage(tmp_path):
    out = tmp_path / "out"
    no_sa = shim(tmp_path / "shim", sqlalchemy="raise ImportError('not on the GPU image')\n")
    env = rehearsal_env(out, PYTHONPATH=f"{no_sa}:{ROOT}")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot import sqlalchemy" in lines[0] and "no-wheels/" in lines[0]
    assert "Traceback" not in proc.stderr and not (out / "stages.tsv").exists()


@pytest.mark.parametrize("module,source,said", [
    ("typer", "raise ModuleNotFoundError(\"No module named 'typer'\", name='typer')\n",
     "cannot start colossus-bench: no module typer"),
    ("rich", "raise ImportError(\"cannot import name 'Console' from 'rich'\")\n",
     "cannot start colossus-bench: ImportError: cannot import name 'Console' from 'rich'"),
    ("pyarrow", "raise RuntimeError('module compiled against ABI version 0x1000009')\n",
     "cannot start colossus-bench: RuntimeError: module compiled against ABI version"),
])
def test_a_command_line_that_cannot_start_is_one_line_and_exit_2_before_any_stage(
        tmp_path, module, source, said):
    """The command line's other imports are checked as SQLAlchemy is: one line saying what
    failed (a missing module by name, anything else as it is), no stage run."""
    out = tmp_path / "out"
    broken = shim(tmp_path / "shim", **{module: source})
    env = rehearsal_env(out, PYTHONPATH=f"{broken}:{ROOT}")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], lines
    assert "Traceback" not in proc.stderr and not (out / "stages.tsv").exists()


def pure_sqlalchemy_wheel(folder: Path) -> Path:
    """The installed SQLAlchemy's Python files as a py3-none-any wheel (its compiled parts
    left out: SQLAlchemy then uses its pure-Python fallback, as from a zip on the GPU node)."""
    import sqlalchemy

    folder.mkdir()
    src = Path(sqlalchemy.__file__).parent
    path = folder / f"sqlalchemy-{sqlalchemy.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for f in src.rglob("*"):
            if f.is_file() and f.suffix not in (".so", ".pyc", ".pyx", ".pxd"):
                z.write(f, f"sqlalchemy/{f.relative_to(src)}")
    return folder


@pytest.mark.slow
def test_without_pip_the_pure_wheel_goes_on_pythonpath(tmp_path):
    from results.store import Store

    out = tmp_path / "out"
    out.mkdir()
    Store(f"sqlite:///{out / 'results.db'}").close()  # an empty table for the export to read
    no_pip = shim(tmp_path / "shim", pip="")  # `python -m pip` fails: no pip.__main__
    wheels = pure_sqlalchemy_wheel(tmp_path / "wheels")
    # a cap that leaves no stage any time: only the set-up, the export and the summary run
    env = rehearsal_env(out, PYTHONPATH=f"{no_pip}:{ROOT}", CAMPAIGN_WHEELS=str(wheels),
                        CAMPAIGN_CAP_S="20", CAMPAIGN_SITE=str(tmp_path / "site"))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert "no pip for" in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "site").exists()
    line = next(t for t in proc.stdout.splitlines() if t.startswith("== sqlalchemy "))
    assert f"{wheels}/sqlalchemy-" in line and ".whl/sqlalchemy/__init__.py" in line
    assert set(stages(out).values()) == {"cap"}
    assert (out / "results.jsonl").exists() and jsonl(out) == []  # exported through the zip
    assert proc.returncode == 0, proc.stderr


def refuse_triton_rows(db: Path) -> None:
    """A results table that takes the torch rows and refuses every triton row."""
    import sqlite3

    from results.store import Store

    Store(f"sqlite:///{db}").close()
    con = sqlite3.connect(db)
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON results WHEN NEW.backend = 'triton' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()


@pytest.mark.slow
def test_a_kill_keeps_exported_and_refused_rows_under_out(tmp_path):
    """SIGKILL (a run tool's limit) after the bandwidth stage: results.jsonl already holds its
    stored rows (exported after every stage), and the rows the database refused are under
    $OUT (XDG_DATA_HOME), not in a home folder that vanishes with the machine."""
    out = tmp_path / "out"
    out.mkdir()
    refuse_triton_rows(out / "results.db")
    env = rehearsal_env(out, CAMPAIGN_CAP_S="300", HOME=str(tmp_path / "home"))
    env.pop("XDG_DATA_HOME", None)
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.jsonl").exists() and jsonl(out):  # (written whole, renamed)
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "bandwidth" in stages(out)
    rows = jsonl(out)
    assert rows and {(r["workload"], r["backend"]) for r in rows} == {("membw", "torch")}
    kept = list((out / "colossus-bench").glob("unstored-*.jsonl"))
    assert len(kept) == 1
    refused = [json.loads(t) for t in kept[0].read_text().splitlines()]
    assert refused and {(r["workload"], r["backend"]) for r in refused} == {("membw", "triton")}
    assert not (tmp_path / "home" / ".local").exists()


def stage_limits() -> list[tuple[str, int]]:
    """(name, default limit) of the script's `stage` calls, in order."""
    return [(t.split()[1], int(t.split()[2])) for t in SCRIPT.read_text().splitlines()
            if t.startswith("stage ")]


def script_value(name: str) -> int:
    line = next(t for t in SCRIPT.read_text().splitlines() if t.startswith(f"{name}="))
    return int(line.split("=")[1].split()[0].split(":-")[-1].rstrip("}"))


def test_stage_order_and_limits_keep_the_cheap_stages_and_attention_a_share():
    from bench.campaign import EXTRA_STAGES_S

    limits = stage_limits()
    names = [n for n, _ in limits]
    assert names.index("telemetry_overhead") < names.index("attention")
    assert names.index("allreduce") < names.index("attention") and names[-1] == "attention"
    stages_s = script_value("CAP_S") - script_value("EXPORT_RESERVE_S")
    before = sum(s for n, s in limits if n != "attention")
    assert stages_s - before >= 60  # attention keeps a minute when all others use their limit
    for name in ("facts", "telemetry_overhead", "allreduce"):  # the estimate's own copy
        assert dict(limits)[name] == EXTRA_STAGES_S[name]
    assert EXTRA_STAGES_S["export"] == script_value("EXPORT_RESERVE_S")


def test_worst_case_wall_time_stays_under_a_600_s_run_limit():
    cap, reserve = script_value("CAP_S"), script_value("EXPORT_RESERVE_S")
    grace, summary = script_value("KILL_AFTER_S"), script_value("SUMMARY_S")
    text = SCRIPT.read_text()
    assert 'timeout --kill-after=2 "$EXPORT_RESERVE_S"' in text  # every export's bound
    assert 'timeout "$SUMMARY_S"' in text and 'kill-after="$KILL_AFTER_S"' in text
    assert "timeout 60" not in text
    worst = cap - reserve + grace + 2 * (reserve + 2) + summary
    assert worst == 524 and f"= {worst} s" in text  # the figure the script's header states
    assert worst <= 600 - 60  # a minute of room below the run tool's limit
