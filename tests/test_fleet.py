"""`colossus-bench fleet`: each device against the median of its GPU model, case by case."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from results.cli import _t
from results.fleet import fleet, fleet_report
from results.schema import RecordError, Result
from results.store import Store
from tests.pg import free_port

runner = CliRunner()

H100 = {"name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM", "kind": "cuda"}
H200 = {"name": "NVIDIA H200", "model": "H200-SXM", "kind": "cuda"}
HEALTHY = {"source": "nvml", "sm_clock_mhz_mean": 1980.0, "sm_clock_mhz_min": 1950.0,
           "power_w_mean": 690.0, "temp_c_max": 70.0, "throttle_reasons": []}
THROTTLED = {"source": "nvml", "sm_clock_mhz_mean": 1410.0, "sm_clock_mhz_min": 1200.0,
             "power_w_mean": 480.0, "temp_c_max": 89.0,
             "throttle_reasons": ["gpu_idle", "hw_thermal_slowdown"]}
CASES = [{"m": 8192, "n": 8192, "k": 8192, "layout": "nt"},
         {"m": 4096, "n": 4096, "k": 4096, "layout": "nt"}]


def rec(uuid, median, *, model=H100, run="r1", case=0, host=None,
        created="2026-01-01T00:00:00+00:00", telemetry=HEALTHY, **kw):
    base = dict(run_id=f"{run}-{uuid}", workload="gemm", backend="triton", dtype="bf16",
                params=CASES[case], host=host or f"host-{uuid}",
                device={**model, "uuid": uuid} if uuid else dict(model), median_s=median,
                correct=True, status="ok", telemetry=telemetry, created_at=created)
    base.update(kw)
    return Result(**base)


def fleet_rows():
    """Four H100s (one slow and throttled) and three H200s (faster, all healthy), two cases."""
    rows = []
    for case in (0, 1):
        rows += [rec(f"GPU-{i}", 1.00e-3 * (1 + 0.01 * i), case=case) for i in range(3)]
        rows.append(rec("GPU-slow", 1.25e-3, case=case, telemetry=THROTTLED))
        rows += [rec(f"GPU-h200-{i}", 0.80e-3, model=H200, case=case) for i in range(3)]
    return rows


@pytest.fixture
def fleet_db(db_url):
    with Store(db_url) as store:
        store.insert(fleet_rows())
        # rows that must not count: a failed run, a wrong result, a skipped case
        store.insert([rec("GPU-0", 9e-3, run="bad", status="failed", correct=None),
                      rec("GPU-1", None, run="skip", status="skipped", correct=None),
                      rec("GPU-2", 9e-3, run="wrong", status="failed", correct=False)])
    return db_url


def test_slow_device_is_flagged_against_its_own_model_with_the_telemetry(fleet_db):
    with Store(fleet_db) as store:
        report = fleet(store, 0.92)
    flagged = report.flagged
    assert {e.device for e in flagged} == {"GPU-slow"} and len(flagged) == 2
    e = flagged[0]
    assert e.fleet_median_s == pytest.approx(1.015e-3)  # median of 1.00, 1.01, 1.02, 1.25 ms
    assert e.ratio == pytest.approx(1.015 / 1.25)  # fleet time / device time
    assert e.fleet_devices == 4 and e.model == "H100-SXM"
    why = e.explain()
    assert "SM clock 1410 MHz" in why and "hw_thermal_slowdown" in why and "gpu_idle" not in why
    assert "hot: 89 C" in why and "power 480 W" in why
    # H200s are compared with H200s only: faster than the H100s, and none flagged
    h200 = [x for x in report.entries if x.model == "H200-SXM"]
    assert len(h200) == 6 and all(x.ratio == 1.0 and not x.flagged for x in h200)
    [slow] = [d for d in report.devices() if d.device == "GPU-slow"]
    assert slow.flagged == 2 and slow.cases == 2
    assert report.devices()[0].device == "GPU-slow"  # slowest first


def test_only_the_latest_run_counts_unless_all_runs_are_asked_for():
    old = [rec("GPU-3", 1.5e-3, run="old", created="2026-01-01T00:00:00+00:00",
               telemetry=THROTTLED)]
    new = [rec("GPU-3", 1.0e-3, run="new", created="2026-02-01T00:00:00+00:00")]
    others = [rec(f"GPU-{i}", 1.0e-3) for i in range(3)]
    rows = [r.to_dict() for r in old + new + others]
    latest = fleet_report(rows, 0.92)
    assert latest.flagged == []  # repaired: its latest run is as fast as the fleet
    every = fleet_report(rows, 0.92, latest_only=False)
    [e] = every.flagged
    assert e.device == "GPU-3" and e.runs == 2 and e.median_s == pytest.approx(1.25e-3)


def test_devices_without_uuid_are_told_apart_by_host():
    rows = [rec(None, 1e-3, host=f"cpu-node{i}", model={"name": "AMD EPYC"}).to_dict()
            for i in range(3)]
    rows.append(rec(None, 2e-3, host="cpu-node9", model={"name": "AMD EPYC"}).to_dict())
    [e] = fleet_report(rows).flagged
    assert e.device == "cpu-node9" and e.model == "AMD EPYC"
    assert e.explain() == "no telemetry explains it"  # same clocks, power, temperature


def test_cycles_are_runs_of_one_case_not_cases():
    """`allreduce -N 0` rows carry params["cycle"]: 2 sizes x 40 cycles are 2 cases, each device's
    time the median over its cycles."""
    rows = [Result(run_id=f"a-{g}", workload="allreduce", backend="nccl", dtype="bf16",
                   params={"op": "all_reduce", "bytes": size, "nranks": 8, "cycle": c},
                   host=f"node{g}", device={**H100, "uuid": f"GPU-{g}"}, world_size=8,
                   median_s=1e-3 * (2 if g == 3 and c % 2 else 1), busbw_gbps=100.0,
                   correct=True).to_dict()
            for g in range(4) for size in (1 << 20, 1 << 24) for c in range(40)]
    report = fleet_report(rows)
    doc = report.to_dict()
    assert doc["cases"] == 2 and len(report.entries) == 8
    assert all("cycle" not in e.case and e.runs == 40 for e in report.entries)
    assert {d["cases"] for d in doc["devices"]} == {2}
    slow = [e for e in report.entries if e.device == "GPU-3"]
    assert all(e.median_s == pytest.approx(1.5e-3) for e in slow)  # median over its cycles


def test_a_host_without_uuids_holds_one_device_per_model():
    """CPU rows and an unknown GPU's rows (no NVML uuid) on one host: two devices, each with
    its own model, never the GPU's model on the CPU's cases."""
    cpu = {"name": "AMD EPYC", "kind": "cpu"}
    rows = [rec(None, 1e-3, host="box", model=cpu).to_dict(),
            rec(None, 2e-3, host="box", model={"name": "NVIDIA B300", "model": "B300-SXM"},
                case=1).to_dict()]
    devices = fleet_report(rows).devices()
    assert sorted((d.device, d.model, d.cases) for d in devices) == [
        ("box", "AMD EPYC", 1), ("box", "B300-SXM", 1)]


@pytest.mark.parametrize("bad", [0, -1, "x", True, float("nan")])
def test_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        fleet_report([], bad)


def test_cli_table_and_json(fleet_db):
    res = runner.invoke(app, ["fleet", "--db", fleet_db])
    assert res.exit_code == 0, res.output
    assert "GPU-slow" in res.output and "hw_thermal_slowdown" in res.output
    assert "1 of 7 devices below 0.92" in res.output
    res = runner.invoke(app, ["fleet", "--db", fleet_db, "--top", "2"])
    assert "5 more devices" in res.output and "GPU-h200-2" not in res.output
    res = runner.invoke(app, ["fleet", "--db", fleet_db, "--json", "--threshold", "0.5"])
    doc = json.loads(res.output)
    assert doc["threshold"] == 0.5 and doc["flagged"] == [] and doc["runs"] == "latest"
    assert len(doc["devices"]) == 7 and doc["cases"] == 4
    res = runner.invoke(app, ["fleet", "--db", fleet_db, "--threshold", "0"])
    assert res.exit_code == 2 and "threshold" in res.output
    res = runner.invoke(app, ["fleet", "--db", fleet_db, "--top", "-3"])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "--top" in lines[0]


def test_cli_on_an_empty_table(db_url):
    Store(db_url).close()  # an empty table (a missing database is refused: test_bad_inputs.py)
    res = runner.invoke(app, ["fleet", "--db", db_url])
    assert res.exit_code == 0 and "nothing to compare" in res.output


def _raw_insert(url, records):
    """Store rows below the door (insert_rows), as older versions of colossus-bench did."""
    from results.tables import record_row as _row

    with Store(url) as store:
        store.insert_rows([_row(r) for r in records])


def test_a_fake_date_no_longer_hides_a_gpu_at_half_speed(db_url):
    """A stale fast row with created_at "not-a-date" sorted after every real date, so it stayed
    the device's "latest" run and hid its new half-speed runs; the door refuses it, and fleet
    skips such a row already stored (counted), so the slow GPU is flagged."""
    with Store(db_url) as store:
        store.insert([rec(f"GPU-{i}", 1.0e-3) for i in range(3)])
        store.insert([rec("GPU-3", 2.0e-3, run="new", created="2026-03-01T00:00:00+00:00")])
        with pytest.raises(RecordError, match="created_at"):
            store.insert([rec("GPU-3", 1.0e-3, run="stale", created="not-a-date")])
    _raw_insert(db_url, [rec("GPU-3", 1.0e-3, run="stale", created="not-a-date")])
    with Store(db_url) as store:
        report = fleet(store)
    assert [e.device for e in report.flagged] == ["GPU-3"] and report.skipped == 1
    res = runner.invoke(app, ["fleet", "--db", db_url])
    assert res.exit_code == 0 and "1 unusable row skipped" in res.stderr


def test_fleet_survives_any_stored_row(db_url):
    """Names with rich markup are shown as they are; a uuid that is a list, a negative time, an
    absurd throughput or a negative world size are skipped and counted, not a crash."""
    good = [rec(f"GPU-{i}", 1.0e-3, host=f"node[/bold]0{i}") for i in range(3)]
    good.append(rec("GPU-[red]x", 2.0e-3, host="node[/bold]09"))
    with Store(db_url) as store:
        store.insert(good)
    bad = [rec("GPU-7", 1e-3, device={**H100, "uuid": ["GPU-7"]}),
           rec("GPU-8", -1e-3), rec("GPU-9", 1e-3, tflops=1e9), rec("GPU-6", 1e-3, world_size=-4)]
    _raw_insert(db_url, bad)
    res = runner.invoke(app, ["fleet", "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "node[/bold]09" in res.stdout and "GPU-[red]x" in res.stdout
    assert "4 unusable rows skipped" in res.stderr
    res = runner.invoke(app, ["fleet", "--db", db_url, "--json"])
    doc = json.loads(res.stdout)
    assert doc["skipped_rows"] == 4 and doc["flagged"][0]["host"] == "node[/bold]09"


@pytest.mark.postgres
def test_fleet_on_postgresql(pg_url):
    with Store(pg_url) as store:
        store.insert(fleet_rows())
        report = fleet(store)
    assert {e.device for e in report.flagged} == {"GPU-slow"}
    res = runner.invoke(app, ["fleet", "--db", pg_url, "--json"])
    assert json.loads(res.output)["flagged"][0]["device"] == "GPU-slow"


# Fleet runs: bench/slurm/fleet-ssh.sh and fleet.sbatch with stand-ins for ssh, srun, scontrol,
# nvidia-smi and `colossus-bench run` (two fake GPUs per host, three rows each); the uploads
# are the real `colossus-bench upload` into a real PostgreSQL database.
REPO = Path(__file__).resolve().parents[1]

FAKES = {
    "nvidia-smi": "#!/bin/bash\nprintf '0\\n1\\n'\n",
    "ssh": """#!/bin/bash
while [ "${1:-}" = -o ]; do shift 2; done
host=$1; shift
if [ "$host" = unreachable ]; then echo "ssh: connect to host $host: No route" >&2; exit 255; fi
export FAKE_HOST=$host COLOSSUS_FLEET_LOCAL_DIR=$FAKE_ROOT/$host
exec "$@"
""",
    "srun": """#!/bin/bash
while [[ "${1:-}" == --* ]]; do shift; done
for n in $FAKE_NODES; do
  [ "$n" = crashed ] && continue  # its task never reports
  SLURMD_NODENAME=$n FAKE_HOST=$n COLOSSUS_FLEET_LOCAL_DIR=$FAKE_ROOT/$n "$@" \\
    > "$COLOSSUS_FLEET_STATUS_DIR/$n.log" 2>&1 &
done
wait
""",
    "scontrol": "#!/bin/bash\nfor n in $FAKE_NODES; do echo $n; done\n",
    "fake-colossus-bench": """#!/bin/bash
verb=$1; shift
if [ "$verb" = run ]; then
  exec "$PYTHON" -c '
import os, sys
from results.schema import RecordError, Result
from results.store import Store
h, g = os.environ["FAKE_HOST"], os.environ["CUDA_VISIBLE_DEVICES"]
Store(sys.argv[1]).insert([Result(run_id=f"{h}-{g}", workload="membw", backend="torch",
    dtype="fp32", params={"op": "copy", "bytes": i}, host=h, median_s=1e-3, correct=True,
    device={"name": "NVIDIA H100", "uuid": f"GPU-{h}-{g}"}) for i in range(3)])
' "${@: -1}"
fi
args=()
for a in "$@"; do
  if [ "$FAKE_HOST" = upload-fails ] && [ "${prev:-}" = --to ]; then a=$FAKE_DOWN_URL; fi
  args+=("$a"); prev=$a
done
exec "$PYTHON" -m cli "$verb" "${args[@]}"
""",
}


@pytest.fixture
def fakes(tmp_path, pg_url):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in FAKES.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO), "FAKE_ROOT": str(tmp_path / "nodes"),
           "COLOSSUS_BENCH": str(bindir / "fake-colossus-bench"),
           "COLOSSUS_BENCH_UPLOAD_URL": pg_url, "COLOSSUS_BENCH_UPLOAD_TRIES": "2",
           "COLOSSUS_BENCH_UPLOAD_BACKOFF": "0", "COLOSSUS_FLEET_TAG": "t1",
           "FAKE_DOWN_URL": f"postgresql://u:pw@127.0.0.1:{free_port()}/x"}
    return env


def _uploaded_hosts(url):
    with Store(url) as store:
        return sorted({r.host for r in store.records()}), store.count()


def _local_rows(tmp_path, host):
    return sum(Store(str(p)).count() for p in (tmp_path / "nodes" / host).glob("t1-gpu*.db"))


@pytest.mark.postgres
def test_fleet_over_ssh_names_failed_hosts_and_they_keep_their_results(fakes, tmp_path, pg_url):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("good1\n# a comment\ngood2  slots=8\nupload-fails\nunreachable\n\n")
    res = subprocess.run(["bash", str(REPO / "bench/slurm/fleet-ssh.sh"), str(hostfile)],
                         env={**fakes, "COLOSSUS_FLEET_LOG_DIR": str(tmp_path / "logs")},
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2 of 4 hosts ok" in res.stdout
    assert "unreachable: FAILED: ssh could not connect" in res.stdout
    assert "FAILED: upload of GPU 0" in res.stdout and "local results kept in" in res.stdout
    assert _uploaded_hosts(pg_url) == (["good1", "good2"], 12)
    assert _local_rows(tmp_path, "upload-fails") == 6  # kept locally, for a later upload


@pytest.mark.postgres
def test_fleet_sbatch_summary_names_failed_and_crashed_nodes(fakes, tmp_path, pg_url):
    env = {**fakes, "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[1-4]",
           "FAKE_NODES": "n1 n2 upload-fails crashed"}
    res = subprocess.run(["bash", str(REPO / "bench/slurm/fleet.sbatch")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "fleet run 77: 2 of 4 nodes ok" in res.stdout
    assert "upload-fails: FAILED: upload of GPU 0" in res.stdout
    assert "crashed: FAILED: no status" in res.stdout
    assert _uploaded_hosts(pg_url) == (["n1", "n2"], 12)
    assert (tmp_path / "colossus-fleet-77" / "n1.status").read_text().startswith("n1: ok")


EVIL_HOST = "node\x1b[2J\nsecond"


def test_control_characters_are_refused_at_the_door_and_escaped_on_output(db_url, tmp_path):
    row = rec("GPU-e", 1e-3, host=EVIL_HOST).to_dict()
    f = tmp_path / "evil.jsonl"
    f.write_text(json.dumps(row) + "\n")
    res = runner.invoke(app, ["ingest", str(f), "--db", db_url])
    assert res.exit_code == 2 and "field 'host'" in res.output
    assert "control character" in res.output and "\x1b" not in res.output
    # a row stored before the door refused them: skipped by fleet, never printed raw
    with Store(db_url) as store:
        store.insert([rec(f"GPU-{i}", 1.0e-3) for i in range(3)])
    _raw_insert(db_url, [rec("GPU-e", 2.0e-3, host=EVIL_HOST,
                             device={**H100, "name": "H100\x1b[31m\tred", "uuid": "GPU-e2"})])
    _raw_insert(db_url, [rec("GPU\nn", 2.0e-3, host="hn", run_id="rn")])
    # (a nested value, the uuid, may hold a line break)
    res = runner.invoke(app, ["fleet", "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "1 unusable row" in res.stderr
    assert "GPU\\nn" in res.stdout
    assert _t("a\x1b[2Jb\nc\t") == "a\\x1b[2Jb\\nc\\t"
