"""Upload benchmark: `python -m results.upload_bench [--url URL] [--json]`.

(a) throughput: N synthetic rows in a local SQLite table uploaded in batches into an empty
    PostgreSQL table (rows/s, MB/s), then uploaded again (all already there).
(b) concurrency: U uploader processes, T rows in all with deliberate overlaps (uploader i sends
    a window of T/U consecutive rows starting at i * step, step < T/U, so neighbours share rows),
    all released at once by a barrier. The table must end with exactly the distinct rows, their
    `new` counts must add up to that, and running every uploader again must add none.

Without --url a private PostgreSQL server is started (results/pgserver.py; as root it runs the
server as the `postgres` user), with fsync on, as a real server would run.
With --url each phase works in a fresh schema that it drops at the end, so any database the
role may create schemas in will do; its other tables are not touched.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from results.pgserver import TempPostgres
from results.schema import SCHEMA_VERSION, result_id
from results.store import Store, redact, resolve_url
from results.tables import OWN_TABLES
from results.upload import DEFAULT_BATCH, RetryPolicy, upload_store

# A realistic GPU record: an H100 GEMM with NVML telemetry. Sample counts vary with the kernel's
# time (the GPU timing preset takes up to 1,000 within a 1 s budget); 100 is a mid-size row.
DEFAULT_SAMPLES = 100
_DEVICE = {"name": "NVIDIA H100 80GB HBM3", "kind": "cuda", "model": "H100-SXM", "cc": "9.0",
           "sm_count": 132, "memory_bytes": 85_520_809_984, "driver": "550.54.15",
           "cuda": "12.4"}
_SOFTWARE = {"python": "3.12.3", "torch": "2.11.0", "triton": "3.6.0",
             "colossus_bench": "0.1.0", "git_sha": "0123456789abcdef", "git_dirty": False}


def _case(i: int) -> tuple[str, dict]:
    return f"bench-{i // 64:06d}", {"m": 4096 + i, "n": 8192, "k": 8192, "layout": "nt"}


def row_id(i: int) -> str:
    run_id, params = _case(i)
    return result_id(run_id, "gemm", "triton", "bf16", params, 0)


def synthetic_row(i: int, samples: int, rng: random.Random) -> dict:
    """Row i, in table form: 64 rows per run, 64 devices on 8 hosts."""
    run_id, params = _case(i)
    times = [1.5e-3 * (1 + 0.02 * rng.random()) for _ in range(samples)]
    ordered = sorted(times) or [1.5e-3]
    med = ordered[len(ordered) // 2]
    # the summary from the samples themselves, as a real row's (results/validate.py checks)
    p20, p80 = ordered[int(0.2 * (len(ordered) - 1))], ordered[int(0.8 * (len(ordered) - 1))]
    return {
        "id": row_id(i), "run_id": run_id,
        "created_at": f"2026-01-01T00:00:{i % 60:02d}.000+00:00",
        "schema_version": SCHEMA_VERSION, "workload": "gemm", "backend": "triton",
        "dtype": "bf16", "params": params, "host": f"node{i % 8:03d}",
        "device": {**_DEVICE, "uuid": f"GPU-{i % 64:08d}"}, "world_size": 1, "rank": 0,
        "software": _SOFTWARE, "median_s": med, "p20_s": p20, "p80_s": p80,
        "mean_s": sum(ordered) / len(ordered), "stdev_s": med * 0.01, "n": samples,
        "samples_s": times,
        "tflops": 2 * params["m"] * 8192 * 8192 / med / 1e12, "gbps": None, "algbw_gbps": None,
        "busbw_gbps": None, "peak_fraction": 0.7, "correct": True, "max_rel_error": 1e-3,
        "tolerance": 1e-2,
        "telemetry": {"source": "nvml", "power_w_mean": 650.0, "power_w_max": 700.0,
                      "energy_j": 650.0, "sm_clock_mhz_mean": 1980.0, "sm_clock_mhz_min": 1950.0,
                      "mem_clock_mhz": 2619.0, "temp_c_max": 70.0, "throttle_reasons": [],
                      "samples": 50},
        "status": "ok", "error": None}


def make_local(path: Path, n: int, samples: int, seed: int = 0) -> Store:
    store = Store(str(path))
    rng = random.Random(seed)
    for start in range(0, n, 5000):
        stop = min(n, start + 5000)
        store.insert_rows([synthetic_row(i, samples, rng) for i in range(start, stop)])
    return store


def copy_subset(master: Path, dest: Path, ids: list[str]) -> None:
    """A local table holding the master's rows with these ids (SQLite to SQLite, no Python)."""
    Store(str(dest)).close()  # create the schema
    with sqlite3.connect(dest) as conn:
        conn.execute("ATTACH DATABASE ? AS m", (str(master),))
        conn.execute("CREATE TEMP TABLE want (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO want VALUES (?)", [(i,) for i in ids])
        conn.execute("INSERT INTO results SELECT * FROM m.results WHERE id IN "
                     "(SELECT id FROM want)")
        for table in OWN_TABLES.values():  # the few device and software values, all of them
            conn.execute(f"INSERT INTO {table.name} SELECT * FROM m.{table.name}")
    conn.close()


def payload_mb(store: Store) -> float:
    """Size of the rows' JSON text and packed samples, about the volume an upload moves (MB)."""
    lengths = " + ".join(f"coalesce(length({c}), 0)" for c in ("params", "telemetry"))
    with store.engine.connect() as conn:
        total = conn.exec_driver_sql(f"SELECT sum({lengths} + coalesce(length(samples_s), 0)) "
                                     "FROM results").scalar() or 0
    return (total + store.count() * 300) / 1e6  # + ~300 B of scalar columns a row


@contextmanager
def fresh_schema(url: str):
    """A URL whose tables live in a new schema (dropped afterwards)."""
    name = f"upload_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(resolve_url(url), pool_pre_ping=True)  # survives a restart
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()


def throughput(url: str, workdir: Path, rows: int, samples: int, batch_size: int) -> dict:
    """Phase (a)."""
    local = make_local(workdir / "throughput.db", rows, samples)
    mb = payload_mb(local)
    with fresh_schema(url) as target:
        Store(target).close()  # table creation is not part of the upload figure
        first = upload_store(local, target, batch_size=batch_size)
        again = upload_store(local, target, batch_size=batch_size)
    local.close()
    assert first.new == rows and again.new == 0, (first, again)
    return {"rows": rows, "samples_per_row": samples, "batch_size": batch_size,
            "mb": round(mb, 1), "seconds": round(first.seconds, 2),
            "rows_per_s": round(first.rows_per_s), "mb_per_s": round(mb / first.seconds, 1),
            "reupload_seconds": round(again.seconds, 2),
            "reupload_rows_per_s": round(again.rows_per_s)}


def windows(total: int, uploaders: int, overlap: float) -> tuple[int, list[range]]:
    """Uploader i's row indices: `total // uploaders` consecutive rows from i * step, where
    step = size * (1 - overlap): each shares `overlap` of its rows with the next one."""
    size = total // uploaders
    step = max(1, round(size * (1 - overlap)))
    distinct = step * (uploaders - 1) + size
    return distinct, [range(i * step, i * step + size) for i in range(uploaders)]


def _uploader(local: str, url: str, batch_size: int, barrier, out) -> None:
    """One uploader process: wait for all, upload, report (new, already, seconds)."""
    try:
        with Store(local) as store:
            barrier.wait()
            r = upload_store(store, url, batch_size=batch_size,  # rides out a restart
                             retry=RetryPolicy(tries=8, backoff_s=0.2))
        out.put((local, r.new, r.already, r.seconds, None, r.refused, r.retries))
    except Exception as e:  # report, do not hang the parent
        out.put((local, 0, 0, 0.0, f"{type(e).__name__}: {e}", 0, 0))


def run_uploaders(url: str, locals_: list[Path], batch_size: int,
                  restart: Callable[[], None] | None = None,
                  restart_after_s: float = 0.0) -> tuple[list[tuple], float]:
    """All uploaders at once; `restart()` (stop and start the server) runs `restart_after_s`
    after they are released, while they upload."""
    # forkserver: children start from a clean process (no engines or threads of the parent)
    # that has imported this module once, so 32 of them start in well under a second.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__" if __name__ == "__main__" else __name__])
    barrier, out = ctx.Barrier(len(locals_) + 1), ctx.Queue()
    procs = [ctx.Process(target=_uploader, args=(str(p), url, batch_size, barrier, out))
             for p in locals_]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=300)
        t0 = time.perf_counter()
        timer = threading.Timer(restart_after_s, restart) if restart else None
        if timer:
            timer.start()
        results = [out.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
        if timer:
            timer.join()
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [r[4] for r in results if r[4]]
    if errors:
        raise RuntimeError(f"{len(errors)} uploaders failed, first: {errors[0]}")
    return results, wall


def concurrency(url: str, workdir: Path, uploaders: int, total: int, samples: int,
                batch_size: int, overlap: float = 0.4, restart: Callable[[], None] | None = None,
                restart_after_s: float = 0.0) -> dict:
    """Phase (b). Returns the figures and the checks. With `restart`, the server is stopped
    and started again `restart_after_s` into the first round (each uploader retries)."""
    distinct, wins = windows(total, uploaders, overlap)
    master = make_local(workdir / "master.db", distinct, samples)
    ids_in_order = [row_id(i) for i in range(distinct)]
    master.close()
    locals_ = []
    for i, w in enumerate(wins):
        path = workdir / f"uploader{i:03d}.db"
        copy_subset(workdir / "master.db", path, [ids_in_order[j] for j in w])
        locals_.append(path)
    with fresh_schema(url) as target:
        Store(target).close()
        first, wall = run_uploaders(target, locals_, batch_size, restart, restart_after_s)
        again, wall_again = run_uploaders(target, locals_, batch_size)
        with Store(target) as shared:
            count, ids = shared.count(), shared.ids()
            refused = sum(r[5] for r in first + again)
    sent = sum(r[1] + r[2] for r in first)
    new, new_again = sum(r[1] for r in first), sum(r[1] for r in again)
    checks = {"table_has_exactly_the_distinct_rows": count == distinct
              and ids == set(ids_in_order),
              "new_counts_add_up": new == distinct,
              "rerun_adds_none": new_again == 0, "none_set_aside": refused == 0}
    return {"uploaders": uploaders, "rows_sent": sent, "distinct_rows": distinct,
            "samples_per_row": samples, "table_rows": count, "new_rows": new,
            "lost": len(set(ids_in_order) - ids), "doubled": count - len(ids),
            "restarted_after_s": restart_after_s if restart else None,
            "retries": sum(r[6] for r in first),
            "seconds": round(wall, 2), "rows_per_s": round(sent / wall),
            "rerun_new_rows": new_again, "rerun_seconds": round(wall_again, 2),
            "checks": checks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m results.upload_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="PostgreSQL URL (default: start a private server)")
    ap.add_argument("--phase", choices=("all", "throughput", "concurrency"), default="all")
    ap.add_argument("--rows", type=int, default=50_000, help="throughput phase rows")
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="timing samples per row")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--uploaders", type=int, default=32)
    ap.add_argument("--total", type=int, default=100_000, help="rows sent by all uploaders")
    ap.add_argument("--restart-after", type=float, default=None, metavar="S",
                    help="concurrency phase: stop and start the private server S seconds in")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args(argv)
    if args.restart_after is not None and args.url:
        ap.error("--restart-after restarts the private server: leave out --url")
    server = None
    url = args.url
    if url is None:
        server = TempPostgres(durable=True).start()
        url = server.url(server.create_database("upload_bench"))
    out = {"commit": _commit(),
           "utc_start": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
           "server": redact(resolve_url(url))}
    try:
        with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
            if args.phase in ("all", "throughput"):
                out["throughput"] = throughput(url, Path(tmp), args.rows, args.samples,
                                               args.batch_size)
                _say(args, "throughput", out["throughput"])
            if args.phase in ("all", "concurrency"):
                restart = None if args.restart_after is None else server.restart
                out["concurrency"] = concurrency(url, Path(tmp), args.uploaders, args.total,
                                                 args.samples, args.batch_size, restart=restart,
                                                 restart_after_s=args.restart_after or 0.0)
                _say(args, "concurrency", out["concurrency"])
    finally:
        if server:
            server.cleanup()
    out["machine"]["load_avg_after_1m"] = os.getloadavg()[0]
    out["utc_end"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"commit {out['commit']}, {out['utc_start']} to {out['utc_end']}")
    ok = all(out.get("concurrency", {}).get("checks", {"-": True}).values())
    return 0 if ok else 1


def _commit() -> str | None:
    """The checkout's commit (with -dirty for uncommitted changes), for the figures' record."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _say(args, phase: str, figures: dict) -> None:
    if not args.json:
        print(f"{phase}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
