"""`colossus-bench ingest` into SQLite and PostgreSQL: a malformed file (truncated JSON, another
tool's pytest-benchmark file, a row with a missing field) is refused with the file and row named,
and nothing from it is written, while the good files of the same command are loaded."""

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from results.ingest import IngestError, ingest, load_file
from results.schema import Result
from results.store import Store, resolve_url

runner = CliRunner()


def rec(i, **kw):
    base = dict(run_id="r1", workload="membw", backend="torch", dtype="fp32",
                params={"op": "copy", "bytes": 4096 * (i + 1)}, host="node1",
                device={"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1"}, median_s=1e-3,
                gbps=8.2, correct=True)
    return Result(**{**base, **kw})


def pytest_benchmark_doc(records):
    """A pytest-benchmark --benchmark-json document as bench/benchmarks writes it."""
    return {"machine_info": {"node": "node1"}, "commit_info": {}, "version": "5.1.0",
            "benchmarks": [{"name": f"test_case[{i}]", "fullname": f"bench/x.py::test_case[{i}]",
                            "stats": {"median": r.get("median_s")},
                            "extra_info": {"record": r}} for i, r in enumerate(records)]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, db_url):
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _missing(field):
    row = rec(1).to_dict()
    del row[field]
    return row


BAD_FILES = {
    "truncated.json": (json.dumps(pytest_benchmark_doc([rec(0).to_dict()]))[:-40],
                       ["truncated.json", "not valid JSON"]),
    "other-tool.json": (json.dumps({"machine_info": {}, "benchmarks": [
        {"name": "test_sort", "fullname": "tests/test_sort.py::test_sort",
         "stats": {"median": 0.1}, "extra_info": {}}]}),
        ["other-tool.json", "benchmark 1 (tests/test_sort.py::test_sort)",
         "no colossus-bench record"]),
    "missing-field.jsonl": ("\n".join(json.dumps(r) for r in
                                      [rec(0).to_dict(), _missing("workload")]) + "\n",
                            ["missing-field.jsonl", "line 2", "missing field(s) ['workload']"]),
    "missing-in-benchmark.json": (json.dumps(pytest_benchmark_doc(
        [rec(0).to_dict(), rec(2).to_dict(), _missing("device")])),
        ["missing-in-benchmark.json", "benchmark 3", "missing field(s) ['device']"]),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_malformed_file_is_refused_whole_and_named(url, tmp_path, name):
    content, expected = BAD_FILES[name]
    bad = tmp_path / name
    bad.write_text(content)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(rec(i + 10).to_dict()) for i in range(3)) + "\n")
    Store(url).close()
    res = runner.invoke(app, ["ingest", str(bad), str(good), "--db", url])
    assert res.exit_code == 2
    for text in expected:
        assert text in res.output
    assert "nothing from this file was written" in res.output
    assert "good.jsonl: 3 rows, 3 new" in res.output
    with Store(url) as store:  # only the good file's rows: none of the bad file's valid rows
        assert store.ids() == {rec(i + 10).id for i in range(3)}


def test_good_pytest_benchmark_file_loads_and_reloading_adds_nothing(url, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(pytest_benchmark_doc([rec(i).to_dict() for i in range(4)])))
    res = runner.invoke(app, ["ingest", str(path), "--db", url])
    assert res.exit_code == 0 and "4 rows, 4 new, 0 already there" in res.output
    res = runner.invoke(app, ["ingest", str(path), "--db", url])
    assert res.exit_code == 0 and "4 rows, 0 new, 4 already there" in res.output


def test_a_row_postgresql_would_refuse_is_refused_at_the_door(url, tmp_path):
    """A NUL character in a JSON string (SQLite takes it, PostgreSQL's JSONB refuses it
    mid-insert) and an n beyond PostgreSQL's integer: refused before any database, on either,
    naming the line, field and value; the rows before it are not written."""
    for i, bad in enumerate([rec(2, device={"name": "H100\u0000", "uuid": "GPU-1"}),
                             rec(2, n=2**40)]):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text("\n".join(json.dumps(r.to_dict()) for r in [rec(0), rec(1), bad]) + "\n")
        with Store(url) as store:
            with pytest.raises(IngestError, match="line 3: field '(device.name|n)' = "):
                ingest(path, store)
            assert store.count() == 0


def _refuse_host(url, host):
    """A constraint the door does not know: the database refuses the row mid-insert."""
    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE results ADD CONSTRAINT no_{host} "
                             f"CHECK (host <> '{host}')"))
    engine.dispose()


@pytest.mark.postgres
def test_a_row_the_database_refuses_rolls_back_the_whole_file(pg_url, tmp_path):
    """Valid records, but the third is one the database refuses mid-insert: the rows before it
    are rolled back with it."""
    Store(pg_url).close()
    _refuse_host(pg_url, "refused")
    path = tmp_path / "refused.jsonl"
    rows = [rec(0), rec(1), rec(2, host="refused")]
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in rows) + "\n")
    with Store(pg_url) as store:
        with pytest.raises(sa.exc.DBAPIError, match="no_refused"):
            ingest(path, store)
        assert store.count() == 0


@pytest.mark.postgres
def test_cli_names_a_refused_row_in_one_line_and_writes_nothing(pg_url, tmp_path):
    Store(pg_url).close()
    _refuse_host(pg_url, "refused")
    path = tmp_path / "refused.jsonl"
    rows = [rec(0), rec(1, host="refused")]
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in rows) + "\n")
    res = runner.invoke(app, ["ingest", str(path), "--db", pg_url])
    assert res.exit_code == 2
    assert "the database refused a row" in res.output and "refused.jsonl" in res.output
    assert "Traceback" not in res.output
    assert Store(pg_url).count() == 0


def test_over_long_fields_are_refused_before_any_database(db_url, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(rec(0, run_id="r" * 80).to_dict()) + "\n")
    res = runner.invoke(app, ["ingest", str(path), "--db", db_url])
    assert res.exit_code == 2
    assert "'run_id' is 80 characters, longer than the table's 64" in res.output


def test_a_json_array_of_records_as_run_json_out_writes_it_loads(db_url, tmp_path):
    """`run --json-out` writes a pretty-printed top-level array (bench/cli.py); ingest reads it."""
    f = tmp_path / "one.json"
    f.write_text(json.dumps([rec(i).to_dict() for i in range(3)], indent=2) + "\n")
    res = runner.invoke(app, ["ingest", str(f), "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "3 rows, 3 new" in res.output
    with Store(db_url) as store:
        assert store.ids() == {rec(i).id for i in range(3)}
    pretty = tmp_path / "pretty-record.json"  # one pretty-printed record
    pretty.write_text(json.dumps(rec(7).to_dict(), indent=2))
    assert len(load_file(pretty)) == 1


def test_a_bad_record_in_a_json_array_refuses_the_whole_file(db_url, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([rec(0).to_dict(), _missing("workload")], indent=2))
    res = runner.invoke(app, ["ingest", str(f), "--db", db_url])
    assert res.exit_code == 2
    assert "bad.json: record 2" in res.output and "missing field(s) ['workload']" in res.output
    assert "Traceback" not in res.output
    with Store(db_url) as store:
        assert store.ids() == set()


def test_a_pretty_printed_object_of_another_kind_names_the_formats(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"name": "x", "items": [1, 2]}, indent=2))
    with pytest.raises(IngestError) as e:
        load_file(f)
    assert "not a results record" in str(e.value) and "JSON array of records" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_real_run_json_out_file_ingests_into_another_table(tmp_path):
    out, first, other = tmp_path / "one.json", tmp_path / "r.db", tmp_path / "other.db"
    res = runner.invoke(app, ["run", "-k", "membw/fp32/op=copy", "--timing", "smoke", "--db",
                              str(first), "--json-out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("[\n")
    res = runner.invoke(app, ["ingest", str(out), "--db", str(other)])
    assert res.exit_code == 0, res.output
    with Store(str(first)) as a, Store(str(other)) as b:
        assert a.ids() == b.ids() and len(b.ids()) == 2


def test_two_different_records_of_one_result_refuse_the_file(db_url, tmp_path):
    """The table keeps the first of an id: the second used to be dropped as 'already there'."""
    a = rec(0).to_dict()
    b = dict(a, median_s=a["median_s"] * 2)
    f = tmp_path / "two.jsonl"
    f.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n")
    res = runner.invoke(app, ["ingest", str(f), "--db", db_url])
    assert res.exit_code == 2 and "records 1 and 2 are one result" in " ".join(res.output.split())
    with Store(db_url) as store:
        assert store.ids() == set()
    f.write_text(json.dumps(a) + "\n" + json.dumps(a) + "\n")  # the same row twice is fine
    res = runner.invoke(app, ["ingest", str(f), "--db", db_url])
    assert res.exit_code == 0 and "2 rows, 1 new" in res.output


def test_a_truncated_one_line_file_names_its_line(tmp_path):
    f = tmp_path / "cut.jsonl"
    f.write_text(json.dumps(rec(0).to_dict())[:-20] + "\n")
    with pytest.raises(IngestError, match=r"cut.jsonl: not valid JSON \(line 1: "):
        load_file(f)
