"""A results file written by colossus-bench 1 (schema version 1), built here from the DDL and a
row such a file holds (dumped with sqlite3 .dump): the readers refuse it until a verb that writes
migrates a copy of it, and then its row reads back as it was written."""

import hashlib
import json
import shutil
import sqlite3

from typer.testing import CliRunner

from cli import app
from results.schema import SCHEMA_VERSION, Result

V1_DDL = """
CREATE TABLE results (
	id VARCHAR(64) NOT NULL,
	run_id VARCHAR(64) NOT NULL,
	created_at VARCHAR(40) NOT NULL,
	schema_version INTEGER NOT NULL,
	workload VARCHAR(64) NOT NULL,
	backend VARCHAR(64) NOT NULL,
	dtype VARCHAR(32) NOT NULL,
	params JSON NOT NULL,
	host VARCHAR(255) NOT NULL,
	device JSON NOT NULL,
	world_size INTEGER,
	rank INTEGER,
	software JSON,
	median_s FLOAT,
	p20_s FLOAT,
	p80_s FLOAT,
	mean_s FLOAT,
	stdev_s FLOAT,
	n INTEGER,
	samples_s JSON,
	tflops FLOAT,
	gbps FLOAT,
	algbw_gbps FLOAT,
	busbw_gbps FLOAT,
	peak_fraction FLOAT,
	correct BOOLEAN,
	max_rel_error FLOAT,
	tolerance FLOAT,
	telemetry JSON,
	status VARCHAR(16) NOT NULL,
	error TEXT,
	PRIMARY KEY (id)
);
CREATE TABLE colossus_meta (
	"key" VARCHAR(64) NOT NULL,
	value VARCHAR(255) NOT NULL,
	PRIMARY KEY ("key")
);
INSERT INTO colossus_meta VALUES('schema_version','1');
CREATE INDEX ix_results_run_id ON results (run_id);
CREATE INDEX ix_results_workload ON results (workload);
"""
DEVICE = {"name": "Intel(R) Xeon(R) Processor", "kind": "cpu", "model": None, "cc": None,
          "sm_count": 2, "memory_bytes": 25276510208, "uuid": None, "driver": None,
          "cuda": None}
SOFTWARE = {"python": "3.11.7", "torch": "2.13.0+cpu", "triton": "3.8.0",
            "colossus_bench": "0.1.0", "git_sha": "0dc011430d5dc71bfca0cbfd7e3230e117febcac",
            "git_dirty": False}
TELEMETRY = {"source": "none", "samples": 0, "throttle_reasons": [], "power_w_mean": None,
             "reason": "no GPU: NVML has nothing to sample"}
ROW = {"id": "94e6c0ed28e0318ce1303fefeda1c3b6", "run_id": "40b53e9081f54168",
       "created_at": "2026-12-01T20:29:38.677+00:00", "schema_version": 1,
       "workload": "membw", "backend": "torch", "dtype": "fp32",
       "params": {"op": "copy", "bytes": 4194304}, "host": "vm", "device": DEVICE,
       "world_size": 1, "rank": 0, "software": SOFTWARE, "median_s": 0.019596838999859756,
       "p20_s": 0.018576709399712853, "p80_s": 0.02407071499983431,
       "mean_s": 0.02151558699976400, "stdev_s": 0.004870562006434492, "n": 3,
       "samples_s": [0.027053298999817343, 0.01789662299961492, 0.019596838999859756],
       "tflops": None, "gbps": 0.42805923955695263, "algbw_gbps": None, "busbw_gbps": None,
       "peak_fraction": None, "correct": True, "max_rel_error": 0.0, "tolerance": 0.0,
       "telemetry": TELEMETRY, "status": "ok", "error": None}
JSON_TEXT = ("params", "device", "software", "samples_s", "telemetry")

runner = CliRunner()


def _old_file(path):
    """The file as colossus-bench 1 left it: its DDL, its version row, one row."""
    con = sqlite3.connect(path)
    con.executescript(V1_DDL)
    values = {k: json.dumps(v) if k in JSON_TEXT else v for k, v in ROW.items()}
    con.execute(f"INSERT INTO results ({', '.join(values)}) VALUES "
                f"({', '.join('?' * len(values))})", list(values.values()))
    con.commit()
    con.close()


def _export(db):
    res = runner.invoke(app, ["export", "--db", str(db), "--format", "jsonl"])
    return res, [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]


def test_a_colossus_bench_1_file_migrates_and_its_row_survives(tmp_path):
    original = tmp_path / "old.db"
    _old_file(original)
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    copy = tmp_path / "mig" / "old.db"
    copy.parent.mkdir()
    shutil.copy(original, copy)

    res, _ = _export(copy)  # a reader does not migrate
    assert res.exit_code == 2 and "a verb that writes (ingest, run) migrates it" in res.output

    new = Result(run_id="r2", workload="membw", backend="torch", dtype="fp32",
                 params={"op": "copy", "bytes": 1024}, host="h", device={"name": "cpu"})
    jl = tmp_path / "new.jsonl"
    jl.write_text(json.dumps(new.to_dict()) + "\n")
    res = runner.invoke(app, ["ingest", str(jl), "--db", str(copy)])
    assert res.exit_code == 0, res.output

    res, rows = _export(copy)
    assert res.exit_code == 0, res.output
    old = {r["id"]: r for r in rows}[ROW["id"]]
    later = {k: v for k, v in old.items() if k not in ROW}
    assert {k: old[k] for k in ROW} == ROW  # every value as version 1 wrote it
    assert set(later) == {"compile_s", "flops", "bytes", "shape"}
    assert all(v is None for v in later.values())
    assert {r["id"] for r in rows} == {ROW["id"], new.id}
    assert new.to_dict()["schema_version"] == SCHEMA_VERSION
    assert hashlib.sha256(original.read_bytes()).hexdigest() == digest  # the original untouched
