"""The Slurm scripts against a real single-node Slurm (tests/slurm.py): allreduce.sbatch runs
its ranks with srun on gloo and stores their rows; fleet.sbatch runs the suite on the CPU,
uploads to a real PostgreSQL and counts nodes by the documented exit codes, naming the node
whose part failed. And every script is shellcheck-clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results.store import Store
from tests.pg import free_port
from tests.slurm import slurm  # noqa: F401  (the fixture)
from tests.test_collectives_nccl import parse_nccl_tests

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "bench" / "slurm").glob("*.s*"))

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    """The job's environment (sbatch exports ours): this checkout, a colossus-bench command
    running it, no rank variables of our own."""
    wrapper = tmp_path / "colossus-bench"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "COLOSSUS_")) and k not in (
               "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), COLOSSUS_BENCH=str(wrapper),
               XDG_DATA_HOME=str(tmp_path / "xdg"), **extra)
    return env


def _output(tmp_path: Path, prefix: str) -> str:
    files = sorted(tmp_path.glob(f"{prefix}-*.out"))
    assert len(files) == 1, files
    return files[0].read_text()


def test_allreduce_sbatch_runs_srun_ranks_on_gloo(slurm, tmp_path):  # noqa: F811
    db = tmp_path / "r.db"
    args = ["--backend", "gloo", "-b", "1K", "-e", "4K", "-f", "4", "-n", "2", "-w", "1",
            "--collective", "all_reduce,all_gather", "--no-telemetry", "--db", str(db)]
    sb = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", f"--chdir={tmp_path}",
          f"--output={tmp_path}/ok-%j.out"]
    r = slurm.sbatch(REPO / "bench/slurm/allreduce.sbatch", *args, sbatch_args=sb,
                     env=_env(tmp_path))
    out = _output(tmp_path, "ok")
    assert r.returncode == 0, r.stderr + out
    rows, _, oobs = parse_nccl_tests(out)
    assert len(rows) == 4 and oobs == [0, 0]
    assert "#  Rank  1 Group  0" in out  # srun started both ranks; rank 0 gathered them
    with Store(f"sqlite:///{db}") as store:
        stored = [x.to_dict() for x in store.records()]
    assert len(stored) == 8
    assert all(x["world_size"] == 2 and x["correct"] is True for x in stored)
    # a planted wrong rank: the job fails (exit 1), the rows say why
    bad = slurm.sbatch(REPO / "bench/slurm/allreduce.sbatch", *args[:-1], str(tmp_path / "w.db"),
                       sbatch_args=[*sb[:-1], f"--output={tmp_path}/bad-%j.out"],
                       env=_env(tmp_path, COLOSSUS_BENCH_FAULT="wrong:1:after=1K"))
    assert bad.returncode == 1, bad.stderr + _output(tmp_path, "bad")
    assert "data check failed (#wrong > 0)" in _output(tmp_path, "bad")


def _fleet(slurm, tmp_path, name, **settings):  # noqa: F811
    base = dict(COLOSSUS_FLEET_CPU="1", COLOSSUS_FLEET_SUITE="quick",
                COLOSSUS_FLEET_RUN_ARGS="--filter membw*:torch --timing smoke --no-telemetry",
                COLOSSUS_FLEET_LOCAL_DIR=str(tmp_path / name / "local"),
                COLOSSUS_FLEET_TAG=name, COLOSSUS_BENCH_UPLOAD_TRIES="1",
                COLOSSUS_BENCH_UPLOAD_BACKOFF="0")
    env = _env(tmp_path, **{**base, **settings})
    (tmp_path / name).mkdir()
    r = slurm.sbatch(REPO / "bench/slurm/fleet.sbatch", env=env,
                     sbatch_args=["--nodes=1", "--gpus-per-node=0",
                                  f"--chdir={tmp_path / name}",
                                  f"--output={tmp_path / name}/fleet-%j.out"])
    return r, _output(tmp_path / name, "fleet")


@pytest.mark.postgres
def test_fleet_sbatch_on_cpu_uploads_and_names_failed_nodes(slurm, tmp_path, pg_url):  # noqa: F811
    r, out = _fleet(slurm, tmp_path, "good", COLOSSUS_BENCH_UPLOAD_URL=pg_url)
    assert r.returncode == 0, r.stderr + out
    assert ": 1 of 1 nodes ok" in out
    with Store(pg_url) as store:
        rows = [x.to_dict() for x in store.records()]
    assert len(rows) == 2 and {x["host"] for x in rows} == {slurm.node}
    assert {x["params"]["op"] for x in rows} == {"copy", "triad"}

    # bad input on the node (a filter matching nothing): the run exits 2, and so does the job
    r, out = _fleet(slurm, tmp_path, "badinput", COLOSSUS_BENCH_UPLOAD_URL=pg_url,
                    COLOSSUS_FLEET_RUN_ARGS="--filter no-such-case --timing smoke")
    assert r.returncode == 2, r.stderr + out
    assert ": 0 of 1 nodes ok" in out
    assert f"{slurm.node}: FAILED: run on CPU exited 2" in out and "[exit 2]" in out

    # the upload fails (no server there): exit 1, the node named, its results kept locally
    down = f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    r, out = _fleet(slurm, tmp_path, "down", COLOSSUS_BENCH_UPLOAD_URL=down)
    assert r.returncode == 1, r.stderr + out
    assert f"{slurm.node}: FAILED: upload of CPU" in out and "[exit 1]" in out
    assert "local results kept in" in out and ":pw@" not in out  # the password hidden
    assert Store(str(tmp_path / "down" / "local" / "down-cpu.db")).count() == 2
    with Store(pg_url) as store:
        assert store.count() == 2  # nothing more arrived


def test_fleet_scripts_exit_2_on_bad_input(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLOSSUS_")}
    for cmd in (["bash", str(REPO / "bench/slurm/fleet.sbatch")],
                ["bash", str(REPO / "bench/slurm/fleet-ssh.sh"), str(REPO / "README.md")],
                ["bash", str(REPO / "bench/slurm/fleet-ssh.sh")],
                ["bash", str(REPO / "bench/slurm/fleet-ssh.sh"), str(tmp_path / "no-hosts")]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script):
    r = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stdout
