"""The command line: the main job, its clear errors, export, ingest, and Ctrl-C / kill mid-run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from results.schema import SCHEMA_VERSION
from results.store import Store, meta_table

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
try:  # click < 8.2 mixes stderr into stdout unless told not to; 8.2 keeps them apart always
    apart = CliRunner(mix_stderr=False)
except TypeError:
    apart = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with rich's box borders and line wrapping undone, to look for a phrase in it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory):
    """One real CPU run of the membw torch cases."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'r.db'}"
    res = cli("run", "--suite", "quick", "--filter", "membw/*:torch", "--db", url,
              "--timing", "smoke")
    assert res.exit_code == 0, res.output
    return url


def test_run_stores_checked_membw_rows(filled_db):
    df = Store(filled_db).frame()
    assert len(df) == 2 and set(df.status) == {"ok"} and df.correct.all()
    assert (df.gbps > 0).all()
    assert all(t["source"] == "none" for t in df.telemetry)


@pytest.mark.parametrize(("args", "message"), [
    (("run", "--suite", "nope"), "'nope' is not one of 'quick'"),
    (("run", "--filter", "no-such-case"), "matches no case"),
    (("run", "--timing", "fast"), "'fast' is not one of 'gpu'"),
    (("run", "--json-out", "/no/such/folder/r.json"), "no folder /no/such/folder"),
    (("export", "--format", "xls"), "'xls' is not one of 'csv'"),
])
def test_user_mistakes_give_one_line_and_exit_2(args, message, db_url):
    res = cli(*args, "--db", db_url)
    assert res.exit_code == 2
    assert message in flat(res.output)
    assert "Traceback" not in res.output


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_json_out_where_no_file_can_be_made_is_refused_before_any_case(db_url):
    """sysfs refuses new files even to root, for whom os.access says yes: the check makes one,
    as the end of the run would (it ran every case, then exited 0 without the file)."""
    res = cli("run", "-k", "membw/*:torch", "--json-out", "/sys/o.json", "--db", db_url)
    assert res.exit_code == 2 and "--json-out /sys/o.json" in flat(res.output)
    assert "Traceback" not in res.output and Store(db_url).frame().empty


def test_unwritable_database_path(tmp_path):
    (tmp_path / "file").write_text("")
    res = cli("run", "--filter", "membw", "--db", tmp_path / "file" / "x.db")
    assert res.exit_code == 2 and "cannot create the database folder" in res.output


def test_newer_schema_database(db_url):
    Store(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(meta_table.update().values(value=str(SCHEMA_VERSION + 5)))
    engine.dispose()
    for args in (("run", "--filter", "membw"), ("export",)):
        res = cli(*args, "--db", db_url)
        assert res.exit_code == 2 and "upgrade colossus-bench" in res.output


def test_export_formats_and_jsonl_round_trip(filled_db, tmp_path):
    res = cli("export", "--format", "csv", "--db", filled_db)
    assert res.exit_code == 0 and "device_name" in res.output.splitlines()[0]
    out = tmp_path / "r.parquet"
    assert cli("export", "--format", "parquet", "--out", out, "--db", filled_db).exit_code == 0
    import pandas as pd

    assert len(pd.read_parquet(out)) == 2
    jl = tmp_path / "r.jsonl"
    assert cli("export", "--format", "jsonl", "--out", jl, "--db", filled_db).exit_code == 0
    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = cli("ingest", jl, "--db", other)
    assert res.exit_code == 0 and "2 new" in res.output
    res = cli("ingest", jl, "--db", other)  # again: nothing doubled
    assert "0 new, 2 already there" in res.output
    assert Store(other).ids() == Store(filled_db).ids()


def _pytest_benchmark_json(tmp_path, *extra):
    out = tmp_path / "bench.json"
    env = {**os.environ, "COLOSSUS_BENCH_TIMING": "smoke", "COLOSSUS_BENCH_FILTER": "membw"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
         f"--benchmark-json={out}", *extra], cwd=os.path.dirname(os.path.dirname(__file__)),
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_benchmark_suite_smoke_with_benchmark_disable():
    """CI's smoke run of the pytest-benchmark suite: every quick case checked, nothing timed by
    pytest-benchmark (--benchmark-disable)."""
    env = {**os.environ, "COLOSSUS_BENCH_SUITE": "quick"}
    env.pop("COLOSSUS_BENCH_FILTER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
         "--benchmark-disable"], cwd=os.path.dirname(os.path.dirname(__file__)), env=env,
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


@pytest.mark.slow
def test_pytest_benchmark_json_ingest(tmp_path):
    path = _pytest_benchmark_json(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["machine_info"]["colossus_device"]["kind"] in ("cpu", "cuda")
    b = doc["benchmarks"][0]
    rec = b["extra_info"]["record"]
    # pytest-benchmark's own statistics are the recipe's samples (device time on a GPU)
    assert b["stats"]["median"] == pytest.approx(rec["median_s"])
    assert b["extra_info"]["gbps"] > 0 and rec["correct"] is True
    url = f"sqlite:///{tmp_path / 'i.db'}"
    res = cli("ingest", path, "--db", url)
    assert res.exit_code == 0, res.output
    assert Store(url).count() == len(doc["benchmarks"]) == 4


@pytest.mark.parametrize(("content", "message"), [
    ('{"benchmarks": [{"name": "x", "stats": {', "not valid JSON"),
    ('{"machine_info": {}, "benchmarks": [{"name": "test_foo", "stats": {"median": 1}}]}',
     "no colossus-bench record in extra_info"),
    ('{"run_id": "r", "workload": "membw"}\n', "line 1: missing field"),
    ("", "empty file"),
])
def test_malformed_files_are_refused_whole(tmp_path, db_url, content, message):
    good = Store(db_url)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    res = cli("ingest", bad, "--db", db_url)
    assert res.exit_code == 2
    assert message in res.output and str(bad.name) in res.output
    assert good.count() == 0


def test_a_bad_row_after_good_ones_writes_nothing(filled_db, tmp_path, db_url):
    jl = tmp_path / "r.jsonl"
    cli("export", "--format", "jsonl", "--out", jl, "--db", filled_db)
    lines = jl.read_text().splitlines()
    jl.write_text("\n".join([*lines, '{"run_id": "x"}']) + "\n")
    res = cli("ingest", jl, "--db", db_url)
    assert res.exit_code == 2 and "line 3" in res.output
    assert Store(db_url).count() == 0


# membw first (fast rows), then the GEMM cases through the Triton interpreter (slow ones): the
# signal lands long before the run could finish, however quickly the first rows come
RACE_FILTERS = ("membw", "gemm")


def _start_run(db):
    args = [a for f in RACE_FILTERS for a in ("--filter", f)]
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", *args, "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(db, proc, n=1, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if Store(db, create=False).count() >= n:
                return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_or_crash_mid_run_keeps_finished_rows(tmp_path, sig):
    db = str(tmp_path / "r.db")
    proc = _start_run(db)
    try:
        assert _wait_for_rows(db, proc), "no row appeared"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    from bench.device import detect_cpu
    from bench.suites import select, suite_cases

    cpu = detect_cpu()
    total = len(select(suite_cases("quick", cpu), cpu, list(RACE_FILTERS)))
    kept = Store(db).count()
    assert total > 4 and 1 <= kept < total  # finished rows stayed; the run did not finish
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "finished results are stored" in err


SIGINT_AT_IMPORT = """\
import importlib.abc, os, signal, sys

class _CtrlC(importlib.abc.MetaPathFinder):  # Ctrl-C the moment a named module is imported
    def find_spec(self, name, path, target=None):
        if name == os.environ["SIGINT_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _CtrlC())
"""


@pytest.mark.parametrize("verb,at", [
    (("run", "-k", "membw/*:torch"), "sqlalchemy"),  # while the parts load: before any verb
    (("validate", "--json"), "results.reference"),   # inside a verb that does not answer it
])
def test_ctrl_c_while_loading_or_in_any_verb_is_one_line_and_exit_130(tmp_path, verb, at):
    """Whenever a Ctrl-C lands, one line that says so and exit 130: never a traceback from
    inside an import, never a silent 130 (typer's own answer)."""
    (tmp_path / "sitecustomize.py").write_text(SIGINT_AT_IMPORT)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}", "SIGINT_AT": at}
    proc = subprocess.run([sys.executable, "-m", "cli", *verb, "--db", str(tmp_path / "r.db")]
                          if verb[0] == "run" else [sys.executable, "-m", "cli", *verb],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip() == "interrupted" and proc.stdout == "", proc.stderr[-2000:]


def test_export_into_a_closed_pipe_is_quiet(filled_db):
    env = {**os.environ, "COLOSSUS_BENCH_DB": filled_db}
    proc = subprocess.run(f"{sys.executable} -m cli export --format jsonl | head -c 10",
                          shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith('{"id": "') and len(proc.stdout) == 10
    assert "Broken pipe" not in proc.stderr and "error" not in proc.stderr


@pytest.mark.parametrize("url", ["mysql://x@h/db", "postgresql://x@h:notaport/db"])
def test_unusable_database_urls_give_one_line(url):
    res = cli("export", "--db", url)
    assert res.exit_code == 2 and "cannot use database URL" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("verb", [("run", "-k", "membw/fp32/op=copy"), ("export",)])
def test_an_unsupported_database_scheme_is_one_line_naming_what_works(verb):
    res = cli(*verb, "--db", "mysql://x@127.0.0.1/db")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "only SQLite paths, sqlite:/// URLs and postgresql:// URLs are supported" in \
        res.output and "MySQLdb" not in res.output


def test_benchmark_file_whose_extra_info_is_not_an_object(tmp_path, db_url):
    bad = tmp_path / "other.json"
    bad.write_text('{"benchmarks": [{"name": "t", "stats": {}, "extra_info": ["x"]}]}')
    res = cli("ingest", bad, "--db", db_url)
    assert res.exit_code == 2 and "no colossus-bench record" in res.output


# ---- conventions every verb keeps ---------------------------------------------------------
VERBS = ("run", "info", "compare", "export", "ingest", "upload", "fleet", "allreduce",
         "estimate", "validate", "report")


def test_version_from_package_metadata():
    from cli import version

    res = cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"colossus-bench {version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*|0\+unknown", version())


@pytest.mark.parametrize("verb", VERBS)
def test_short_and_long_help_on_every_verb(verb):
    short, long = cli(verb, "-h"), cli(verb, "--help")
    assert short.exit_code == long.exit_code == 0
    assert short.output == long.output and "Usage" in short.output
    assert "…" not in short.output  # nothing cut off at 80 columns


def test_help_keeps_bracketed_text():
    """rich reads '[...]' in help strings as markup; defaults are given through show_default."""
    import typer

    text = flat(cli("upload", "-h").output)
    assert "COLOSSUS_BENCH_UPLOAD_TRIES, else" in text and "COLOSSUS_BENCH_UPLOAD_BACKOFF" in text
    for name, command in typer.main.get_command(app).commands.items():
        shown = flat(runner.invoke(app, [name, "-h"], env={"COLUMNS": "300"}).output)
        for param in command.params:
            for bracketed in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                assert bracketed in shown, f"{name} {param.name}: {bracketed} lost"


def test_choices_match_the_data_they_name():
    from bench.cli import Suite, Timing
    from bench.collectives.cli import Backend
    from bench.collectives.config import BACKENDS
    from bench.suites import SUITES
    from bench.timing import PRESETS
    from results.cli import Format
    from results.export import FORMATS

    names = lambda e: tuple(m.value for m in e)
    assert names(Suite) == tuple(SUITES) and names(Timing) == tuple(PRESETS)
    assert names(Format) == FORMATS and names(Backend) == BACKENDS
    # allreduce's --collective, -o and -d take nccl-tests' free-text spellings (comma lists,
    # `all`, binary names): tests/test_collectives_nccl.py checks their help against the data
    wide = runner.invoke(app, ["run", "-h"], env={"COLUMNS": "200"}).output
    assert "quick|standard|full|mamf" in wide and "gpu|cpu|smoke" in wide


def test_usage_lists_every_suite_run_accepts():
    from bench.suites import SUITES

    usage = (ROOT / "docs" / "USAGE.md").read_text()
    line = next(t for t in usage.splitlines() if t.startswith("colossus-bench run --suite"))
    assert line.split("#", 1)[1].split() == " | ".join(SUITES).split(), line


def test_no_arguments_print_the_help_once_and_exit_2():
    """`colossus-bench` alone is a usage error (exit 2) that shows the help, once, on stdout."""
    res = subprocess.run([sys.executable, "-m", "cli"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "100"})
    assert res.returncode == 2, res.stderr
    assert res.stdout.count("Usage:") == 1 and "Commands" in res.stdout, res.stdout
    assert "Traceback" not in res.stderr


def test_estimate_help_lists_presets():
    from reports.model.scaling import SCENARIOS

    text = flat(runner.invoke(app, ["estimate", "-h"], env={"COLUMNS": "200"}).output)
    assert all(name in text for name in SCENARIOS)


def test_run_list_with_exact_keys_and_repeated_filters():
    listing = lambda *a: apart.invoke(app, ["run", "--list", "--json", *a])
    res = listing("-k", "membw/*:torch", "-k", "attention")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["backend"] for r in rows if r["case"].startswith("membw")} == {"torch"}
    assert any(r["case"].startswith("attention") for r in rows)
    gemm = listing("-k", "gemm/bf16")
    key = json.loads(gemm.stdout)[0]["case"]
    assert "," in key  # a case key holds commas and is matched whole
    for term, n in ((f"{key}:torch", 1), (key, 2)):
        res = listing("-k", term)
        picked = json.loads(res.stdout)
        assert len(picked) == n and {p["case"] for p in picked} == {key}
    legacy = json.loads(listing("-k", "gemm/bf16,*:triton").stdout)
    assert {p["backend"] for p in legacy if not p["case"].startswith("gemm/bf16")} == {"triton"}


def test_run_json_flag_and_json_out(tmp_path):
    db, out = tmp_path / "r.db", tmp_path / "r.json"
    res = apart.invoke(app, ["run", "-k", "membw/fp32/op=copy", "--timing", "smoke",
                              "--db", str(db), "--json", "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)  # stdout holds only the JSON
    assert len(records) == 2 and json.loads(out.read_text()) == records
    assert res.stdout.startswith('[\n  {')  # indent 2, as every --json
    cmp = apart.invoke(app, ["compare", "--db", str(db), "--json"])
    assert cmp.exit_code == 0
    case = json.loads(cmp.stdout)["cases"][0]
    assert case["ours"]["backend"] == "triton" and case["baseline"]["backend"] == "torch"
    assert case["speedup"] == pytest.approx(case["baseline"]["median_s"]
                                            / case["ours"]["median_s"])
    assert "speedup" in flat(cli("compare", "--db", db).output)
    bad = cli("compare", "--db", db, "--run", "nope")
    assert bad.exit_code == 2 and "no run 'nope'" in bad.output


def test_info_lists_the_peak_table_with_sources():
    from results.peaks import PEAKS

    data = json.loads(apart.invoke(app, ["info", "--json"]).stdout)
    assert set(data["known_peaks"]) == set(PEAKS) and data["device"]["kind"] in ("cpu", "cuda")
    assert all(p["source"] for p in data["known_peaks"].values())
    text = flat(cli("info").output)
    assert "H200-SXM" in text and "datasheet" in text


def test_an_unexpected_error_is_one_line_and_exit_1(monkeypatch, capsys):
    import typer

    import cli as cli_module

    broken = typer.Typer()

    @broken.command()
    def boom():
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli_module, "app", broken)
    monkeypatch.setattr(sys, "argv", ["colossus-bench"])
    monkeypatch.delenv("COLOSSUS_BENCH_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "RuntimeError: disk on fire" in err and "COLOSSUS_BENCH_DEBUG=1" in err
    assert "Traceback" not in err and "second line" not in err
    monkeypatch.setenv("COLOSSUS_BENCH_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli_module.main()


def test_no_option_in_any_help_shows_a_python_type_for_a_flag_or_a_list():
    """Flags take no value and repeatable and text options name what they take: `--list`, not
    `--list <bool>`; `-k KEY`, not `-k <list[str]>`; `--out OUT`, not `--out <str>`."""
    from typer.main import get_command

    verbs = [None, *get_command(app).commands]
    for verb in verbs:
        res = runner.invoke(app, ([verb] if verb else []) + ["--help"],
                            env={"COLUMNS": "200"})
        assert res.exit_code == 0, (verb, res.output)
        for python_type in ("<bool>", "<list[str]>", "<str>"):
            assert python_type not in res.output, (verb, python_type, res.output)
    report_help = runner.invoke(app, ["report", "-h"], env={"COLUMNS": "200"}).output
    assert re.search(r"--out\s+-o\s+OUT\b", report_help), report_help
    assert "<full|quick>" in report_help  # choices keep theirs
    run_help = runner.invoke(app, ["run", "-h"], env={"COLUMNS": "200"}).output
    assert re.search(r"--filter\s+-k\s+KEY", run_help), run_help
    assert re.search(r"--list\s+print the cases", run_help), run_help


def test_a_text_option_is_told_by_either_typer():
    """typer 0.29 names a text option's type `str` (bare_type); click-based releases carry
    click's STRING (`text`) and have no bare_type, where calling it would break every help."""
    from types import SimpleNamespace

    from cli import takes_text

    assert takes_text(SimpleNamespace(bare_type=lambda: "str"))
    assert not takes_text(SimpleNamespace(bare_type=lambda: "int"))
    assert takes_text(SimpleNamespace(type=SimpleNamespace(name="text")))
    assert not takes_text(SimpleNamespace(type=SimpleNamespace(name="integer")))
    assert not takes_text(SimpleNamespace())


def test_every_verb_help_keeps_each_paragraph_on_one_line():
    """typer's rich help keeps a docstring's line breaks, so a sentence broke at the source's
    100 columns inside the 80-column box; the registered help joins each paragraph."""
    import cli as top

    assert [c.name for c in top.app.registered_commands] == list(top.VERBS)
    for cmd in top.app.registered_commands:
        assert all("\n" not in p for p in cmd.help.split("\n\n")), (cmd.name, cmd.help)
    text = runner.invoke(app, ["run", "-h"], env={"COLUMNS": "80"}).output
    assert "crashed or results were not stored" in flat(text)
    assert not any(line.rstrip(" │").endswith("or results") for line in text.splitlines())


def test_run_gives_the_runner_its_start_so_the_budget_covers_the_set_up(tmp_path, monkeypatch):
    """--budget counts from the verb's start: `run` hands the runner a start taken before it
    finds the device (and imports torch), not one the runner takes itself."""
    import bench.device
    import bench.runner

    seen: dict = {}
    real_run, real_detect = bench.runner.run, bench.device.detect

    def detect(*args, **kwargs):
        seen.setdefault("detect", time.monotonic())
        return real_detect(*args, **kwargs)

    def run(*args, **kwargs):
        seen["started"] = kwargs.get("started")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(bench.device, "detect", detect)
    monkeypatch.setattr(bench.runner, "run", run)
    before = time.monotonic()
    res = cli("run", "--suite", "quick", "--filter", "membw/*:torch", "--timing", "smoke",
              "--db", tmp_path / "r.db", "--budget", "60")
    assert res.exit_code == 0, res.output
    assert seen["started"] is not None and before <= seen["started"] <= seen["detect"]


@pytest.mark.parametrize("verb", ["run", "export"])
def test_an_output_file_that_is_the_database_is_refused_and_the_table_kept(tmp_path, verb):
    """--json-out / --out naming the SQLite file itself (by path, or a link to it) would replace
    the table with JSON or CSV: one line, exit 2, the table untouched."""
    db = tmp_path / "r.db"
    assert cli("run", "-k", "membw/*:torch", "--timing", "smoke", "--db", db).exit_code == 0
    before = db.read_bytes()
    (tmp_path / "link.db").symlink_to(db)
    for target in (db, tmp_path / "link.db"):
        args = (["run", "-k", "membw/*:torch", "--timing", "smoke", "--db", db, "--json-out",
                 target] if verb == "run" else ["export", "--db", db, "-o", target])
        res = apart.invoke(app, [str(a) for a in args])
        assert res.exit_code == 2, res.output
        assert "is the results database itself" in res.stderr
        assert db.read_bytes() == before
    fresh = tmp_path / "new.db"  # not there yet: run would create it, then overwrite it
    res = cli("run", "-k", "membw/*:torch", "--db", fresh, "--json-out", fresh)
    assert res.exit_code == 2 and not fresh.exists()


def test_run_upload_to_a_sqlite_target_that_cannot_be_one_is_refused_before_any_case(tmp_path):
    db = tmp_path / "r.db"
    (tmp_path / "text.txt").write_text("not a database\n")
    (tmp_path / "folder").mkdir()
    for url, said in ((f"sqlite:///{db}", "is the local table itself"),
                      ("sqlite:///:memory:", "in-memory database"),
                      (f"sqlite:///{tmp_path}/nodir/x.db", "no folder"),
                      (f"sqlite:///{tmp_path}/text.txt", "file is not a database"),
                      (f"sqlite:///{tmp_path}/folder", "is a folder")):
        res = apart.invoke(app, ["run", "-k", "membw/*:torch", "--timing", "smoke", "--db",
                                 str(db), "--upload", url])
        assert res.exit_code == 2, (url, res.output)
        assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "device:" not in res.stdout  # no case ran
    assert not db.exists() and not (tmp_path / "nodir").exists()


def test_records_out_says_when_the_file_could_not_be_written(tmp_path):
    from bench.cli import _records_out

    assert _records_out([], tmp_path / "r.json", False, "db") is True
    assert _records_out([], tmp_path / "gone" / "r.json", False, "db") is False  # run exits 1
