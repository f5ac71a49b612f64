"""`colossus-bench upload` and `run --upload`: copying the local table into a shared PostgreSQL
table, idempotently, in batches; retries and a clear failure when the server is unreachable
(local rows untouched, a later upload finishes); passwords never in the output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import _upload_after_run
from cli import app
from results.schema import Result
from results.store import Store
from results.tables import record_row
from results.upload import (
    BACKOFF_ENV,
    TRIES_ENV,
    UPLOAD_ENV,
    RetryPolicy,
    UploadError,
    UploadReport,
    scrub,
    upload_store,
)
from results.upload_bench import concurrency
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
pg = pytest.mark.postgres


def make(i, run_id="run1"):
    return Result(run_id=run_id, workload="membw", backend="torch", dtype="fp32",
                  params={"op": "copy", "bytes": 1024 * (i + 1)}, host="node1",
                  device={"name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM",
                          "uuid": "GPU-1"},
                  median_s=1e-3, samples_s=[1e-3, 1.2e-3, 0.9e-3], gbps=2.0, correct=True,
                  telemetry={"source": "nvml", "power_w_mean": 600.0, "throttle_reasons": []})


@pytest.fixture
def local(tmp_path):
    """A local SQLite table with 30 rows."""
    store = Store(str(tmp_path / "local.db"))
    store.insert([make(i) for i in range(30)])
    yield store
    store.close()


def _snapshot(store):
    return sorted((r.id, r.median_s, r.created_at) for r in store.records())


def cli_subprocess(*args, env=None):
    """The real command in a process of its own: everything it prints is captured."""
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120)


@pg
def test_upload_copies_what_is_missing_and_rerunning_adds_nothing(local, pg_url):
    with Store(pg_url) as shared:  # 10 rows there already (another node, an earlier upload)
        shared.insert([make(i) for i in range(10)])
    before = _snapshot(local)
    report = upload_store(local, pg_url, batch_size=7)
    assert (report.new, report.already, report.local, report.batches) == (20, 10, 30, 5)
    assert "20 new rows, 10 already there" in str(report) and "***" in str(report)
    again = upload_store(local, pg_url)
    assert (again.new, again.already) == (0, 30)
    with Store(pg_url) as shared:
        assert shared.ids() == local.ids()
        assert sorted(r.to_dict()["samples_s"] for r in shared.records()) == \
            sorted(r.to_dict()["samples_s"] for r in local.records())
    assert _snapshot(local) == before  # the local table is only read


def test_upload_between_sqlite_files_and_bad_arguments(local, tmp_path, monkeypatch):
    other = f"sqlite:///{tmp_path / 'shared.db'}"
    assert upload_store(local, other).new == 30
    with pytest.raises(ValueError, match="batch size"):
        upload_store(local, other, batch_size=0)
    with pytest.raises(ValueError, match="tries"):
        RetryPolicy(tries=0)
    monkeypatch.delenv(UPLOAD_ENV, raising=False)
    with pytest.raises(ValueError, match=UPLOAD_ENV):
        upload_store(local, None)
    with pytest.raises(UploadError, match="is the local table itself"):
        upload_store(local, local.url)


def test_unreachable_server_is_retried_with_backoff_then_fails(local):
    waits = []
    url = f"postgresql://bench:pw-never-shown-42@127.0.0.1:{free_port()}/x"
    with pytest.raises(UploadError) as e:
        upload_store(local, url, retry=RetryPolicy(tries=4, backoff_s=0.5, jitter=False),
                     sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0]  # exponential; then the fourth try fails for good
    msg = str(e.value)
    assert "cannot reach" in msg and "after 4 tries" in msg and "local table is untouched" in msg
    assert "pw-never-shown-42" not in msg and e.value.report.retries == 3
    assert local.count() == 30


@pg
def test_server_down_mid_upload_keeps_local_rows_and_a_later_upload_finishes(local,
                                                                            pg_server_factory):
    server = pg_server_factory()
    url = server.url(server.create_database())
    before = _snapshot(local)

    def stop_after_first_batch(report):
        if report.batches == 1:
            server.stop()  # a real server going away between two batches

    with pytest.raises(UploadError, match="cannot reach") as e:
        upload_store(local, url, batch_size=10, on_batch=stop_after_first_batch,
                     retry=RetryPolicy(tries=2, backoff_s=0.05))
    assert e.value.report.new == 10 and server.password not in str(e.value)
    assert _snapshot(local) == before
    server.start()
    report = upload_store(local, url, batch_size=10)
    assert (report.new, report.already) == (20, 10)
    with Store(url) as shared:
        assert shared.ids() == local.ids()


@pg
def test_eight_concurrent_uploaders_with_overlaps_give_exactly_the_distinct_rows(pg_url,
                                                                                 tmp_path):
    figures = concurrency(pg_url, tmp_path, uploaders=8, total=5000, samples=5,
                          batch_size=500)
    assert figures["rows_sent"] == 5000 and figures["distinct_rows"] < 5000  # overlaps
    assert figures["checks"] == {"table_has_exactly_the_distinct_rows": True,
                                 "new_counts_add_up": True, "rerun_adds_none": True,
                                 "none_set_aside": True}
    assert figures["lost"] == 0 and figures["doubled"] == 0


@pg
@pytest.mark.slow
def test_concurrent_uploaders_ride_out_a_server_restart(pg_server_factory, tmp_path):
    """The real server stopped and started while 8 uploaders send: they retry (with jitter)
    and the table ends with exactly the distinct rows, none lost, none twice."""
    server = pg_server_factory()
    url = server.url(server.create_database())
    figures = concurrency(url, tmp_path, uploaders=8, total=20_000, samples=20,
                          batch_size=500, restart=server.restart, restart_after_s=0.5)
    assert figures["lost"] == 0 and figures["doubled"] == 0
    assert figures["checks"]["table_has_exactly_the_distinct_rows"]
    assert figures["checks"]["rerun_adds_none"] and figures["retries"] > 0


@pg
def test_cli_upload_never_prints_the_password(local, pg_server, pg_url):
    pw = pg_server.password
    ok = cli_subprocess("upload", "--to", pg_url, "--db", local.url)
    assert ok.returncode == 0, ok.stderr
    assert "30 new rows, 0 already there" in ok.stdout
    assert pw not in ok.stdout + ok.stderr and "***" in ok.stdout
    # unreachable: retried, then a clear message, exit non-zero
    down = pg_url.replace(f":{pg_server.port}/", f":{free_port()}/")
    bad = cli_subprocess("upload", "--to", down, "--db", local.url, "--tries", "2",
                         "--backoff", "0")
    assert bad.returncode != 0 and "cannot reach" in bad.stderr
    assert pw not in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
    # a wrong password is not retried and not shown either
    wrong = cli_subprocess("upload", "--to", pg_url.replace(pw, "Wr0ng-pass-77"), "--db",
                           local.url)
    assert wrong.returncode != 0 and "authentication failed" in wrong.stderr
    assert "Wr0ng-pass-77" not in wrong.stdout + wrong.stderr
    # from the environment, and --help with it set
    env = cli_subprocess("upload", "--db", local.url, "--json", env={UPLOAD_ENV: pg_url})
    assert env.returncode == 0 and json.loads(env.stdout)["already"] == 30
    assert pw not in env.stdout + env.stderr
    helped = cli_subprocess("upload", "--help", env={UPLOAD_ENV: pg_url})
    assert pw not in helped.stdout + helped.stderr


@pg
def test_password_from_pgpassword_or_pgpass(local, pg_server, pg_url, tmp_path):
    no_pw = pg_url.replace(f":{pg_server.password}@", "@")
    assert pg_server.password not in no_pw
    res = cli_subprocess("upload", "--to", no_pw, "--db", local.url,
                         env={"PGPASSWORD": pg_server.password})
    assert res.returncode == 0 and "30 new rows" in res.stdout, res.stderr
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_server.port}:*:bench:{pg_server.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a .pgpass others can read
    res = cli_subprocess("upload", "--to", no_pw, "--db", local.url,
                         env={"HOME": str(tmp_path), "PGPASSWORD": ""})
    assert res.returncode == 0 and "30 already there" in res.stdout, res.stderr
    assert pg_server.password not in res.stdout + res.stderr


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(UPLOAD_ENV, raising=False)
    res = runner.invoke(app, ["upload", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 2 and "--to" in res.output
    res = runner.invoke(app, ["upload", "--to", "sqlite:///x.db", "--db",
                              str(tmp_path / "missing.db")])
    assert res.exit_code == 2 and "no local results table" in res.output
    assert not (tmp_path / "missing.db").exists()
    res = runner.invoke(app, ["upload", "--to", "sqlite:///x.db", "--db",
                              str(tmp_path / "missing.db"), "--tries", "0"])
    assert res.exit_code == 2


@pytest.mark.parametrize(("to", "extra", "expected"), [
    ("{tmp}/x.db", [], "is not a database URL"),
    ("sqlite:///{tmp}/x.db", ["--batch-size", "0"], "batch size must be an integer from 1"),
    ("{local}", [], "is the local table itself"),
])
def test_upload_refuses_its_arguments_before_any_progress_line(local, tmp_path, to, extra,
                                                              expected):
    """The arguments are checked before "uploading ... ...": a refusal is the one line."""
    to = to.replace("{tmp}", str(tmp_path)).replace("{local}", local.url)
    res = runner.invoke(app, ["upload", "--to", to, "--db", local.url, *extra])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")
    assert expected in res.output and "uploading" not in res.output
    assert not (tmp_path / "x.db").exists()


def test_pass_db_is_said_only_when_db_was_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    given = runner.invoke(app, ["upload", "--to", "sqlite:///x.db", "--db",
                                str(tmp_path / "none.db")])
    assert given.exit_code == 2 and "no local results table at" in given.output
    assert "pass --db" not in given.output
    default = runner.invoke(app, ["upload", "--to", "sqlite:///x.db"])
    assert default.exit_code == 2 and "(pass --db)" in default.output
    for args in (["--db", str(tmp_path / "empty.db")], []):
        res = runner.invoke(app, ["compare", *args])
        assert res.exit_code == 2 and "no results table at" in res.output
        assert ("(pass --db)" in res.output) == (not args)


@pg
def test_run_upload_prints_the_report_and_never_fails_the_run(local, pg_url, capsys,
                                                              monkeypatch):
    _upload_after_run(local, pg_url)
    out = capsys.readouterr()
    assert "uploaded: 30 new rows, 0 already there" in out.out
    monkeypatch.setenv(TRIES_ENV, "2")  # run --upload takes its retry policy from these
    monkeypatch.setenv(BACKOFF_ENV, "0")
    down = f"postgresql://u:pw-x9@127.0.0.1:{free_port()}/x"
    assert _upload_after_run(local, down) is False  # does not raise, says why (run exits 1)
    out = capsys.readouterr()
    assert "upload failed, results kept locally" in out.err and "pw-x9" not in out.err


@pg
@pytest.mark.slow
def test_run_with_upload_end_to_end(pg_url, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    res = runner.invoke(app, ["run", "--suite", "quick", "--filter", "membw/*:torch", "--db", db,
                              "--timing", "smoke", "--upload", pg_url])
    assert res.exit_code == 0, res.output
    assert "uploaded: 2 new rows, 0 already there" in res.output
    with Store(pg_url) as shared, Store(db) as mine:
        assert shared.ids() == mine.ids() and len(mine.ids()) == 2


def no_psycopg(tmp_path) -> dict:
    """The environment of a process where psycopg cannot be imported, as on the GPU image."""
    shim = tmp_path / "shim" / "psycopg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no psycopg here')\n")
    return {"PYTHONPATH": f"{shim.parent}:{ROOT}"}


def test_run_upload_to_sqlite_needs_no_psycopg(tmp_path):
    """psycopg is imported only for a PostgreSQL destination: `run --upload` and `upload --to`
    a SQLite file work without it."""
    env = no_psycopg(tmp_path)
    db, shared = tmp_path / "r.db", tmp_path / "shared.db"
    proc = cli_subprocess("run", "--suite", "quick", "--filter", "membw/*:torch", "--db", db,
                          "--timing", "smoke", "--upload", f"sqlite:///{shared}", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "uploaded: 2 new rows, 0 already there" in proc.stdout
    with Store(str(shared)) as theirs, Store(str(db)) as mine:
        assert theirs.ids() == mine.ids() and len(mine.ids()) == 2
    other = tmp_path / "other.db"
    proc = cli_subprocess("upload", "--db", db, "--to", f"sqlite:///{other}", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Store(str(other)) as theirs:
        assert len(theirs.ids()) == 2


@pytest.mark.parametrize("verb", ["run", "upload"])
def test_a_postgresql_destination_without_psycopg_is_refused_before_anything_runs(tmp_path,
                                                                                  verb):
    """Before any case runs (or any row is read): one line naming psycopg, exit 2, and the
    URL's password never shown."""
    db, url = tmp_path / "r.db", "postgresql://bench:s3cret@127.0.0.1:1/colossus"
    if verb == "upload":
        Store(str(db)).close()
        args = ["upload", "--db", db, "--to", url]
    else:
        args = ["run", "--suite", "quick", "--filter", "membw/*:torch", "--db", db,
                "--timing", "smoke", "--upload", url]
    proc = cli_subprocess(*args, env=no_psycopg(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs psycopg 3" in lines[0], lines
    assert "s3cret" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert "device:" not in proc.stdout  # no case ran


def test_scrub_and_report():
    url = "postgresql://u:p%40ss w@h/db"
    assert scrub("x p@ss w y p%40ss%20w", url) == "x *** y ***"
    assert scrub("nothing", "sqlite:///x.db") == "nothing"
    r = UploadReport(to="postgresql+psycopg://u:***@h/db", local=3, new=2, already=1, batches=1,
                     seconds=0.5)
    assert str(r) == ("2 new rows, 1 already there (3 local rows, 1 batch) to "
                      "postgresql+psycopg://u:***@h/db in 0.5 s")
    assert r.to_dict()["rows_per_s"] == 6.0
    one = UploadReport(to="x", local=1, new=1, batches=2, refused=1, refused_file="f.jsonl",
                       refused_reason="why")
    assert str(one).startswith("1 new row, 0 already there (1 local row, 2 batches, 1 set aside")
    assert one.set_aside_line().startswith("1 row set aside in f.jsonl")


def test_retry_waits_have_full_jitter_so_uploaders_do_not_retry_in_lockstep():
    policy = RetryPolicy(tries=6, backoff_s=1.0)
    waits = [[policy.wait_s(a) for a in range(1, 6)] for _ in range(32)]  # 32 uploaders
    for a in range(5):
        column = [w[a] for w in waits]
        assert all(0 <= x <= 2 ** a for x in column)  # within the exponential cap
        assert len(set(column)) == 32  # and not in lockstep
    assert RetryPolicy().tries == 6 and RetryPolicy(jitter=False).wait_s(3) == 4.0


def _refused_lines(folder):
    files = sorted(folder.glob("refused-upload-*.jsonl"))
    return files, [json.loads(line) for f in files for line in f.read_text().splitlines()]


@pytest.mark.postgres
def test_rows_postgres_cannot_store_are_set_aside_and_the_rest_go_in(tmp_path, pg_url):
    """The two known blockers: a NUL character in a text field (SQLite keeps it, PostgreSQL
    refuses it, in a column or inside JSON) and n = 2**40 (beyond PostgreSQL's integer).
    Each used to fail its batch on every retry, and every row after it waited for ever."""
    store = Store(str(tmp_path / "l.db"))
    good = [make(i) for i in range(20)]
    bad = [Result(**{**make(20).to_dict(), "id": "", "device": {"name": "H100\u0000"}}),
           Result(**{**make(21).to_dict(), "id": "", "n": 2 ** 40}),
           Result(**{**make(22).to_dict(), "id": "", "error": "bad\u0000byte",
                     "status": "failed"})]
    # below the door (results.validate refuses them today): rows an older version stored
    store.insert_rows([record_row(r) for r in [*good[:7], *bad, *good[7:]]])
    res = CliRunner().invoke(app, ["upload", "--db", str(tmp_path / "l.db"), "--to", pg_url,
                                   "--tries", "1", "--batch-size", "4"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    last = [line for line in res.output.strip().splitlines()
            if not line.endswith(" ...")][-1]  # the last line but the progress note
    assert last.startswith("3 rows set aside in ") and "refused-upload-" in last
    with Store(pg_url) as shared:
        assert shared.ids() == {r.id for r in good}  # every other row went in
    files, lines = _refused_lines(tmp_path)
    assert len(files) == 1 and {x["row"]["id"] for x in lines} == {r.id for r in bad}
    reasons = {x["row"]["id"]: x["reason"] for x in lines}
    assert "NUL" in reasons[bad[0].id] and "integer range" in reasons[bad[1].id]
    assert "NUL" in reasons[bad[2].id]
    assert lines[0]["row"].keys() == make(0).to_dict().keys()  # whole records
    assert store.count() == 23  # the local table keeps them: the next upload tries again
    again = upload_store(store, pg_url)
    assert (again.new, again.already, again.refused) == (0, 20, 3)
    assert len(_refused_lines(tmp_path)[0]) == 2


@pytest.mark.postgres
def test_a_refusal_the_precheck_does_not_know_is_found_by_halving_the_batch(tmp_path, pg_url):
    """A created_at PostgreSQL cannot read as a time: the local table (SQLite) holds it, the
    check before sending does not look for it, the server refuses the batch; halving it finds
    the one row, and the other 15 of its batch go in."""
    store = Store(str(tmp_path / "l.db"))
    rows = [make(i) for i in range(16)]
    rows[11] = Result(**{**rows[11].to_dict(), "created_at": "the day before yesterday"})
    store.insert_rows([record_row(r) for r in rows])  # below the door, as an older version
    report = upload_store(store, pg_url, batch_size=16, retry=RetryPolicy(tries=1))
    assert (report.new, report.already, report.refused) == (15, 0, 1)
    assert "set aside in" in str(report) and "invalid input syntax" in report.refused_reason
    _, lines = _refused_lines(tmp_path)
    assert [x["row"]["id"] for x in lines] == [rows[11].id]
    with Store(pg_url) as shared:
        assert shared.count() == 15


@pytest.mark.postgres
def test_copy_text_format_round_trips_awkward_values(tmp_path, pg_url):
    """Tabs, newlines, backslashes and quotes in text and JSON, empty and null samples, a
    created_at without an offset (UTC): what goes in by COPY reads back as it was."""
    store = Store(str(tmp_path / "l.db"))
    odd = [make(0, run_id="tab\there"),
           Result(**{**make(1).to_dict(), "id": "", "error": 'line1\nline2\r\\end "q"',
                     "status": "failed", "correct": False, "samples_s": []}),
           Result(**{**make(2).to_dict(), "id": "", "params": {"a\\b": "c\td", "n": 3},
                     "samples_s": None, "created_at": "2026-05-06T07:08:09"}),
           Result(**{**make(3).to_dict(), "id": "", "samples_s": [1e-300, None, 2.5]})]
    store.insert_rows([record_row(r) for r in odd])  # below the door: no zone, a None sample
    assert upload_store(store, pg_url).new == 4
    with Store(pg_url) as shared:
        back = {r.id: r for r in shared.records()}
    for rec in store.records():
        want = rec.to_dict()
        if want["created_at"] == "2026-05-06T07:08:09":
            want["created_at"] = "2026-05-06T07:08:09.000+00:00"
        assert back[rec.id].to_dict() == want


def test_a_destination_without_a_scheme_is_refused_and_no_file_appears(local, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(UPLOAD_ENV, raising=False)
    res = runner.invoke(app, ["upload", "--to", "notaurl", "--db", local.url])
    assert res.exit_code == 2, res.output
    assert "not a database URL" in res.output and res.output.count("error:") == 1
    assert not (tmp_path / "notaurl").exists()
    monkeypatch.setenv(UPLOAD_ENV, "shared.db")
    res = runner.invoke(app, ["upload", "--db", local.url])
    assert res.exit_code == 2 and not (tmp_path / "shared.db").exists()


def test_the_upload_benchmarks_rows_pass_the_record_checks():
    """Its synthetic rows invented p20/p80 beside the samples; the door refuses such rows, and
    report, fleet and openmetrics would have skipped every one."""
    import random

    from results.upload_bench import synthetic_row
    from results.validate import problems

    rng = random.Random(7)
    assert all(problems(synthetic_row(i, 100, rng)) == [] for i in range(64))
