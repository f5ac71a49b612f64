"""The serving model: scenarios, memory, batch choice, latency targets, validation, the cluster
questions, the CLI and the report section (CPU only, no timing asserts)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from reports.model.measurements import Measurements
from reports.model.serving import (
    ASSUMPTIONS,
    figures,
    kv_bytes_per_token,
    max_batch_fitting,
    peak_batch,
    prefill_stage_seconds,
    read_weight_bytes,
    timing,
    tp_allreduce_seconds,
    weight_bytes_per_gpu,
)
from reports.model.serving_allreduce import ALLREDUCE_8GPU_US, allreduce_busbw_gbps
from reports.model.serving_cases import (
    CASES,
    case_serving,
    finite_run_tokens_per_s,
    serving_summary,
    validate_serving,
)
from reports.model.serving_cluster import cluster_serving, serving_gain
from reports.model.serving_scenario import (
    SERVING_SCENARIOS,
    estimate_serving,
    serving_from,
    serving_spec,
)
from reports.model.step import ScenarioError

runner = CliRunner()
FIELDS = ("output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_s", "tpot_s", "batch",
          "kv_cache_gib", "memory_gib_per_gpu", "fits_in_memory", "range")


def spec(**kw) -> dict:
    s = {"model": "llama3-70b", "gpu": "H100-SXM", "precision": "fp8", "tp": 2,
         "input_len": 1000, "output_len": 1000}
    return {"mode": "serve", "serving": {**s, **kw}}


@pytest.fixture(scope="module")
def meas():
    return Measurements(None, use_reference=False)


@pytest.mark.parametrize("name", sorted(SERVING_SCENARIOS))
def test_every_preset_estimates(name, meas):
    d = estimate_serving(name, meas).to_dict()
    for k in FIELDS:
        assert k in d
    assert d["fits_in_memory"] and d["memory_gib_per_gpu"] <= d["memory_capacity_gib"]
    lo, hi = d["range"]["output_tokens_per_s"]
    assert lo <= d["output_tokens_per_s"] <= hi
    assert d["output_tokens_per_s_per_gpu"] == pytest.approx(d["output_tokens_per_s"] / d["gpus"])
    assert d["scenario"] == name and d["mode"] == "serve"


def test_memory_formulas(meas):
    s = serving_from(spec())
    # Llama 3 70B: 80 layers x 8 KV heads x 128 dims x K and V; fp8; 4 of 8 heads per GPU at tp 2
    assert kv_bytes_per_token(s) == 2 * 80 * 4 * 128
    assert weight_bytes_per_gpu(s) == pytest.approx(s.model.params() / 2)
    bf16 = serving_from(spec(precision="bf16"))
    assert weight_bytes_per_gpu(bf16) == 2 * weight_bytes_per_gpu(s)
    assert max_batch_fitting(bf16) < max_batch_fitting(s)
    # the H200's 141 GB holds a larger batch at the same tp
    assert max_batch_fitting(serving_from(spec(gpu="H200-SXM"))) > 2 * max_batch_fitting(s)
    d = estimate_serving(spec(), meas).to_dict()
    assert d["batch"] == max_batch_fitting(s) and d["batch_reason"] == "memory"


def test_a_decode_step_streams_the_output_layer_tied_or_not():
    """Only the input embedding is a lookup; tied, the output layer is that same matrix and is
    still read every step."""
    from dataclasses import replace

    s = serving_from(spec())
    m = s.model
    whole = (m.layers * m.layer_params() + m.vocab * m.hidden) / 2  # fp8, tp 2
    assert read_weight_bytes(s) == pytest.approx(whole)
    tied = replace(s, model=replace(m, tied_embeddings=True))
    assert read_weight_bytes(tied) == pytest.approx(whole)


def test_h200_serves_more_per_gpu_and_bandwidth_matters(meas):
    a = estimate_serving(spec(batch=8), meas).to_dict()
    b = estimate_serving(spec(batch=8, gpu="H200-SXM"), meas).to_dict()
    assert b["tpot_s"] < a["tpot_s"]  # small batch: weight reads dominate, 1.43x the bandwidth
    assert b["step_breakdown_s"]["weights"] == pytest.approx(
        a["step_breakdown_s"]["weights"] * meas.hbm_tbps(serving_from(spec()).gpu).value
        / meas.hbm_tbps(serving_from(spec(gpu="H200-SXM")).gpu).value)
    # throughput grows with the batch; latency too
    big = estimate_serving(spec(batch=128), meas).to_dict()
    assert big["output_tokens_per_s"] > a["output_tokens_per_s"] and big["tpot_s"] > a["tpot_s"]
    assert a["step_breakdown_s"]["tp_comm"] > 0


def test_latency_target_sets_the_batch(meas):
    free = estimate_serving(spec(), meas).to_dict()
    capped = estimate_serving(spec(tpot_s=0.04), meas).to_dict()
    assert capped["batch_reason"] == "latency target" and capped["tpot_s"] <= 0.04
    assert capped["batch"] < free["batch"]
    with pytest.raises(ScenarioError, match=r"no batch meets .*tpot_s 0.001 s \(best "
                                            r"achievable .* at batch 1\)"):
        estimate_serving(spec(tpot_s=0.001), meas)


@pytest.mark.parametrize("change, message", [
    ({"batch": 100000}, r"batch 100000 of 1000\+1000 tokens needs .* GiB per GPU .* at most "
                        r"\d+ sequences fit"),
    ({"model": "llama3-405b", "precision": "bf16", "tp": 1},
     "needs .* GiB per GPU .*not even one sequence fits"),
    ({"input_len": 10_000_000, "output_len": 1}, "not even one sequence fits"),
    ({"precision": "int4"}, "precision must be one of bf16, fp8"),
    ({"batch": 0}, "batch must be an integer >= 1"),
    ({"tp": 3}, "tp 3 does not divide"),
    ({"tp": 16}, "does not divide|spans more than one"),
    ({"gpu": "H300"}, "unknown GPU"),
    ({"speed": 1}, "unknown serving keys: speed"),
    ({"tpot_s": "fast"}, "tpot_s must be a positive number"),
])
def test_bad_input_is_one_scenario_error(change, message, meas):
    with pytest.raises(ScenarioError, match=message):
        estimate_serving(spec(**change), meas)


def test_serving_spec_reads_files_and_text(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("mode: serve\nserving: {model: llama3-70b, gpu: H200-SXM, precision: fp8, "
                 "input_len: 128, output_len: 128}\n")
    assert serving_spec(str(f))["name"] == "s"
    assert serving_spec(json.dumps(spec()))["mode"] == "serve"
    assert serving_spec("gpt3-4096-h100") is None  # a training preset
    assert serving_spec('{"model": "gpt3-175b"}') is None
    with pytest.raises(ScenarioError, match="unknown serving preset 'serve-nope'; known: serve-"):
        serving_spec("serve-nope")


def test_measured_decode_rows_replace_the_hbm_figure():
    base = estimate_serving(spec(batch=64), Measurements(None, use_reference=False))
    rows = pd.DataFrame([{
        "workload": "decode_attention", "backend": "triton", "dtype": "bf16", "status": "ok",
        "correct": True, "params": {"b": 64, "h": 64, "kv_h": 8, "s_q": 1, "s": 2048, "d": 128,
                                    "causal": True},
        "device": {"model": "H100-SXM"}, "gbps": 1500.0, "median_s": 1e-3,
        "run_id": "run-decode-1", "host": "node-1"}])
    slow = estimate_serving(spec(batch=64), rows)
    assert "run-decode-1" in slow.sources["kv_read_tbps"]
    assert slow.timing.parts["kv_cache"] == pytest.approx(base.timing.parts["kv_cache"] * 2)
    # a row that failed its check does not count
    bad = rows.assign(correct=False)
    assert "no decode-attention rows" in estimate_serving(spec(batch=64), bad).sources[
        "kv_read_tbps"]


def test_validation_rows(meas):
    rows = validate_serving(meas)
    assert len(rows) == len(CASES)
    for r in rows:
        assert r["kind"] == "serving"
        for k in ("published", "predicted", "error_pct", "gpu", "source", "setting"):
            assert k in r
    good = [r for r in rows if abs(r["error_pct"]) <= 20]
    assert len(good) >= 12
    # the TensorRT-LLM rows are finite runs of the published request counts
    trt = [r for r in rows if r["name"].startswith("TensorRT-LLM")]
    assert trt and all(r["requests"] in (1500, 3000) for r in trt)
    assert all(r["predicted"] <= r["steady_state"] * (1 + 1e-9) for r in trt)
    assert {"H100-SXM", "H200-SXM"} <= {r["gpu"] for r in good}
    s = serving_summary(rows)
    assert s["cases"] == len(rows) and s["within"] == len(good)
    assert sum(n for _, n in s["within_by_gpu"].values()) == len(rows)
    assert s["max_abs_error_pct"] == max(abs(r["error_pct"]) for r in rows)


def test_cluster_and_gain(meas):
    rows = cluster_serving(models=("llama3-70b",), clusters=("colossus-100k", "colossus-200k"),
                           measurements=meas)
    one, two = rows
    assert one["gpus"] == 100_000 and two["gpus"] == 200_000
    assert two["output_tokens_per_s"] > one["output_tokens_per_s"]
    h100, h200 = two["pools"]
    assert h200["tokens_per_s_per_gpu"] > h100["tokens_per_s_per_gpu"]
    g = serving_gain("llama3-70b", measurements=meas)
    assert g["serving_gain"] > 1 and g["reasons"]["hbm_ratio"] > 1.3
    assert g["training_gain"] is not None and g["serving_gain"] > g["training_gain"]


def test_cli_estimate_and_validate():
    r = runner.invoke(app, ["estimate", "--scenario", "serve-llama3-70b-h200", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for k in FIELDS:
        assert k in d
    r = runner.invoke(app, ["estimate", "--scenario", "serve-llama3-405b-h100-fp8"])
    assert r.exit_code == 0 and "output tokens/s" in r.stdout
    r = runner.invoke(app, ["estimate", "--scenario", json.dumps(spec(batch=100000))])
    assert r.exit_code == 2
    assert "needs" in r.output and "GiB" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["validate", "--json"])
    assert r.exit_code == 0
    kinds = {row.get("kind") for row in json.loads(r.stdout)}
    assert kinds == {"training", "serving"}


def test_assumptions_are_labelled():
    for k, f in ASSUMPTIONS.items():
        assert f.source, k
        assert f.kind == "assumption"


def test_report_section(tmp_path):
    from reports.page.serving_section import serving_section

    d = serving_section(Measurements(None, use_reference=False), tmp_path)
    assert d["title"] and len(d["tables"]) == 4 and len(d["figures"]) == 3
    for f in d["figures"]:
        assert open(f["path"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert all(ref in d["refs"] for ref in f["refs"])
    for t in d["tables"]:
        for row in t["rows"]:
            assert len(row) == len(t["columns"])
            for c in row:
                assert c["ref"] in d["refs"]


def test_allreduce_busbw_follows_the_published_curve():
    # at a published size the curve returns that row's busbw (8 ranks: algbw x 2 x 7/8)
    size, us = ALLREDUCE_8GPU_US[9]  # 16 MiB, 124 us
    assert allreduce_busbw_gbps(size, 1e9) == pytest.approx(size * 1.75 / (us * 1e-6) / 1e9)
    sizes = [2 ** k for k in range(10, 31)]
    bws = [allreduce_busbw_gbps(x, 1e9) for x in sizes]
    assert bws == sorted(bws)  # larger messages reach more of the link
    assert allreduce_busbw_gbps(2 ** 16, 370) < 10  # 64 KiB: latency-bound
    assert allreduce_busbw_gbps(2 ** 30, 370) == 370  # capped at the node's large-message figure


def test_measured_allreduce_rows_replace_the_published_curve():
    def row(nbytes, busbw, world=8):
        return {"workload": "allreduce", "backend": "nccl", "dtype": "bf16", "status": "ok",
                "correct": True, "params": {"op": "all_reduce", "bytes": nbytes},
                "device": {"model": "H100-SXM"}, "world_size": world, "busbw_gbps": busbw,
                "median_s": 1e-3, "run_id": "run-ar-1", "host": "node-1"}
    sizes = (2 ** 20, 2 ** 24, 2 ** 28)
    est = estimate_serving(spec(batch=64), pd.DataFrame([row(x, 100.0) for x in sizes]))
    assert "x8, 3 sizes" in est.sources["allreduce_by_size"]
    f = figures(est.serving, Measurements(pd.DataFrame([row(x, 100.0) for x in sizes]),
                                          use_reference=False))
    assert allreduce_busbw_gbps(2 ** 24, 1e9, f["allreduce_by_size"].value) == pytest.approx(100)
    # two sizes are not a curve: the published one stays
    two = estimate_serving(spec(batch=64), pd.DataFrame([row(x, 100.0) for x in sizes[:2]]))
    assert "published nccl-tests" in two.sources["allreduce_by_size"]


def test_every_token_of_a_step_pays_the_tp_allreduces(meas):
    s = serving_from(spec())
    f = figures(s, meas)
    one = serving_from(spec(tp=1))
    assert tp_allreduce_seconds(one, figures(one, meas), 1000) == 0.0
    # two all-reduces per layer of tokens x hidden bf16, at the busbw of that size
    nbytes = 344 * s.model.hidden * 2
    assert tp_allreduce_seconds(s, f, 344) == pytest.approx(
        2 * 80 * nbytes * 2 * 1 / 2 / (allreduce_busbw_gbps(nbytes, f["nvlink_busbw_gbps"].value,
                                                            f["allreduce_by_size"].value) * 1e9))
    # a prompt riding in a decode step pays its own tokens' all-reduces
    no_comm = prefill_stage_seconds(s, meas, f, 1.0) - tp_allreduce_seconds(s, f, s.input_len)
    assert no_comm > 0 and prefill_stage_seconds(s, meas, f, 1.0) > no_comm
    t = timing(s, meas, f, 344)
    assert t.parts["tp_comm"] == pytest.approx(tp_allreduce_seconds(s, f, 344))


def test_finite_runs_and_percentile_batches(meas):
    from reports.model.serving import evaluate

    c = next(c for c in CASES if c.requests and c.tp == 8)
    est = evaluate(case_serving(c), meas)
    steady = est.timing.tokens_per_s
    assert finite_run_tokens_per_s(est, 3 * est.batch, meas) == pytest.approx(steady)
    assert finite_run_tokens_per_s(est, est.batch + 1, meas) < steady  # a near-empty last wave
    assert peak_batch(100, None) == 100 and peak_batch(100, 99) == 124  # 100 + 2.326 x 10
    server = next(c for c in CASES if c.scenario == "server")
    assert case_serving(server).latency_percentile == 99
    p99 = estimate_serving(spec(tpot_s=0.04, latency_percentile=99), meas).to_dict()
    mean = estimate_serving(spec(tpot_s=0.04), meas).to_dict()
    assert p99["batch"] < mean["batch"] and p99["tpot_s"] <= 0.04
    with pytest.raises(ScenarioError, match="latency_percentile must be a number in"):
        estimate_serving(spec(latency_percentile=100), meas)


def test_a_precision_the_gpu_has_no_peak_for_is_refused(meas):
    # the A100 lists no fp8 peak (no FP8 tensor cores): never the H100's FP8 speed-up
    with pytest.raises(ScenarioError, match=r"'fp8': A100-SXM-80GB has no fp8 peak"):
        estimate_serving(spec(gpu="A100-SXM-80GB", tp=4), meas)
    assert estimate_serving(spec(gpu="A100-SXM-80GB", precision="bf16", tp=4), meas).batch >= 1
    r = runner.invoke(app, ["estimate", "--scenario",
                            json.dumps(spec(gpu="A100-SXM-80GB", tp=4))])
    assert r.exit_code == 2 and "no fp8 peak" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_sequence_beyond_the_context_window_is_refused(meas):
    from reports.model.presets import MODELS

    assert MODELS["llama3-70b"].context_window == 131072  # Llama 3's 128K long-context stage
    assert MODELS["gpt3-175b"].context_window == 2048
    with pytest.raises(ScenarioError, match=r"200,100 tokens exceeds llama3-70b's context "
                                            r"window of 131,072"):
        estimate_serving(spec(gpu="H200-SXM", tp=8, input_len=200_000, output_len=100), meas)
    ok = spec(gpu="H200-SXM", tp=8, input_len=131_072 - 100, output_len=100)
    assert estimate_serving(ok, meas).batch >= 1
    r = runner.invoke(app, ["estimate", "--scenario",
                            json.dumps(spec(input_len=200_000, output_len=100, tp=8))])
    assert r.exit_code == 2 and "context window" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_mode_typo_names_the_modes(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("mode: serving\nserving: {model: llama3-70b, gpu: H100-SXM, precision: fp8, "
                 "tp: 2, input_len: 128, output_len: 128}\n")
    r = runner.invoke(app, ["estimate", "--scenario", str(f)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert 'mode must be "serve"' in r.output and "got 'serving'" in r.output
    assert "unknown scenario keys" not in r.output


def test_a_one_gpu_replica_reads_singular():
    r = runner.invoke(app, ["estimate", "--scenario", "serve-llama3-70b-h200"])
    assert r.exit_code == 0, r.output
    assert "= 1 GPU" in r.output and "= 1 GPUs" not in r.output


def test_every_missing_serving_key_is_named_at_once():
    with pytest.raises(ScenarioError, match="^serving is missing 'input_len', 'output_len'$"):
        serving_from({"mode": "serve", "serving": {"model": "llama3-70b", "gpu": "H100-SXM"}})
