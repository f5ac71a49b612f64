"""estimate(): scenario files and presets, the search, errors, measured rows, the cluster-scale
questions (throughput, H200 gain, mixed jobs, power, goodput)."""

import json
import math

import pandas as pd
import pytest

from reports.model import scaling
from reports.model.compute import flops_per_token
from reports.model.config import ScenarioError
from reports.model.hardware import CLUSTERS
from reports.model.measurements import Measurements
from reports.model.presets import MODELS
from reports.model.scaling import SCENARIOS, Estimate, estimate, load_scenario

# the example of ARCHITECTURE.md, "The scenario file"
EXAMPLE = {
    "model": {"layers": 96, "hidden": 12288, "heads": 96, "kv_heads": 96,
              "ffn_hidden": 49152, "vocab": 51200, "seq_len": 2048},
    "cluster": {"gpu": "H100-SXM", "gpus": 4096, "gpus_per_node": 8,
                "scale_out_gbps_per_gpu": 400},
    "parallel": {"tp": 8, "pp": 8, "cp": 1, "dp": 64, "micro_batch": 1,
                 "virtual_stages": 1, "recompute": "none"},
    "global_batch_tokens": 4194304,
}
REQUIRED = ("step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu", "breakdown_s",
            "memory_gib_per_gpu", "fits_in_memory", "parallel", "sources")


@pytest.fixture(scope="module")
def meas():
    return Measurements(None, use_reference=False)


def small(model, gpus=64, gpu="H100-SXM", batch=2**20, parallel="auto", **kw):
    return {"model": model, "cluster": {"gpu": gpu, "gpus": gpus}, "parallel": parallel,
            "global_batch_tokens": batch, **kw}


def check(d: dict):
    for k in REQUIRED:
        assert k in d, k
    assert d["step_time_s"] == pytest.approx(sum(d["breakdown_s"].values()))
    assert d["tokens_per_s"] == pytest.approx(d["global_batch_tokens"] / d["step_time_s"])
    assert 0 < d["mfu"] < 1
    json.dumps(d)  # plain data


def test_architecture_example_as_dict_json_and_yaml(tmp_path, meas):
    by_dict = estimate(EXAMPLE, meas).to_dict()
    check(by_dict)
    assert by_dict["fits_in_memory"] and by_dict["parallel"]["auto"] is False
    assert by_dict["microbatches"] == {"H100-SXM": 32}  # 2048 sequences / (64 x 1)
    f = tmp_path / "gpt3.json"
    f.write_text(json.dumps(EXAMPLE))
    by_json = estimate(str(f), meas).to_dict()
    import yaml

    y = tmp_path / "gpt3.yaml"
    y.write_text(yaml.safe_dump(EXAMPLE))
    by_yaml = estimate(y, meas).to_dict()
    by_text = estimate(json.dumps(EXAMPLE), meas).to_dict()
    for d in (by_json, by_yaml, by_text):
        assert d["step_time_s"] == pytest.approx(by_dict["step_time_s"])
    assert by_yaml["scenario"] == "gpt3"
    # mfu is model TFLOP/s against the dense bf16 peak
    tflops = flops_per_token(MODELS["gpt3-175b"]) * by_dict["tokens_per_s"] / 4096 / 1e12
    assert by_dict["tflops_per_gpu"] == pytest.approx(tflops, rel=1e-3)
    assert by_dict["mfu"] == pytest.approx(tflops / 989.4, rel=1e-3)


def test_every_scenario_preset(meas):
    for name in SCENARIOS:
        d = estimate(name, meas).to_dict()
        check(d)
        assert d["fits_in_memory"], name
        assert d["scenario"] == name
    # multi-type presets report per-type figures
    d = estimate("colossus-200k-llama3-405b", meas).to_dict()
    assert set(d["per_type"]) == {"H100-SXM", "H200-SXM"}
    assert d["per_type"]["H200-SXM"]["gpus"] == 50_000


def test_every_model_preset(meas):
    for name in MODELS:
        d = estimate(small(name, gpus=1024, batch=4 * 2**20), meas).to_dict()
        check(d)
        assert d["fits_in_memory"] and d["parallel"]["auto"], name


def test_every_cluster_preset(meas):
    for name in CLUSTERS:
        gpus = CLUSTERS[name].gpus
        d = estimate({"model": "llama3-70b", "cluster": name, "parallel": "auto",
                      "global_batch_tokens": 1024 * gpus}, meas).to_dict()
        check(d)
        assert d["gpus"] == gpus


def test_search_finds_a_config_at_least_as_fast_as_the_example(meas):
    fixed = estimate(EXAMPLE, meas)
    auto = estimate(dict(EXAMPLE, parallel="auto"), meas)
    assert auto.fits_in_memory
    assert auto.tokens_per_s >= fixed.tokens_per_s
    assert auto.search["evaluated"] >= auto.search["fitting"] >= 1
    p = auto.parallel
    assert p.tp * p.pp * p.cp * p.dp == 4096


@pytest.mark.parametrize("change, message", [
    ({"parallel": {"tp": 8, "pp": 8, "dp": 32}}, "but the cluster has 4096 GPUs"),
    ({"parallel": {"tp": 3, "pp": 1}}, "does not divide"),
    ({"model": dict(EXAMPLE["model"], heads=12, kv_heads=12)}, "heads \\(12\\) not divisible"),
    ({"model": "gpt-5"}, "unknown model preset"),
    ({"cluster": "colossus-1m"}, "unknown cluster preset"),
    ({"cluster": {"gpu": "V100", "gpus": 8}}, "unknown GPU"),
    ({"colour": "blue"}, "unknown scenario keys"),
    ({"parallel": {"tp": 8, "zero": 1}}, "unknown parallel keys"),
    ({"parallel": "fast"}, "parallel must be"),
    ({"global_batch_tokens": 100}, "global_batch_tokens"),
    ({"model": "dense-1t", "cluster": {"gpu": "H100-SXM", "gpus": 8}, "parallel": "auto"},
     "fits nowhere"),
    ({"parallel": {"tp": 8, "pp": 8, "dp": 64, "micro_batch": 64}}, "smaller than dp"),
])
def test_impossible_scenarios_give_clear_errors(change, message, meas):
    with pytest.raises(ScenarioError, match=message):
        estimate(dict(EXAMPLE, **change), meas)


@pytest.mark.parametrize("change, message", [
    # wrong types in any part of a scenario file: a ScenarioError naming the key, no traceback
    ({"training": {"tp_overlap": "x"}}, "training tp_overlap must be a number"),
    ({"training": {"causal": "false"}}, "training causal must be true or false"),
    ({"model": dict(EXAMPLE["model"], hidden="12288")}, "model hidden must be a positive"),
    ({"model": dict(EXAMPLE["model"], gated_mlp="no")}, "model gated_mlp must be true or false"),
    ({"parallel": {"tp": "8", "pp": 8}}, "parallel tp must be a positive integer"),
    ({"parallel": {"tp": 8, "pp": 8.0, "dp": 64}}, "parallel pp must be a positive integer"),
    ({"parallel": {"tp": 8, "recompute": 1}}, "recompute must be one of"),
    ({"parallel": {"tp": 8, 1: 2}}, "unknown parallel keys: 1"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": "4096"}}, "cluster: gpus must be a positive"),
    ({"cluster": {"gpu": ["H100-SXM"], "gpus": 4096}}, "cluster: gpu must be a string"),
    ({"cluster": {"pools": "H100-SXM"}}, "cluster: pools must be a list"),
    ({"cluster": {"pools": ["H100-SXM"]}}, "cluster: pools\\[0\\] must be a mapping"),
    ({"cluster": {"pools": [{"gpu": "H100-SXM"}]}}, "cluster: pools\\[0\\] needs exactly"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 4096, "scale_out_gbps_per_gpu": "400"}},
     "cluster: scale_out_gbps_per_gpu must be a number"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 4096, "fabric_efficiency": True}},
     "cluster: fabric_efficiency must be a number"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 4096, "fabric": ["x"]}},
     "cluster: fabric must be a string"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 4096, "power": 1}}, "unknown cluster keys: power"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 64, "pools": []}},
     "^cluster: give either gpu/gpus or pools, not both$"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 64, "fabric_efficiency": 5}},
     r"^cluster: fabric_efficiency must be in \(0, 1\] .*got 5(\.0)?$"),
    ({"cluster": {"gpu": "H100-SXM", "gpus": 64, "scale_out_gbps_per_gpu": 0}},
     r"^cluster: scale_out_gbps_per_gpu must be > 0, got 0(\.0)?$"),
])
def test_wrong_types_give_scenario_errors(change, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(dict(EXAMPLE, **change))


def test_quoted_false_in_yaml_is_refused(tmp_path):
    import yaml

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(dict(EXAMPLE, training={"sequence_parallel": False})))
    assert load_scenario(str(f)).training.sequence_parallel is False
    f.write_text(yaml.safe_dump(dict(EXAMPLE, training={"sequence_parallel": "false"})))
    with pytest.raises(ScenarioError, match="sequence_parallel must be true or false"):
        load_scenario(str(f))


def test_bad_scenario_inputs(tmp_path):
    with pytest.raises(ScenarioError, match="unknown scenario preset"):
        load_scenario("no-such-preset")
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(str(bad))
    with pytest.raises(ScenarioError):
        load_scenario(42)
    assert issubclass(ScenarioError, ValueError)


def gemm_rows(device: str, tflops: float, correct=True) -> list[dict]:
    shapes = [(2048, n, k) for n in (1536, 6144, 12288) for k in (1536, 6144, 12288)]
    shapes += [(k, n, 2048) for n in (1536, 6144, 12288) for k in (1536, 6144, 12288)]
    shapes += [(51200 // 8, 12288, 2048), (2048, 51200 // 8, 12288)]
    return [{"workload": "gemm", "backend": "torch", "dtype": "bf16", "status": "ok",
             "correct": correct, "params": {"m": m, "n": n, "k": k},
             "device": {"model": device}, "tflops": tflops, "median_s": 1e-3, "run_id": "t",
             "host": "node-1"}
            for m, n, k in shapes]


def test_measured_frame_is_preferred_over_fallbacks(meas):
    slow = pd.DataFrame(gemm_rows("H100-SXM", 300.0))
    base = estimate(EXAMPLE, meas)
    measured = estimate(EXAMPLE, slow)  # a frame: measured rows, then reference, then fallbacks
    assert measured.step_time_s > base.step_time_s * 1.3
    assert measured.sources["gemm.qkv"].startswith("measured")
    assert "fallback" in base.sources["gemm.qkv"]
    # rows that failed their correctness check do not count
    wrong = estimate(EXAMPLE, pd.DataFrame(gemm_rows("H100-SXM", 300.0, correct=False)))
    assert wrong.step_time_s == pytest.approx(base.step_time_s)
    # rows of another architecture do not count either; those of the same silicon (an H200's
    # for this H100 job: same SMs and clocks) do, said in the source
    other = estimate(EXAMPLE, pd.DataFrame(gemm_rows("A100-SXM-80GB", 300.0)))
    assert other.step_time_s == pytest.approx(base.step_time_s)
    sibling = estimate(EXAMPLE, pd.DataFrame(gemm_rows("H200-SXM", 300.0)))
    assert sibling.step_time_s == pytest.approx(measured.step_time_s)
    assert "H200-SXM's measured rows" in sibling.sources["gemm.qkv"]


def mixed(parallel, mixed_batch="plain_dp"):
    return {"model": "gpt3-175b", "parallel": parallel, "global_batch_tokens": 2048 * 1024,
            "mixed_batch": mixed_batch,
            "cluster": {"pools": [{"gpu": "H100-SXM", "gpus": 512},
                                  {"gpu": "H200-SXM", "gpus": 512}]}}


def test_mixed_cluster_plain_vs_proportional():
    # H200 GEMMs measured 1.5x faster than H100's: plain data parallelism waits for the H100s,
    # proportional shares give the H200 replicas more micro-batches
    frame = pd.DataFrame(gemm_rows("H100-SXM", 500.0) + gemm_rows("H200-SXM", 750.0))
    meas = Measurements(frame, use_reference=False)
    par = {"tp": 8, "pp": 4, "dp": 32, "micro_batch": 1, "recompute": "none"}
    plain = estimate(mixed(par), meas)
    d = plain.to_dict()
    h100, h200 = d["per_type"]["H100-SXM"], d["per_type"]["H200-SXM"]
    assert d["step_time_s"] == pytest.approx(max(h100["own_step_time_s"],
                                                 h200["own_step_time_s"]))
    assert h100["idle_s"] == 0 and h200["idle_s"] > 0
    assert h100["microbatches"] == h200["microbatches"] == 32  # 1024 sequences / dp 32
    prop = estimate(mixed(par, "proportional"), meas).to_dict()
    assert prop["per_type"]["H200-SXM"]["microbatches"] > prop["per_type"]["H100-SXM"][
        "microbatches"]
    assert prop["tokens_per_s"] > d["tokens_per_s"] * 1.1
    uneven = dict(mixed({"tp": 8, "pp": 64, "dp": 2}),
                  cluster={"pools": [{"gpu": "H100-SXM", "gpus": 768},
                                     {"gpu": "H200-SXM", "gpus": 256}]})
    with pytest.raises(ScenarioError, match="replicas cannot mix"):
        estimate(uneven, meas)


# --- cluster-scale questions --------------------------------------------------------------------


def test_cluster_throughput_and_days_to_train(meas):
    rows = scaling.cluster_throughput(models=("gpt3-175b",), clusters=("colossus-100k",),
                                      measurements=meas)
    (r,) = rows
    assert r["gpus"] == 100_000 and r["token_budget"] == 300e9
    # the goodput's useful fraction of wall time applied to the time to train
    assert r["days_to_train_no_failures"] == pytest.approx(300e9 / r["tokens_per_s"] / 86400)
    assert r["days_to_train"] == pytest.approx(r["days_to_train_no_failures"] /
                                               r["useful_fraction"])
    assert 0 < r["useful_fraction"] < 1
    assert 0.05 < r["mfu"] < 0.7
    # the batch is a labelled input: Llama 3's 16M tokens unless given
    assert r["global_batch_tokens"] >= 16 * 2**20 - 2048 and "Llama 3" in r["global_batch_source"]


def test_h200_gain_and_200k(meas):
    g = scaling.h200_gain("llama3-70b", gpus=1024, measurements=meas)
    # its own configuration is never worse than the H100's configuration on H200
    assert g["h200_own_config"]["tokens_per_s"] >= g["h200_same_config"]["tokens_per_s"]
    assert g["h200_same_config"]["parallel"] == g["h100"]["parallel"]
    rows = scaling.colossus_200k_gain("llama3-70b", meas, clusters=("colossus-200k-h200",))
    (r,) = rows
    assert r["gpus"] == 200_000 and r["gain_one_job_same_layout"] > 0.9
    m = scaling.mixed_job("llama3-70b", "colossus-200k", meas)
    assert set(m["plain_dp"]["per_type"]) == {"H100-SXM", "H200-SXM"}
    assert m["gain"] > 0.95


def test_power_against_the_reported_site(meas):
    p = scaling.power("colossus-100k", "llama3-70b", meas)
    assert p["gpu_mw"] == pytest.approx(70.0)  # 100k x 700 W TDP (no measurements)
    assert p["site_mw"] == pytest.approx(150, rel=0.2)  # ~150 MW reported
    assert p["joules_per_token"] == pytest.approx(p["site_mw"] * 1e6 / p["tokens_per_s"])
    assert "assumption" in p["sources"]["gpu_power.H100-SXM"]
    frame = pd.DataFrame(gemm_rows("H100-SXM", 700.0))
    frame["telemetry"] = [{"power_w_mean": 600.0}] * len(frame)
    measured = scaling.power("colossus-100k", "llama3-70b",
                             Measurements(frame, use_reference=False))
    assert measured["gpu_mw"] == pytest.approx(60.0)


def test_goodput_young_daly():
    assert scaling.young_daly_interval(60, 3600) == pytest.approx(math.sqrt(2 * 60 * 3600))
    rows = scaling.goodput()
    assert [r["gpus"] for r in rows] == [16384, 100_000, 200_000]
    rate = 419 / (16384 * 54 * 24)
    assert rows[0]["mtbf_s"] == pytest.approx(3600 / (rate * 16384))
    assert rows[1]["mtbf_s"] / 60 == pytest.approx(30, rel=0.05)  # one every ~30 min at 100k
    fractions = [r["useful_fraction"] for r in rows]
    assert fractions == sorted(fractions, reverse=True) and 0 < fractions[-1] < fractions[0] < 1
    assert fractions[0] == pytest.approx(0.9, abs=0.02)  # Llama 3: > 90% at 16k
    # small overheads: close to the first-order 1 - d/tau - (tau/2 + R)/M
    d, r, m = 10.0, 20.0, 1e6
    tau = scaling.young_daly_interval(d, m)
    assert scaling.useful_fraction(d, r, m) == pytest.approx(1 - d / tau - (tau / 2 + r) / m,
                                                             abs=1e-4)
    with pytest.raises(ValueError):
        scaling.goodput(failures_per_gpu_hour=0)


def test_estimate_object():
    est = estimate(EXAMPLE)
    assert isinstance(est, Estimate)
    assert est.days_to_train(est.tokens_per_s * 86400) == pytest.approx(1.0)


# --- the checks: range, batch presets, H200 reasons, mixed clusters -----------------------


def test_estimate_carries_a_range_and_a_labelled_batch(meas):
    d = estimate(dict(EXAMPLE, global_batch_tokens="llama3"), meas).to_dict()
    lo, hi = d["range"]["tokens_per_s"]
    assert lo <= d["tokens_per_s"] <= hi and lo < hi
    assert d["range"]["mfu"][0] <= d["mfu"] <= d["range"]["mfu"][1]
    assert d["global_batch_tokens"] == 16 * 2**20 and "Llama 3" in d["global_batch_source"]
    assert d["parallel"]["schedule"] == "1f1b"
    with pytest.raises(ScenarioError, match="unknown global_batch_tokens preset"):
        load_scenario(dict(EXAMPLE, global_batch_tokens="huge"))


def test_interleaving_needs_microbatches_divisible_by_pp(meas):
    # 2048 sequences / dp 64 = 32 micro-batches: fine for pp 8; 12 layers per stage, v=3 fine
    ok = estimate(dict(EXAMPLE, parallel=dict(EXAMPLE["parallel"], virtual_stages=3)), meas)
    assert ok.parallel.schedule == "interleaved-1f1b"
    bad = dict(EXAMPLE, global_batch_tokens=2048 * 64 * 3,  # 3 micro-batches per pipeline
               parallel=dict(EXAMPLE["parallel"], virtual_stages=2))
    with pytest.raises(ScenarioError, match="not a multiple of pp"):
        estimate(bad, meas)
    with pytest.raises(ScenarioError, match="equal chunks"):
        estimate(dict(EXAMPLE, parallel=dict(EXAMPLE["parallel"], virtual_stages=5)), meas)


def test_h200_gain_has_reasons_and_is_not_below_one(meas):
    g = scaling.h200_gain("llama3-70b", gpus=1024, measurements=meas)
    assert g["h200_same_config"]["gain"] >= 1.0  # same ceiling, faster memory-bound work
    assert g["h200_own_config"]["gain"] >= g["h200_same_config"]["gain"]
    assert g["reasons"] and all(isinstance(r, str) for r in g["reasons"])
    ceil = g["gemm_8192_tflops"]  # one ceiling for the same silicon when nothing is measured
    assert ceil["H100-SXM"]["tflops"] == ceil["H200-SXM"]["tflops"]
    assert "798" in ceil["H100-SXM"]["source"] and "788" in ceil["H100-SXM"]["source"]


def test_mixed_cluster_is_never_below_its_parts(meas):
    m = scaling.mixed_job("llama3-70b", "colossus-200k", meas)
    parts = m["separate_jobs"]["per_type"]
    assert m["best_tokens_per_s"] >= max(m["plain_dp"]["tokens_per_s"],
                                         m["proportional"]["tokens_per_s"])
    assert m["best_tokens_per_s"] >= sum(p["tokens_per_s"] for p in parts.values()) * (1 - 1e-9)
    assert m["reason"]
    (r,) = scaling.colossus_200k_gain("llama3-70b", meas, clusters=("colossus-200k",))
    # the 200k cluster keeps the option of running the 100k job unchanged beside a new one
    assert r["mixed_tokens_per_s"] >= r["colossus_100k_tokens_per_s"]
    assert r["gain_vs_100k_h100"] >= 1.0
    assert r["gain_vs_best"] >= 1.0 or "below" in r["reason"]


def test_batch_sensitivity(meas):
    rows = scaling.batch_sensitivity("llama3-70b", "colossus-100k",
                                     batches=(4 * 2**20, 64 * 2**20), measurements=meas)
    assert rows[0]["tokens_per_s"] < rows[1]["tokens_per_s"]  # a small batch starves 100k GPUs


def test_estimate_notes_say_what_a_planner_must_know():
    """A mixed preset's estimate is one job only, and says so; a bubble-bound step says why."""
    d = estimate("colossus-200k-llama3-405b").to_dict()
    assert any("one job across every GPU type" in n for n in d["notes"])
    assert any("pipeline bubble" in n for n in d["notes"]) == (
        d["breakdown_s"]["pp_bubble"] / d["step_time_s"] > 0.25)
    assert estimate("gpt3-4096-h100").to_dict()["notes"] == [] or all(
        "one job" not in n for n in estimate("gpt3-4096-h100").to_dict()["notes"])


def test_eos_fabric_sources_say_ndr_not_hdr():
    fabric = CLUSTERS["eos-h100"].fabric
    assert fabric.name == "ndr-ib-400g" and fabric.gbps_per_gpu == 400.0
    assert all("HDR" not in text and "A100" not in text for text in fabric.sources.values())
    assert "NDR InfiniBand" in fabric.sources["efficiency"]


def test_cluster_throughput_and_h200_gain_carry_ranges(meas):
    (r,) = scaling.cluster_throughput(models=("gpt3-175b",), clusters=("colossus-100k",),
                                      measurements=meas)
    lo, hi = r["range"]["tokens_per_s"]
    assert lo <= r["tokens_per_s"] <= hi
    assert r["range"]["mfu"][0] <= r["mfu"] <= r["range"]["mfu"][1]
    g = scaling.h200_gain("llama3-70b", gpus=1024, measurements=meas)
    for k in ("h100", "h200_same_config", "h200_own_config"):
        lo, hi = g[k]["range"]["tokens_per_s"]
        assert lo <= g[k]["tokens_per_s"] <= hi


@pytest.mark.parametrize("text, key", [
    ("model: llama3-70b\nmodel: llama3-405b\ncluster: colossus-100k\n", "model"),
    ('{"model": "llama3-70b", "model": "x", "cluster": "colossus-100k"}', "model"),
    ("model: llama3-70b\ncluster: {gpu: H100-SXM, gpus: 64, gpus: 128}\n", "gpus"),
])
def test_a_key_given_twice_is_refused(tmp_path, text, key):
    """JSON and YAML keep the last of a repeated key silently; the strict key rules did not
    see the first (found by a new-user trial)."""
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError, match=f"^scenario key '{key}' is given twice$"):
        load_scenario(str(f))


def test_yaml_anchors_and_merge_keys_still_load():
    from reports.model.scenario import parse_text

    got = parse_text("base: &b {gpu: H100-SXM, gpus: 64}\ncluster: {<<: *b, gpus: 128}\n")
    assert got["cluster"] == {"gpu": "H100-SXM", "gpus": 128}
    assert parse_text("=: 1\nmodel: x\n") == {"=": 1, "model": "x"}  # YAML's value key, as text
