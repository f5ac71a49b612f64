"""The one spool (bench/spool.py), used by the runner and the collectives: rows appended as
they come, stored again idempotently at the end, kept in unstored-<run>.jsonl when the
database refuses them."""

from __future__ import annotations

import json

from bench import spool


# ---- the final pass over rank 0's spool -----------------------------------------------------
def _spooled(tmp_path, n):
    from results.schema import Result

    path = tmp_path / "rows.jsonl"
    rows = [Result(run_id="s", workload="allreduce", backend="gloo", dtype="fp32",
                   params={"op": "all_reduce", "bytes": 1024 * (i + 1)}, host="h",
                   device={"kind": "cpu"}) for i in range(n)]
    for r in rows:
        spool.append(path, r)
    with open(path, "a") as f:
        f.write('{"cut short by a ki')  # a kill mid-line: skipped
    return path, rows


def test_spool_is_stored_idempotently(tmp_path, db_url):
    from results.store import Store

    path, rows = _spooled(tmp_path, 3)
    with Store(db_url) as store:
        store.insert(rows[:1])  # the worker stored one before the database went away
    saved = spool.save(path, db_url, "s")
    assert (saved.rows, saved.stored, saved.kept, saved.message()) == (3, 3, None, None)
    with Store(db_url) as store:
        assert store.count() == 3
    assert spool.save(tmp_path / "none.jsonl", db_url, "s").rows == 0


def test_spool_kept_when_the_database_refuses(tmp_path, db_url, monkeypatch):
    import sqlite3

    from results.store import Store

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    Store(db_url).close()
    con = sqlite3.connect(db_url[len("sqlite:///"):])
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON results "
                "BEGIN SELECT RAISE(ABORT, 'no'); END")
    con.commit()
    con.close()
    path, rows = _spooled(tmp_path, 3)
    spool.mark_stored(path, [rows[0].id])  # what the worker managed before
    saved = spool.save(path, db_url, "s", retry_s=0)
    assert saved.rows == 3 and saved.stored == 1 and saved.error == "no"
    kept = tmp_path / "xdg" / "colossus-bench" / "unstored-s.jsonl"  # the runner's name too
    assert saved.kept == str(kept)
    assert len(spool.read_rows(saved.kept)) == 3
    assert saved.message().startswith("warning: 2 of 3 finished rows could not be stored")
    assert f"colossus-bench ingest {saved.kept} --db {db_url}" in saved.message()


def test_one_refused_row_costs_only_itself(tmp_path, db_url, monkeypatch):
    """The final pass inserts row by row: a row the door refuses (here a 0.0 s sample, as NCCL
    with one rank can time) is kept with the others, and every other row is stored."""
    from results.store import Store

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path, rows = _spooled(tmp_path, 3)
    bad = {**rows[1].to_dict(), "samples_s": [0.0, 1e-6], "median_s": 1e-6, "n": 2}
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    saved = spool.save(path, db_url, "s", retry_s=0)
    assert (saved.rows, saved.stored) == (3, 2) and "samples_s[0]" in saved.error
    with Store(db_url) as store:
        assert store.ids() == {rows[0].id, rows[2].id}
    assert len(spool.read_rows(saved.kept)) == 3  # all kept: ingest adds only the missing one
    assert saved.message().startswith("warning: 1 of 3 finished rows could not be stored")


def _count_inserts(monkeypatch) -> list[int]:
    """The number of rows of each Store.insert call (one transaction each), the real insert
    run all the same."""
    from results.store import Store

    sizes: list[int] = []
    real = Store.insert

    def counted(self, records, **kwargs):
        records = list(records)
        sizes.append(len(records))
        return real(self, records, **kwargs)

    monkeypatch.setattr(Store, "insert", counted)
    return sizes


def test_a_long_spool_is_stored_in_batches(tmp_path, db_url, monkeypatch):
    """Thousands of rows in a few transactions (BATCH_ROWS each), not one per row."""
    from results.store import Store

    path, rows = _spooled(tmp_path, 3000)
    sizes = _count_inserts(monkeypatch)
    saved = spool.save(path, db_url, "s")
    assert (saved.rows, saved.stored, saved.kept) == (3000, 3000, None)
    assert sizes == [spool.BATCH_ROWS] * (3000 // spool.BATCH_ROWS)
    with Store(db_url) as store:
        assert store.ids() == {r.id for r in rows}


def test_rows_rank_0_stored_are_not_sent_again(tmp_path, db_url, monkeypatch):
    from results.store import Store

    path, rows = _spooled(tmp_path, 1200)
    with Store(db_url) as store:
        store.insert(rows[:1000])  # as rank 0 does, row by row, noting each after its commit
    spool.mark_stored(path, [r.id for r in rows[:1000]])
    sizes = _count_inserts(monkeypatch)
    saved = spool.save(path, db_url, "s")
    assert (saved.rows, saved.stored, saved.kept) == (1200, 1200, None)
    assert sum(sizes) == 200 and len(sizes) == 1
    with Store(db_url) as store:
        assert store.count() == 1200


def test_a_refused_row_in_a_long_spool_costs_only_itself(tmp_path, db_url, monkeypatch):
    from results.store import Store

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path, rows = _spooled(tmp_path, 2000)
    lines = path.read_text().splitlines()
    bad = {**rows[1234].to_dict(), "samples_s": [0.0, 1e-6], "median_s": 1e-6, "n": 2}
    lines[1234] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    sizes = _count_inserts(monkeypatch)
    saved = spool.save(path, db_url, "s", retry_s=0)
    assert (saved.rows, saved.stored) == (2000, 1999) and "samples_s[0]" in saved.error
    assert len(sizes) <= 2000 // spool.BATCH_ROWS + 2 * 9  # the halving: a few more, not 2000
    with Store(db_url) as store:
        assert store.ids() == {r.id for r in rows} - {rows[1234].id}
    assert len(spool.read_rows(saved.kept)) == 2000


def test_one_unstored_row_is_said_in_the_singular(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path, rows = _spooled(tmp_path, 1)
    bad = {**rows[0].to_dict(), "samples_s": [0.0, 1e-6], "median_s": 1e-6, "n": 2}
    path.write_text(json.dumps(bad) + "\n")
    message = spool.save(path, db_url, "s", retry_s=0).message()
    assert message.startswith("warning: 1 of 1 finished row could not be stored"), message
    assert "; it is kept in" in message
