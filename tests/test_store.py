"""The results table on SQLite and PostgreSQL: creation on first use, idempotent inserts, schema
versions (refusing a newer table, migrating an older one in one transaction), concurrent openers,
and clear errors for unreachable servers and wrong passwords."""

import threading

import pytest
import sqlalchemy as sa

import results.store as store_mod
from results.schema import SCHEMA_VERSION, Result, finite
from results.store import (
    COLUMNS,
    SchemaTooNew,
    Store,
    StoreError,
    StoreUnreachable,
    meta_table,
    resolve_url,
    transient,
)
from results.tables import V1_COLUMNS, record_row, v1_table
from tests.pg import free_port


def make(i=0, **kw):
    base = dict(run_id="run1", workload="gemm", backend="triton", dtype="bf16",
                params={"m": 128 * (i + 1), "n": 256, "k": 64, "layout": "nt"}, host="h",
                device={"name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM", "uuid": "GPU-1"},
                median_s=1e-3, samples_s=[1e-3, 1.1e-3], tflops=500.0, correct=True,
                telemetry={"source": "nvml", "power_w_mean": 650.5, "throttle_reasons": []})
    base.update(kw)
    return Result(**base)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, db_url):
    """The same tests on a fresh SQLite file and a fresh PostgreSQL database."""
    return db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _columns(url, table="results"):
    engine = sa.create_engine(resolve_url(url))
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _set_version(url, version):
    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        conn.execute(meta_table.update().values(value=str(version)))
    engine.dispose()


def test_table_is_created_on_first_use_and_rows_round_trip(url):
    rec = make(telemetry={"source": "nvml", "power_w_mean": 650.5, "throttle_reasons": ["x"]})
    with Store(url) as store:
        assert store.count() == 0 and store.schema_version() == SCHEMA_VERSION
        assert store.insert([rec]) == 1
        [back] = store.records()
        assert back == rec
        df = store.frame()
        assert df.loc[0, "params"] == rec.params
        assert df.loc[0, "telemetry"]["throttle_reasons"] == ["x"]


def test_insert_is_idempotent(url):
    recs = [make(i) for i in range(6)]
    with Store(url) as store:
        assert store.insert(recs[:4]) == 4
        assert store.insert(reversed(recs)) == 2
        assert store.insert(recs) == 0
        assert store.count() == 6 and store.ids() == {r.id for r in recs}


def test_newer_table_is_refused_with_a_clear_error(url):
    Store(url).close()
    _set_version(url, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        Store(url)


def test_migration_to_a_new_version_is_applied_once(url, monkeypatch):
    """A v1 table with rows; a test-only v2 adds a column. The v2 client migrates it, rows stay,
    reopening changes nothing, and the v1 client then refuses the v2 table."""
    with Store(url) as store:
        store.insert([make(0), make(1)])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_mod.MIGRATIONS, SCHEMA_VERSION + 1,
                        ["ALTER TABLE results ADD COLUMN note TEXT"])
    with Store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION + 1
        assert store.count() == 2
    assert "note" in _columns(url)
    Store(url).close()  # already migrated: no second ALTER (it would fail: column exists)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION)
    with pytest.raises(SchemaTooNew):
        Store(url)


def test_a_failed_migration_leaves_the_table_unchanged(url, monkeypatch):
    Store(url).close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_mod.MIGRATIONS, SCHEMA_VERSION + 1,
                        ["ALTER TABLE results ADD COLUMN note TEXT", "ALTER TABLE nope ADD x INT"])
    with pytest.raises(StoreError, match="migration to schema version .* failed.*unchanged"):
        Store(url)
    assert "note" not in _columns(url)  # the first statement was rolled back with the second
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION)
    with Store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION


def test_a_missing_migration_is_a_clear_error(url, monkeypatch):
    Store(url).close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="no migration to schema version"):
        Store(url)


# What 4e32d7e's additive schema 2 ran on a version 1 table (its MIGRATIONS[2], verbatim).
ADDITIVE_DDL = [f"ALTER TABLE results ADD COLUMN {c}" for c in (
    "compile_s FLOAT", "flops FLOAT", "bytes FLOAT", "shape VARCHAR(128)")]
V1_NAMES = {name for name, *_ in V1_COLUMNS}


def _v1_table_with_rows(url, recs, *, version_row=True, additive=False):
    """A table as colossus-bench with schema version 1 wrote it: one `results` table with
    version 1's columns (V1_COLUMNS, from its code; not today's fields), JSON columns,
    created_at as text. additive=True: as 4e32d7e's additive schema 2 left it: that table with
    compile_s, flops, bytes and shape added by ALTER TABLE, and "2" in colossus_meta."""
    v1 = v1_table()
    table = v1_table(additive=True) if additive else v1
    version = "2" if additive else "1"
    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        v1.metadata.create_all(conn)
        for stmt in ADDITIVE_DDL if additive else []:
            conn.execute(sa.text(stmt))
        if version_row:
            meta_table.create(conn)
            conn.execute(meta_table.insert().values(key="schema_version", value=version))
        rows = [{**finite(r.to_dict()), "schema_version": int(version)} for r in recs]
        conn.execute(table.insert(), [{c.name: r[c.name] for c in table.columns} for r in rows])
    engine.dispose()


def test_the_version_1_fixture_has_version_1s_columns_only(url):
    """The fixture is the table colossus-bench 1 wrote, not today's fields under old types."""
    _v1_table_with_rows(url, [make(0)])
    assert _columns(url) == V1_NAMES and len(V1_NAMES) == 31
    assert not {"compile_s", "flops", "bytes", "shape"} & _columns(url)


def test_a_version_1_table_with_rows_is_migrated_and_reads_back_the_same(url):
    recs = [make(i, samples_s=[1e-3 * (i + 1), None, 2.5e-3], created_at=f"2026-01-0{i + 1}"
                 f"T10:00:00.{i:03d}+00:00", software={"torch": "2.11.0", "i": i % 2},
                 device={"name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i % 3}"})
            for i in range(7)]
    recs.append(make(9, samples_s=[], n=3, error="x", status="failed", correct=False))
    _v1_table_with_rows(url, recs)
    with Store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION == 2
        back = store.records()
        df = store.frame()
    want = [Result(**{**r.to_dict(), "schema_version": 1}) for r in recs]
    assert sorted(back, key=lambda r: r.id) == sorted(want, key=lambda r: r.id)
    assert list(df.columns) == COLUMNS and len(df) == 8
    assert {"device_key", "software_key", "samples_s"} <= _columns(url)
    assert "device" not in _columns(url)
    assert len(_table_rows(url, "devices")) == 4 and len(_table_rows(url, "software")) == 3
    Store(url).close()  # migrated once: reopening changes nothing
    with Store(url) as store:
        assert store.count() == 8


def test_a_table_without_a_version_row_is_taken_as_version_1(url):
    """A "v0" table (results, no colossus_meta): read as the first schema and migrated."""
    _v1_table_with_rows(url, [make(0)], version_row=False)
    with Store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.count() == 1
        assert store.records()[0].params == make(0).params
    assert "device_key" in _columns(url)


def test_the_additive_schema_2_table_is_migrated_with_its_four_fields(url):
    """4e32d7e wrote "2" but kept version 1's one table: migrated, the four fields kept."""
    recs = [make(i, compile_s=0.5 * i, flops=2.0e9 * (i + 1), bytes=3.0e6, shape=f"{i}x8 nt",
                 schema_version=2) for i in range(3)] + [make(5, schema_version=2)]
    _v1_table_with_rows(url, recs, additive=True)
    assert _columns(url) == V1_NAMES | {"compile_s", "flops", "bytes", "shape"}
    with pytest.raises(StoreError, match="a verb that writes .* migrates it"):
        Store(url, create=False)
    with Store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert sorted(store.records(), key=lambda r: r.id) == sorted(recs, key=lambda r: r.id)
    assert "device_key" in _columns(url) and "device" not in _columns(url)
    with Store(url, create=False) as store:  # readers use it now
        assert store.count() == 4


def test_a_failed_version_1_migration_leaves_the_table_unchanged(url):
    """A version 1 table without `host` (NOT NULL now): the copy fails, and the renames, new
    tables and copied rows are rolled back with it."""
    _v1_table_with_rows(url, [make(i) for i in range(3)])
    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE results DROP COLUMN host"))
    engine.dispose()
    with pytest.raises(StoreError, match="migration to schema version 2 failed .*unchanged"):
        Store(url)
    assert _columns(url) == V1_NAMES - {"host"} and len(_table_rows(url, "results")) == 3
    assert _table_rows(url, "colossus_meta") == [("schema_version", "1")]
    engine = sa.create_engine(resolve_url(url))
    assert set(sa.inspect(engine).get_table_names()) == {"results", "colossus_meta"}
    engine.dispose()


def test_a_version_1_table_with_an_unknown_column_is_not_migrated(url):
    """A column neither version 1 nor the additive schema 2 had would go with the old table:
    the migration refuses, and everything stays."""
    _v1_table_with_rows(url, [make(i) for i in range(2)])
    engine = sa.create_engine(resolve_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE results ADD COLUMN site_note VARCHAR(40)"))
    engine.dispose()
    with pytest.raises(StoreError, match="columns this version does not know .site_note.; "
                       "nothing is dropped.*unchanged"):
        Store(url)
    assert _columns(url) == V1_NAMES | {"site_note"} and len(_table_rows(url, "results")) == 2
    assert _table_rows(url, "colossus_meta") == [("schema_version", "1")]


def test_an_unsupported_database_is_one_clear_line():
    with pytest.raises(StoreError, match="cannot use database URL mysql://x@127.0.0.1/db: only "
                       "SQLite paths, sqlite:/// URLs and postgresql:// URLs are supported$"):
        Store("mysql://x@127.0.0.1/db")


def _table_rows(url, table):
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(f"SELECT * FROM {table}"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_stores_created_at_as_timestamptz_and_samples_packed(pg_url):
    rec = make(created_at="2026-03-04T05:06:07.089+00:00", samples_s=[1.5, float("nan"), 2.0])
    with Store(pg_url) as store:
        store.insert_rows([record_row(rec)])  # below the door, which refuses a NaN sample
        [back] = store.records()
    assert back.created_at == rec.created_at and back.samples_s == [1.5, None, 2.0]
    engine = sa.create_engine(resolve_url(pg_url))
    with engine.connect() as conn:
        types = dict(conn.exec_driver_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'results'").all())
    engine.dispose()
    assert types["created_at"] == "timestamp with time zone" and types["samples_s"] == "bytea"


def test_the_table_follows_the_record_declaration():
    """One declaration: every record field is a column (or a key into its own table), with the
    declared width, and the record view gives every field back by name."""
    from results.schema import FIELDS, MAX_LENGTHS
    from results.tables import OWN_TABLES, records, result_rows

    assert [c.name for c in records.columns] == COLUMNS
    assert sorted(COLUMNS) == sorted(f.name for f in FIELDS)
    assert COLUMNS[:5] == ["id", "run_id", "created_at", "schema_version", "workload"]
    for f in FIELDS:
        name = f"{f.name}_key" if f.name in OWN_TABLES else f.name
        assert result_rows.c[name].nullable is not f.not_null
    for name, width in MAX_LENGTHS.items():
        assert getattr(result_rows.c[name].type, "length", None) in (width, None)
    assert result_rows.c.run_id.type.length == 64 and result_rows.c.n.type.python_type is int


@pytest.mark.postgres
def test_concurrent_openers_create_the_table_once(pg_url):
    errors = []

    def open_and_insert(i):
        try:
            with Store(pg_url) as store:
                store.insert([make(j) for j in range(i, i + 5)])
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=open_and_insert, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(pg_url) as store:
        assert store.count() == 12 and store.schema_version() == SCHEMA_VERSION


@pytest.mark.postgres
def test_concurrent_openers_of_a_version_1_table_migrate_it_once(pg_url):
    recs = [make(i) for i in range(50)]
    _v1_table_with_rows(pg_url, recs)
    errors, counts = [], []

    def open_and_count():
        try:
            with Store(pg_url) as store:
                counts.append(store.count())
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=open_and_count) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and counts == [50] * 6
    with Store(pg_url) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.ids() == {r.id for r in recs}


def test_reading_a_missing_sqlite_file_does_not_create_it(tmp_path):
    with pytest.raises(StoreError, match="no database at"):
        Store(str(tmp_path / "none.db"), create=False)
    assert not (tmp_path / "none.db").exists()


@pytest.mark.postgres
def test_unreachable_server_and_wrong_password_are_told_apart(pg_server):
    down = f"postgresql://bench:hunter2-secret@127.0.0.1:{free_port()}/x"
    with pytest.raises(StoreUnreachable) as e:
        Store(down)
    assert "hunter2-secret" not in str(e.value) and "bench:***@" in str(e.value)
    assert transient(e.value)
    wrong = pg_server.url().replace(pg_server.password, "wrong-password-xyz")
    with pytest.raises(StoreError, match="authentication failed") as e:
        Store(wrong)
    assert not isinstance(e.value, StoreUnreachable)
    assert "wrong-password-xyz" not in str(e.value)


def test_transient_classification():
    assert not transient(ValueError("x"))
    orig = type("E", (Exception,), {"sqlstate": "40P01"})("deadlock detected")
    assert transient(sa.exc.OperationalError("stmt", {}, orig))
    orig = type("E", (Exception,), {"sqlstate": "42601"})("syntax error")
    assert not transient(sa.exc.ProgrammingError("stmt", {}, orig))
