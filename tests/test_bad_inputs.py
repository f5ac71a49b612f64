"""Bad input to every verb that reads a user's file or URL: one line naming the problem, the
documented exit code (2), no traceback, and nothing written (no rows, no file, no folder).

Each case: (verb and arguments, expected text of the one error line, paths that must not exist
afterwards). {tmp} is the test's folder, {db} a fresh empty results table, {bad} the case's
input file (written with the case's bytes), {png} a PNG image.
"""

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from results.schema import Result
from results.store import Store

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40)


def good_row(**kw) -> dict:
    base = dict(run_id="r1", workload="membw", backend="torch", dtype="fp32",
                params={"op": "copy", "bytes": 4096}, host="node1",
                device={"name": "cpu", "kind": "cpu"}, median_s=1e-3, gbps=8.2, correct=True,
                created_at="2026-01-01T00:00:00+00:00")
    return Result(**{**base, **kw}).to_dict()


def jsonl(*rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def with_line(**kw) -> bytes:
    """A good row, then a row with one bad value: the whole file must be refused."""
    return jsonl(good_row(), {**good_row(run_id="r2"), **kw})


# (arguments, content of {bad} or None, expected text, paths that must not exist afterwards)
INGEST = [
    (["ingest", "{tmp}/none.jsonl"], None, "none.jsonl: no such file", []),
    (["ingest", "{tmp}"], None, "not a file", []),
    (["ingest", "{png}"], None, "not UTF-8 text (byte 0x89 at offset 0)", []),
    (["ingest", "{bad}"], jsonl(good_row())[:-2] + b"\xff}\n", "not UTF-8 text (byte 0xff", []),
    (["ingest", "{bad}"], b"{\"a\": 1}\x00\n", "holds NUL bytes", []),
    (["ingest", "{bad}"], b"", "empty file", []),
    (["ingest", "{bad}"], b"hello\n", "not JSON", []),
    (["ingest", "{bad}"], b"[" * 100_000, "nested too deep", []),
    (["ingest", "{bad}"], with_line(n=2**70), "line 2: field 'n' = 1180591620717411303424: "
     "outside the column's integer range", []),
    (["ingest", "{bad}"], with_line(n=2**40), "line 2: field 'n' = 1099511627776", []),
    (["ingest", "{bad}"], with_line(n=-7), "line 2: field 'n' = -7: must be >= 1", []),
    (["ingest", "{bad}"], with_line(median_s=-1), "line 2: field 'median_s' = -1", []),
    (["ingest", "{bad}"], with_line(gbps=1e9), "line 2: field 'gbps' = 1000000000.0: above", []),
    (["ingest", "{bad}"], with_line(world_size=-4), "field 'world_size' = -4", []),
    (["ingest", "{bad}"], with_line(created_at="not-a-date"),
     "field 'created_at' = 'not-a-date': not an ISO 8601 time with a zone", []),
    (["ingest", "{bad}"], with_line(median_s=True), "field 'median_s' = True: bool where", []),
    (["ingest", "{bad}"], with_line(error="x\x00y"), "field 'error' = 'x\\x00y': text holds a "
     "NUL byte", []),
    (["ingest", "{bad}"], with_line(host="node[/bold]01", median_s=-1.0),
     "field 'median_s' = -1.0", []),
    # the contract's names and counts (results/validate.py): refused whole, exit 2
    (["ingest", "{bad}"], with_line(host="node\u202e10"), "line 2: field 'host' = "
     "'node\\u202e10': text holds a format character (U+202E RIGHT-TO-LEFT OVERRIDE)", []),
    (["ingest", "{bad}"], with_line(device={"name": "cpu\u200b", "kind": "cpu"}),
     "field 'device.name' = 'cpu\\u200b': text holds a format character (U+200B", []),
    (["ingest", "{bad}"], with_line(workload="nonsense"), "line 2: field 'workload' = "
     "'nonsense': not a known workload (gemm, attention,", []),
    (["ingest", "{bad}"], with_line(run_id="a run/../x"), "line 2: field 'run_id' = "
     "'a run/../x': not a run id", []),
    (["ingest", "{bad}"], with_line(n=7, samples_s=[1e-3] * 279),
     "line 2: field 'n' = 7: does not match the 279 samples in samples_s", []),
    (["ingest", "{bad}"], with_line(n=279, samples_s=[]),
     "line 2: field 'n' = 279: counts samples, but samples_s is empty", []),
    (["ingest", "{bad}"], jsonl([1, 2]), "line 1: expected an object", []),
    (["ingest", "{bad}", "--db", "{tmp}/file/sub/x.db"], jsonl(good_row()),
     "cannot create the database folder", ["{tmp}/file/sub"]),
    (["ingest", "{bad}", "--db", "{tmp}/nonexist/dir/x.db"], jsonl(good_row()),
     "no such folder", ["{tmp}/nonexist"]),
    (["ingest", "{bad}", "--db", ":memory:"], jsonl(good_row()),
     "in-memory database: a results table must persist", ["{tmp}/:memory:"]),
    (["ingest", "{bad}", "--db", "sqlite://"], jsonl(good_row()), "in-memory database", []),
]

READERS = [
    (["export", "--db", "{tmp}/typo/results.db"], None, "no database at", ["{tmp}/typo"]),
    (["export", "--db", ":memory:"], None, "in-memory database", ["{tmp}/:memory:"]),
    (["export", "--db", "sqlite://"], None, "in-memory database", []),
    (["export", "--db", "{png}"], None, "file is not a database", []),
    (["export", "--db", "{db}", "--format", "xls"], None, "'xls' is not one of", []),
    (["export", "--db", "{db}", "--format", "parquet"], None, "give --out FILE", []),
    (["export", "--db", "{db}", "--out", "{tmp}/nodir/r.csv"], None,
     "cannot write {tmp}/nodir/r.csv", ["{tmp}/nodir"]),
    (["export", "--db", "{db}", "--out", "{tmp}"], None, "is a folder", []),
    (["export", "--db", "mysql://x@h/db"], None, "cannot use database URL", []),
    (["fleet", "--db", "{tmp}/typo.db"], None, "no database at", ["{tmp}/typo.db"]),
    (["fleet", "--db", ":memory:"], None, "in-memory database", ["{tmp}/:memory:"]),
    (["fleet", "--db", "{db}", "--threshold", "0"], None, "threshold must be", []),
    (["fleet", "--db", "{png}"], None, "file is not a database", []),
]

OTHERS = [
    (["upload", "--db", "{tmp}/typo.db", "--to", "postgresql://u@127.0.0.1:1/x"], None,
     "no local results table at", ["{tmp}/typo.db"]),
    (["upload", "--db", "{db}", "--to", "mysql://x@h/db"], None, "cannot use database URL", []),
    (["upload", "--db", "{db}", "--tries", "1", "--to", "postgresql://u@127.0.0.1:1/x"], None,
     "127.0.0.1", []),
    (["estimate", "--scenario", "{tmp}/none.yaml"], None, "scenario file not found", []),
    (["estimate", "--scenario", "no-such-preset"], None, "unknown scenario preset", []),
    (["estimate", "--scenario", "no-such-preset"], None, "serving presets are named serve-*",
     []),
    (["estimate", "--scenario", "{tmp}"], None, "is a directory, not a scenario file", []),
    (["estimate", "--scenario", ""], None, "--scenario is empty", []),
    (["estimate", "--scenario", "{bad}"], b"model: llama3-8b\ncluster: colossus-100k\n"
     b"global_batch_tokens: 4.0e6\n", "global_batch_tokens '4.0e6' was read as text", []),
    (["estimate", "--scenario", "{bad}"], b"model: [a, b\ncluster: x\n",
     "neither JSON nor YAML: expected ',' or ']', but got ':' at line 2, column 8", []),
    (["estimate", "--scenario", "{bad}"], b"[" * 100_000, "nested too deep", []),
    (["estimate", "--scenario", "{bad}"], b"model: llama3-405b\ncluster: {gpu: H100-SXM, "
     b"gpus: 8}\nparallel: {tp: 1, pp: 1, dp: 8}\n", "usable: it does not fit", []),
    (["run", "--db", "{tmp}/file/x.db", "--filter", "membw"], None,
     "cannot create the database folder", []),
    (["run", "--db", "{tmp}/r.db", "--filter", "no-such-case"], None, "matches no case", []),
    (["run", "--db", "{tmp}", "--filter", "membw"], None, "is a folder; give the database file",
     []),
    (["export", "--db", "{tmp}"], None, "is a folder; give the database file", []),
    (["run", "--db", "{tmp}/nonexist/dir/x.db", "--filter", "membw"], None, "no such folder",
     ["{tmp}/nonexist"]),
    (["run", "--db", ":memory:", "--filter", "membw"], None, "in-memory database",
     ["{tmp}/:memory:"]),
    (["run", "--db", "{tmp}/r.db", "--suite", "nope"], None, "'nope' is not one of", []),
    (["report", "--db", "{db}", "--config", "nope", "-o", "{tmp}/rep"], None,
     "'nope' is not one of 'full', 'quick'", ["{tmp}/rep"]),
    (["allreduce", "--backend", "gloo", "--nproc-per-node", "0", "--db", "{tmp}/ar.db"], None,
     "--nproc-per-node must be >= 1", ["{tmp}/ar.db"]),
]

# The scenario reader and the report's read-only open (fixed with the layers' merge).
PENDING = [
    (["estimate", "--scenario", "{png}"], None, "not UTF-8", []),
    (["report", "--db", "{tmp}/typo/results.db", "-o", "{tmp}/rep"], None, "no database at",
     ["{tmp}/typo", "{tmp}/rep"]),
]


@pytest.mark.parametrize(("args", "content", "expected", "absent"),
                         INGEST + READERS + OTHERS + PENDING)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, args,
                                                             content, expected, absent):
    monkeypatch.chdir(tmp_path)  # a relative path (":memory:") would land here
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    (tmp_path / "file").write_text("")  # a file where a folder is expected
    (tmp_path / "image.png").write_bytes(PNG)
    db = tmp_path / "empty.db"
    Store(str(db)).close()
    subs = {"{tmp}": str(tmp_path), "{db}": str(db), "{bad}": str(tmp_path / "input.jsonl"),
            "{png}": str(tmp_path / "image.png")}

    def sub(text: str) -> str:
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    if content is not None:
        Path(subs["{bad}"]).write_bytes(content)
    before = sorted(os.listdir(tmp_path))
    res = runner.invoke(app, [sub(a) for a in args])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    # progress lines ("uploading ... ...") may come first; the error is one line
    lines = [line for line in res.output.splitlines()
             if line.strip() and not line.endswith(" ...")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert sub(expected) in lines[0], lines[0]
    assert "Traceback" not in res.output
    for path in absent:
        assert not Path(sub(path)).exists(), f"{sub(path)} was created"
    assert Store(str(db), create=False).count() == 0  # nothing reached the table
    assert sorted(os.listdir(tmp_path)) == before or args[0] in ("run", "ingest")
    assert not (tmp_path / "xdg").exists()  # no default database was created either


def test_a_file_refused_whole_names_file_line_field_and_value(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    bad = tmp_path / "two.jsonl"
    bad.write_bytes(with_line(median_s=-math.pi))
    res = runner.invoke(app, ["ingest", str(bad), "--db", db])
    assert res.exit_code == 2
    assert f"{bad}: line 2: field 'median_s' = -3.14159" in res.output
    assert "nothing from this file was written" in res.output
    assert Store(db).count() == 0


def test_an_unknown_gpu_is_stored_with_a_note_and_exit_0(tmp_path):
    """A device without a datasheet peak: the row is valid, its throughput unchecked; ingest
    says so in one note per kind of figure (stderr) and exits 0; the counts are in words."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    b300 = {"name": "NVIDIA B300", "model": "B300-SXM", "kind": "cuda"}
    f = tmp_path / "b300.jsonl"
    f.write_bytes(jsonl(good_row(workload="gemm", dtype="bf16", params={"m": 1}, device=b300,
                                 tflops=2000.0)))
    res = runner.invoke(app, ["ingest", str(f), "--db", db])
    assert res.exit_code == 0, res.output
    assert f"{f}: 1 row, 1 new, 0 already there" in res.stdout
    [note] = res.stderr.splitlines()
    assert note == f"note: {f}: tflops of 1 row not checked: no datasheet peak known for " \
                   "B300-SXM (stored all the same)"
    two = tmp_path / "two.jsonl"
    two.write_bytes(jsonl(*[good_row(run_id=f"r{i}", device=b300, gbps=900.0)
                            for i in range(2)]))
    res = runner.invoke(app, ["ingest", str(two), "--db", db])
    assert res.exit_code == 0 and "2 rows, 2 new" in res.stdout
    assert "gbps of 2 rows not checked" in res.stderr and len(res.stderr.splitlines()) == 1
    known = tmp_path / "h100.jsonl"
    known.write_bytes(jsonl(good_row(run_id="r9", device={"model": "H100-SXM"}, gbps=900.0)))
    res = runner.invoke(app, ["ingest", str(known), "--db", db])
    assert res.exit_code == 0 and res.stderr == ""


def test_ingest_loads_the_good_files_and_exits_2_for_a_refused_one(tmp_path):
    """Each file whole or not at all, 2 if any was refused: what README and `ingest -h` say."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([good_row(), good_row(run_id="r2")]))  # a `run --json-out` array
    bad.write_bytes(with_line(median_s=-1.0))
    res = runner.invoke(app, ["ingest", str(good), str(bad), "--db", db])
    assert res.exit_code == 2
    assert f"{good}: 2 rows, 2 new, 0 already there" in res.stdout
    assert res.stderr.count("error: ") == 1 and "nothing from this file was written" in res.stderr
    assert Store(db).count() == 2
    text = " ".join(runner.invoke(app, ["ingest", "-h"], env={"COLUMNS": "300"}).output.split())
    assert "JSON arrays of records (run --json-out)" in text and "pytest-benchmark" in text
    assert "some file refused" in text and "loaded all the same" in text


def test_tracebacks_never_show_local_variables():
    """typer >= 0.23 shows no locals by default (pyproject's bound); the app says so too, so a
    crash can never print a password held in a local variable."""
    import inspect

    import typer

    import cli

    default = inspect.signature(typer.Typer.__init__).parameters[
        "pretty_exceptions_show_locals"].default
    assert default is False
    assert cli.app.pretty_exceptions_show_locals is False
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"typer>=0.23"' in pyproject


def test_the_default_database_folder_is_still_made(tmp_path, monkeypatch):
    """Only the per-user default location ($XDG_DATA_HOME/colossus-bench) is created."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    Store().close()
    assert (tmp_path / "xdg" / "colossus-bench" / "results.db").is_file()
