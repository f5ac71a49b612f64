"""`colossus-bench run`: exit status (0 ok/skipped, 1 a case failed, 2 bad input, 130 is in
test_cli), the time box (--budget), --list and --tune."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bench.runner as br
from bench.workloads import Check
from bench.workloads.membw import MemBandwidth
from cli import app
from results.store import Store

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
try:  # click < 8.2 mixes stderr into stdout unless told not to; 8.2 keeps them apart always
    apart = CliRunner(mix_stderr=False)
except TypeError:
    apart = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_failed_check_makes_run_exit_1(db_url, monkeypatch):
    monkeypatch.setattr(MemBandwidth, "check", lambda self, c, b, x, out: Check(False, 1.0, 0.0))
    res = cli("run", "--filter", "membw/*:torch", "--timing", "smoke", "--db", db_url)
    assert res.exit_code == 1, res.output
    df = Store(db_url).frame()
    assert len(df) == 2 and set(df.status) == {"failed"}  # stored all the same


def test_skipped_cases_are_not_failures(db_url, monkeypatch):
    from bench.workloads import Unsupported

    def refuse(self, case, device):
        raise Unsupported("not here")

    monkeypatch.setattr(MemBandwidth, "setup", refuse)
    res = cli("run", "--filter", "membw/*:torch", "--timing", "smoke", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert set(Store(db_url).frame().status) == {"skipped"}


@pytest.mark.parametrize("value", ["0", "-5", "nan", "soon", "inf", "-inf", "infinity"])
def test_bad_budget_is_refused_in_one_line(db_url, value):
    res = cli("run", "--budget", value, "--db", db_url)
    assert res.exit_code == 2
    assert len([line for line in res.output.splitlines() if line.strip()]) <= 8  # typer's box


def test_list_prints_pairs_and_the_estimate_and_runs_nothing(tmp_path):
    db = tmp_path / "never.db"
    res = cli("run", "--suite", "campaign", "--filter", "membw", "--list", "--db", db)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("membw/fp32/op=copy") and lines[0].endswith(" s")
    assert "case-backends of suite campaign" in lines[-1] and "estimated" in lines[-1]
    assert not db.exists()


def test_list_with_a_budget_marks_what_the_estimates_leave_out():
    from bench.budget import planned_within

    assert planned_within([1, 2, 3], None) == [True] * 3
    assert planned_within([4, 5, 2, 0.5], 10) == [True, True, False, False]  # none after
    res = apart.invoke(app, ["run", "--suite", "campaign", "--list", "--budget", "10", "--json"])
    assert res.exit_code == 0, res.output
    flags = [r["within_budget"] for r in json.loads(res.stdout)]
    assert flags[0] and not flags[-1] and flags == sorted(flags, reverse=True)
    assert f"the last {flags.count(False)} would be skipped" in res.stderr
    assert "within_budget" not in cli("run", "--list", "--json", "-k", "membw").output


def test_tune_sets_the_kernels_switch(monkeypatch):
    monkeypatch.delenv("COLOSSUS_TUNE", raising=False)
    res = cli("run", "--filter", "membw", "--list", "--tune")
    assert res.exit_code == 0, res.output
    assert os.environ.pop("COLOSSUS_TUNE") == "1"


def test_budget_rows_are_stored_as_skipped(db_url):
    res = cli("run", "--suite", "campaign", "--budget", "0.5", "--db", db_url)
    assert res.exit_code == 0, res.output
    df = Store(db_url).frame()
    skipped = df[df.error == "budget"]
    assert len(skipped) >= 1 and set(skipped.status) == {"skipped"}
    assert "over the 0.5 s budget" in res.output


@pytest.mark.slow
def test_campaign_with_a_30s_budget_on_cpu(tmp_path):
    """`run --suite campaign --budget 30` on CPU ends within about 30 s plus one case, with
    every row ok or skipped for the budget, the skipped ones the rest of the suite order. (The
    whole CPU campaign takes 30 to 60 s here depending on load, so whether any case is left out
    varies; test_budget_rows_are_stored_as_skipped and test_runner's budget test make sure.)"""
    db = tmp_path / "c.db"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cli", "run", "--suite", "campaign",
                           "--budget", "30", "--db", str(db)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    df = Store(str(db)).frame()
    assert len(df) == 23  # every case-backend of the CPU campaign has its row
    # in suite order (rows are stored as they exist: a skipped one before the cases checked
    # earlier and timed together at the end)
    from bench.device import detect_cpu
    from bench.suites import select, suite_cases

    cpu = detect_cpu()
    order = {f"{c.key}:{b}": i
             for i, (c, b) in enumerate(select(suite_cases("campaign", cpu), cpu, None))}
    at = [order[f"{w}/{d}/" + ",".join(f"{k}={v}" for k, v in p.items()) + f":{b}"]
          for w, d, p, b in zip(df.workload, df.dtype, df.params, df.backend)]
    df = df.iloc[sorted(range(len(df)), key=at.__getitem__)].reset_index(drop=True)
    ok = df.status == "ok"
    left_out = (df.status == "skipped") & (df.error == "budget")
    assert (ok | left_out).all() and ok.any()
    if left_out.any():
        first = int(left_out.to_numpy().argmax())
        assert left_out.iloc[first:].all()  # the rest, in priority order
    assert wall < 30 + 60  # 30 s, one case over, and the process start


def _refusing_db(tmp_path):
    """A real SQLite table that refuses every insert (as a database gone mid-run does)."""
    import sqlite3

    path = tmp_path / "refuses.db"
    Store(str(path)).close()
    con = sqlite3.connect(path)
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON results "
                "BEGIN SELECT RAISE(ABORT, 'gone'); END")
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def test_results_not_stored_make_run_exit_1_and_say_where_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    res = cli("run", "--filter", "membw/*:torch", "--timing", "smoke",
              "--db", _refusing_db(tmp_path))
    assert res.exit_code == 1, res.output
    assert "could not be stored" in res.output and "unstored-" in res.output
    assert "Traceback" not in res.output
    # said when it first happens too (each refused insert may wait out a lock), once
    said = [line for line in res.output.splitlines() if "refused a result" in line]
    assert len(said) == 1 and "gone" in said[0] and "the run goes on" in said[0]


def test_a_failed_upload_makes_run_exit_1_and_keeps_the_rows(tmp_path, db_url, monkeypatch):
    from results.upload import BACKOFF_ENV, TRIES_ENV

    monkeypatch.setenv(TRIES_ENV, "1")
    monkeypatch.setenv(BACKOFF_ENV, "0")
    target = _refusing_db(tmp_path)  # a real shared table that refuses the rows
    res = cli("run", "--filter", "membw/fp32/op=copy*:torch", "--timing", "smoke",
              "--db", db_url, "--upload", target)
    assert res.exit_code == 1, res.output
    assert "upload failed, results kept locally" in res.output
    assert len(Store(db_url).frame()) >= 1


def test_a_huge_budget_lists_with_a_short_duration():
    from bench.cli import _duration

    res = cli("run", "--filter", "membw", "--list", "--budget", "1e308")
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert "budget 1.16e+303 d" in last and len(last) < 300, last
    assert [_duration(s) for s in (0.4, 59.6, 187, 18180, 86400 * 2.5)] == [
        "0s", "1m00s", "3m07s", "5h03m", "2.5 d"]


def test_json_out_a_folder_is_refused_before_anything_runs(tmp_path):
    db = tmp_path / "never.db"
    res = cli("run", "--filter", "membw", "--json-out", tmp_path, "--db", db)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a folder" in lines[0], res.output
    assert not db.exists()
    res = cli("run", "--filter", "membw", "--json-out", tmp_path / "no" / "x.json", "--db", db)
    assert res.exit_code == 2 and "no folder" in res.output and not db.exists()


def test_json_out_is_written_whole_in_place(tmp_path, db_url):
    import json

    out = tmp_path / "rows.json"
    out.write_text("old")
    res = cli("run", "--filter", "membw/fp32/op=copy*:torch", "--timing", "smoke", "--db", db_url,
              "--json-out", out)
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert rows and rows[0]["workload"] == "membw"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_filter_that_matches_nothing_beside_one_that_does_warns(tmp_path):
    res = cli("run", "--list", "-k", "membw/fp32/op=copy", "-k", "nope", "--db",
              tmp_path / "never.db")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "nope" in line]
    assert warned == ["warning: filter 'nope' matches no case of suite quick on this device"]
    assert res.stdout.startswith("membw/fp32/op=copy") and "nope" in res.stderr
    res = cli("run", "--list", "-k", "nope", "-k", "nada")  # none matches: refused as before
    assert res.exit_code == 2 and "matches no case" in res.output


def test_an_interrupted_run_still_gives_the_finished_records_to_json_and_json_out(
        db_url, monkeypatch, tmp_path):
    real = br.run

    def interrupted_after_one(pairs, store, **kw):
        def then_stop(r):
            kw["on_result"](r)
            raise KeyboardInterrupt

        return real(pairs, store, **{**kw, "on_result": then_stop})

    monkeypatch.setattr(br, "run", interrupted_after_one)
    out = tmp_path / "rows.json"
    res = cli("run", "--filter", "membw/*:torch", "--timing", "smoke", "--db", db_url, "--json",
              "--json-out", out)
    assert res.exit_code == 130, res.output
    rows = json.loads(res.stdout)  # stdout holds only the JSON, whole
    assert isinstance(rows, list) and len(rows) == 1  # the one before the interrupt
    assert json.loads(out.read_text()) == rows


def test_a_sigterm_mid_run_keeps_the_finished_results_and_exits_143(db_url, monkeypatch):
    """timeout(1) and Slurm's time limit send SIGTERM, not Ctrl-C: it ended the run silently
    with 143 before; now it is answered as Ctrl-C is, and the handler is put back."""
    import os
    import signal

    real = br.run

    def terminated_after_one(pairs, store, **kw):
        def then_term(r):
            kw["on_result"](r)
            os.kill(os.getpid(), signal.SIGTERM)

        return real(pairs, store, **{**kw, "on_result": then_term})

    monkeypatch.setattr(br, "run", terminated_after_one)
    before = signal.getsignal(signal.SIGTERM)
    res = cli("run", "--filter", "membw/*:torch", "--timing", "smoke", "--db", db_url)
    assert res.exit_code == 143, res.output
    assert "terminated: finished results are stored" in res.output and "1 result" in res.output
    assert len(Store(db_url).frame()) == 1
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("url, message", [
    ("/tmp/notaurl.db", "is not a database URL"),
    ("mysql://u:secret@host/db", "only SQLite paths"),
    ("://nothing", "only SQLite paths"),
])
def test_a_bad_upload_url_is_refused_before_anything_runs(tmp_path, url, message):
    db = tmp_path / "never.db"
    res = cli("run", "--filter", "membw/fp32/op=copy*:torch", "--timing", "smoke",
              "--db", db, "--upload", url)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "--upload" in lines[0], res.output
    assert "secret" not in res.output
    assert not db.exists()  # nothing ran, nothing was stored


def test_counts_in_messages_agree_with_their_number(db_url):
    from results.words import are, counted, was

    assert [counted(n, "result") for n in (0, 1, 2)] == ["0 results", "1 result", "2 results"]
    assert counted(1, "visible GPU") == "1 visible GPU" and are(1) == "is" and are(3) == "are"
    assert (was(1), was(0), was(2)) == ("was", "were", "were")
    res = cli("run", "--filter", "membw/fp32/op=copy*:torch", "--timing", "smoke", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "suite quick: 1 case-backend |" in res.output, res.output
    assert ": 1 result stored in" in res.output, res.output


def test_an_interrupt_before_any_case_finished_prints_one_line_and_no_table(db_url, monkeypatch):
    def ctrl_c(self, case, device):  # Ctrl-C while the first case sets up
        raise KeyboardInterrupt

    monkeypatch.setattr(MemBandwidth, "setup", ctrl_c)
    res = apart.invoke(app, ["run", "--filter", "membw/*:torch", "--timing", "smoke",
                             "--db", db_url])
    assert res.exit_code == 130, res.output
    assert "workload" not in res.output and "┏" not in res.output, res.output  # no table
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "no case finished" in err[0], res.stderr
    assert len(Store(db_url).frame()) == 0


def test_a_term_of_a_comma_filter_that_matches_nothing_warns_too(tmp_path):
    """'membw,zzz' is split into terms (it matches nothing whole): 'zzz' is said, 'membw' runs."""
    res = cli("run", "--list", "-k", "membw,zzz", "--db", tmp_path / "never.db")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "zzz" in line]
    assert warned == ["warning: filter 'zzz' matches no case of suite quick on this device"]
    assert res.stdout.startswith("membw/")
    exact = cli("run", "--list", "-k", "membw/fp32/op=copy", "--db", tmp_path / "never.db")
    assert "warning" not in exact.output  # a value matched whole is never split
