"""The record fields the runner adds for reports (flops, bytes, shape, compile_s): nullable,
round-trip through the table, and a version-1 table gains them by migration."""

from results.schema import SCHEMA_VERSION, Result
from results.store import Store

NEW = ("compile_s", "flops", "bytes", "shape")


def make(**kw):
    fields = dict(run_id="r", workload="gemm", backend="torch", dtype="bf16", params={"m": 1},
                  host="h", device={"name": "x"})
    return Result(**{**fields, **kw})


def test_new_fields_are_optional_and_round_trip(db_url):
    bare = make()
    assert all(getattr(bare, f) is None for f in NEW)
    full = make(compile_s=2.5, flops=2.0 * 8192**3, bytes=3 * 2 * 8192**2.0,
                shape="8192x8192x8192 nt", params={"m": 2})
    with Store(db_url) as store:
        store.insert([bare, full])
        got = {r.params["m"]: r for r in store.records()}
    assert got[2].shape == "8192x8192x8192 nt" and got[2].flops == 2.0 * 8192**3
    assert got[2].compile_s == 2.5 and got[1].shape is None
    assert Result.from_dict(full.to_dict()).bytes == full.bytes


def test_a_version_1_table_is_migrated(db_url):
    from tests.test_store import _v1_table_with_rows  # the first schema, as it was written

    _v1_table_with_rows(db_url, [make()])
    with Store(db_url) as store:
        assert store.schema_version() == SCHEMA_VERSION == 2
        store.insert([make(shape="s", flops=1.0, bytes=2.0, compile_s=0.1, backend="triton")])
        rows = {r.backend: r for r in store.records()}
    assert rows["torch"].shape is None and rows["triton"].shape == "s"


def test_the_known_workloads_are_those_bench_writes():
    """results/ cannot import bench/: its list of workload names (what `ingest` takes) is data,
    checked here against bench's registry and the collectives' family name."""
    from bench.collectives.worker import WORKLOAD
    from bench.workloads import WORKLOADS
    from results.schema import KNOWN_WORKLOADS

    assert sorted(KNOWN_WORKLOADS) == sorted({*WORKLOADS, WORKLOAD})
