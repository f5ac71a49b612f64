"""kernels.plan (launches and compile counts of kernel calls) and kernels.inspect (the static
sm90 compile: registers, spills, shared memory, wgmma/TMA), both without a GPU."""

import json
import os
import subprocess
import sys

import pytest

from kernels import attention, host, plan
from kernels.gemm_configs import HOPPER_TILES, hopper_tiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gemm(m, n=4096, k=4096, dtype="bf16", layout="nt"):
    return dict(kernel="gemm", dtype=dtype, m=m, n=n, k=k, layout=layout)


def _attn(b=1, h=16, kv_h=16, s=4096, d=128, causal=True, direction="fwd"):
    return dict(kernel="attention", dtype="bf16", b=b, h=h, kv_h=kv_h, s=s, d=d, causal=causal,
                direction=direction)


def test_gemm_shapes_share_binaries_but_not_tuning():
    big = len(hopper_tiles("16bit", 8192))
    # M, N, K are not specialised: a second shape re-tunes (new key) and compiles nothing new
    assert plan.count_compiles([_gemm(4096)]) == (big, big)
    assert plan.count_compiles([_gemm(4096), _gemm(8192, 8192, 8192)]) == (big, 2 * big)
    # decode: M = 1 is not a separate specialisation of M = 16; only the 64-row tiles run
    skinny = len(hopper_tiles("16bit", 1))
    assert plan.count_compiles([_gemm(1), _gemm(16)]) == (skinny, 2 * skinny)
    # an unaligned K is padded: same kernel variant, so the same binaries
    assert plan.count_compiles([_gemm(4096), _gemm(4096, k=4095)]) == (big, 2 * big)
    # another layout is another constexpr variant
    assert plan.count_compiles([_gemm(4096), _gemm(4096, layout="nn")]) == (2 * big, 2 * big)
    fp8 = len(hopper_tiles("fp8", 8192))
    assert plan.count_compiles([_gemm(8192, dtype="fp8_e4m3")]) == (fp8, fp8)


def test_gemm_launch_matches_the_host_path():
    (la,) = plan.launches(_gemm(100, 50, 4095, layout="tn"))
    consts = dict(la.constexprs)
    assert consts["A_KMAJOR"] is False and consts["B_KMAJOR"] is False  # as stored
    assert consts["C_TMA"] is False  # 50 bf16 = 100-byte rows: masked stores
    args = dict(la.args)
    assert args["stride_a"] * 2 % 16 == 0 and args["stride_b"] * 2 % 16 == 0  # padded
    (fp8,) = plan.launches(_gemm(64, dtype="fp8_e5m2", layout="nn"))
    assert dict(fp8.constexprs)["B_KMAJOR"] is True  # fp8 made K-major
    assert dict(fp8.constexprs)["FP8_PRECISE"] is True


def test_attention_launches_and_counts(monkeypatch):
    monkeypatch.delenv(host.TUNE_ENV, raising=False)
    fwd = len(attention.launch_configs("fwd", "sm90", host.HOPPER_SMEM_BYTES, 128, 2))
    kinds = [la.kernel for la in plan.launches(_attn(direction="bwd"))]
    assert kinds == ["attn_fwd", "attn_delta", "attn_dkdv", "attn_dq"]
    # fixed backward configs: one compile each, no benchmark
    assert plan.count_compiles([_attn(direction="bwd")]) == (fwd + 3, fwd)
    # batch, heads and GQA group are not specialised: a GQA shape re-tunes, compiles nothing
    gqa = _attn(h=128, kv_h=8, s=4096, direction="bwd")
    assert plan.count_compiles([_attn(direction="bwd"), gqa]) == (fwd + 3, 2 * fwd)
    # causal is a constexpr: new binaries
    assert plan.count_compiles([_attn(), _attn(causal=False)]) == (2 * fwd, 2 * fwd)
    # a sequence length that is not a multiple of 16 is another specialisation
    assert plan.count_compiles([_attn(), _attn(s=4095)])[0] == 2 * fwd
    monkeypatch.setenv(host.TUNE_ENV, "1")
    dkdv = len(attention.launch_configs("dkdv", "sm90", host.HOPPER_SMEM_BYTES, 128, 2))
    assert dkdv >= 1 and plan.count_compiles([_attn(direction="bwd")])[1] >= fwd + dkdv


def test_single_config_bench_is_a_triton_36_rule():
    # Triton 3.6 benchmarks a list pruned to one config, 3.8 does not; neither for a tuner of one
    calls = [_gemm(1)]
    assert plan.count_compiles(calls, single_config_bench=False) == plan.count_compiles(calls)


def test_campaign_calls_are_plain_data():
    json.dumps(plan.CAMPAIGN_CALLS)
    compiles, benchmarks = plan.count_compiles(plan.CAMPAIGN_CALLS)
    assert 0 < compiles <= 80 and 0 < benchmarks <= 200


@pytest.mark.parametrize("call,msg", [
    ({"kernel": "conv"}, "kernel 'gemm' or 'attention'"),
    ([1, 2], "must be a dict"),
    ({"kernel": "gemm", "dtype": "bf16", "m": 1, "n": 2}, "lacks 'k'"),
    (_gemm(1, dtype="int8"), "dtype must be one of"),
    (_gemm(0), "m must be a positive int"),
    (_gemm(8, layout="xx"), "layout must be one of"),
    (_attn(d=32), "head_dim 32 is not supported"),
    (_attn(h=6, kv_h=4), "must divide q heads"),
    (dict(_attn(), causal=1), "causal must be"),
    (dict(_attn(), dtype="fp8_e4m3"), "dtype must be one of"),
])
def test_bad_calls(call, msg):
    with pytest.raises(ValueError, match=msg):
        plan.launches(call)


def _inspect(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "kernels.inspect", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _inspected(tmp_path, calls: list[dict], jobs: int) -> list[dict]:
    """`kernels.inspect --json` over these calls: its compile rows, after checking that it
    succeeded and that its closing counts are plan.count_compiles' and match the rows."""
    shapes = tmp_path / "calls.json"
    shapes.write_text(json.dumps(calls))
    r = _inspect("--shapes", str(shapes), "--json", "--jobs", str(jobs))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)
    counts = rows.pop()
    assert counts == dict(zip(("compiles", "benchmarks"), plan.count_compiles(calls),
                              strict=True))
    assert len(rows) == counts["compiles"]
    return rows


def test_cli_bad_input(tmp_path):
    r = _inspect("--suite", "nope")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown suite" in r.stderr
    bad = tmp_path / "calls.json"
    bad.write_text("{not json")
    r = _inspect("--shapes", str(bad))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    bad.write_text('[{"kernel": "conv"}]')
    r = _inspect("--shapes", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("error:")


# The sm90 compile of a subset that CI can afford (~1 minute on 2 cores): the heaviest entry of
# every GEMM table and the attention configs of head_dim 128 and 256, causal; plus the counts.
_SUBSET = [
    _gemm(8192, 8192, 8192), _gemm(8192, dtype="fp8_e4m3"), _gemm(1, dtype="fp8_e5m2"),
    _attn(d=128, direction="bwd"), _attn(d=256, s=4096, direction="bwd"),
]


@pytest.mark.slow
def test_sm90_inspection_no_spills_wgmma_tma(tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    rows = _inspected(tmp_path, _SUBSET, jobs=2)
    for row in rows:
        assert row["spill_bytes"] == 0, row
        assert row["smem_bytes"] <= host.HOPPER_SMEM_BYTES, row
        if row["kernel"] != "attn_delta":  # the delta preprocess has no matmul and no tiles
            assert row["wgmma"] and row["tma"] and row["smem_bytes"] > 0, row
    assert {r["kernel"] for r in rows} == {"gemm", "attn_fwd", "attn_delta", "attn_dkdv",
                                           "attn_dq"}
    assert set(HOPPER_TILES) >= {"16bit", "fp8"}


@pytest.mark.slow
def test_sm90_decode_call_of_the_campaign_compiles_statically(tmp_path):
    """The campaign's decode-attention call (one query token, GQA 64/8, 8k cache) is in
    CAMPAIGN_CALLS, so `--suite campaign` compiles and counts it; here alone, for CI."""
    pytest.importorskip("triton.backends.nvidia")
    decode = [c for c in plan.CAMPAIGN_CALLS if c["kernel"] == "attention" and c["s"] == 1]
    assert len(decode) == 1 and decode[0]["s_k"] == 8192 and decode[0]["direction"] == "fwd"
    rows = _inspected(tmp_path, decode, jobs=1)
    assert len(rows) >= 1
    for row in rows:
        assert row["kernel"] == "attn_fwd" and row["spill_bytes"] == 0, row
        assert row["wgmma"] and row["tma"] and row["smem_bytes"] <= host.HOPPER_SMEM_BYTES, row
