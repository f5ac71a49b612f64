"""The scaling model's formulas on hand-checked cases, and measurements over fallbacks."""

import math
from dataclasses import replace

import pandas as pd
import pytest

from reports.model import hardware
from reports.model.cluster_spec import cluster_from_dict
from reports.model.comm import (
    DEEPSPEED_P2P_EXPOSURE,
    allreduce_seconds,
    dp_bucket_count,
    hierarchical_reduce_scatter_seconds,
    overlap_exposed,
    pp_seconds,
    reduce_scatter_seconds,
)
from reports.model.compute import flops_per_token, narayanan_flops_per_iteration
from reports.model.config import Parallel, ScenarioError, Training, training_from
from reports.model.measurements import (
    GEMM_ANCHOR,
    Measurements,
    anchor_rate,
    as_measurements,
    gemm_time_fallback,
)
from reports.model.memory import (
    USABLE_MEMORY_FRACTION,
    activation_bytes_per_layer,
    end_params,
    memory_per_gpu,
    rank_params,
    state_bytes_per_param,
)
from reports.model.pipeline import bubble_fraction, stage_layers
from reports.model.presets import MODELS, Model, model_from, padded_vocab
from reports.model.step import step_time

# GPT-3 as Megatron prices it: the GPT-2 BPE's 50,257 padded to 51,200 at tp 8 (the V that
# Narayanan et al. 2021 state); the shape table keeps the tokenizer's 50,257
GPT3_51200 = replace(MODELS["gpt3-175b"], vocab=51200)

H100 = hardware.gpu("H100-SXM")


def no_ref(frame=None) -> Measurements:
    return Measurements(frame, use_reference=False)


# --- FLOPs --------------------------------------------------------------------------------------


def test_flops_per_token_gpt3_175b_by_hand():
    # N = 96 layers x 12 h^2 + h V = 173,946,175,488 + 629,145,600 matmul weights
    n = 96 * 12 * 12288**2 + 12288 * 51200
    assert n == 174_575_321_088
    # 6N + 12 l s h (attention over the full s x s, PaLM's convention)
    expect = 6 * n + 12 * 96 * 2048 * 12288
    assert flops_per_token(GPT3_51200, "full") == pytest.approx(expect, rel=1e-12)
    assert flops_per_token(GPT3_51200, "full") == pytest.approx(1.0764e12, rel=1e-4)
    # causal attention counted as computed: half the 12 l s h term
    assert flops_per_token(GPT3_51200) == pytest.approx(expect - 6 * 96 * 2048 * 12288)


def test_flops_per_token_equals_narayanan_without_recompute():
    m = GPT3_51200
    per_iter = narayanan_flops_per_iteration(1536, 2048, 96, 12288, 51200, recompute=False)
    assert flops_per_token(m, "full") == pytest.approx(per_iter / (1536 * 2048), rel=1e-12)


def test_narayanan_formula_small_numbers():
    # B=1, s=6, l=1, h=1, V=16: 96 * 6 * (1 + 6/6 + 16/16) = 1728; without recompute
    # 72 * 6 * (1 + 1 + 16/12) = 1440
    assert narayanan_flops_per_iteration(1, 6, 1, 1, 16) == pytest.approx(1728)
    assert narayanan_flops_per_iteration(1, 6, 1, 1, 16, recompute=False) == pytest.approx(1440)
    # recompute adds exactly one forward pass to the layers: 96/72 on the l h^2 term
    r = narayanan_flops_per_iteration(8, 2048, 128, 25600, 0) / \
        narayanan_flops_per_iteration(8, 2048, 128, 25600, 0, recompute=False)
    assert r == pytest.approx(96 / 72)


def test_model_params_match_megatron_table_sizes():
    # Narayanan et al. 2021 Table 1 parameter counts (billions)
    for name, billions in [("megatron-1.7b", 1.7), ("megatron-18.4b", 18.4),
                           ("megatron-145.6b", 145.6), ("megatron-1t", 1008.0)]:
        assert MODELS[name].params() / 1e9 == pytest.approx(billions, rel=0.03), name
    assert MODELS["llama3-405b"].params() / 1e9 == pytest.approx(405, rel=0.02)
    assert MODELS["llama3-70b"].params() / 1e9 == pytest.approx(70.6, rel=0.02)


# --- pipeline -----------------------------------------------------------------------------------


def test_bubble_fraction():
    assert bubble_fraction(8, 32) == pytest.approx(7 / 32)
    assert bubble_fraction(8, 32, 2) == pytest.approx(7 / 64)
    assert bubble_fraction(1, 5) == 0.0
    with pytest.raises(ValueError):
        bubble_fraction(8, 0)


def test_stage_layers():
    assert stage_layers(96, 8) == (12, 12)
    assert stage_layers(126, 16) == (8, 7)  # Llama 3 405B: fewer layers on the last stage
    assert stage_layers(128, 25) == (6, 5)
    with pytest.raises(ScenarioError, match="exceeds"):
        stage_layers(4, 8)


# --- communication ------------------------------------------------------------------------------


def test_busbw_based_collective_times():
    # 1 GB all-reduce on 8 ranks at busbw 350 GB/s: 1e9 * 2*7/8 / 350e9 = 5 ms; ring latency
    # 2*(8-1) = 14 steps
    assert allreduce_seconds(1e9, 8, 350, 0) == pytest.approx(5e-3)
    assert allreduce_seconds(1e9, 8, 350, 1e-6) == pytest.approx(5e-3 + 14e-6)
    assert reduce_scatter_seconds(1e9, 8, 350, 0) == pytest.approx(2.5e-3)
    assert allreduce_seconds(1e9, 1, 350, 1e-6) == 0.0


def test_hierarchical_allreduce_reproduces_measured_busbw():
    # 248 nodes x 8 H200, 8x400G per node: ~350 GB/s all-reduce busbw (nccl-tests #283)
    nbytes = 8 * 2**30
    rs = hierarchical_reduce_scatter_seconds(nbytes, 8, 248, 366, 47.5, 0, 0)
    n = 8 * 248
    busbw = nbytes / (2 * rs) * 2 * (n - 1) / n / 1e9
    assert busbw == pytest.approx(350, rel=0.15)


def test_overlap_exposed():
    assert overlap_exposed(1.0, 3.0, 0.15) == pytest.approx(0.15)  # hidden, SMs shared
    assert overlap_exposed(3.0, 1.0, 0.15) == pytest.approx(2.15)
    assert overlap_exposed(1.0, 0.0, 0.15) == pytest.approx(1.0)


def test_dp_buckets_megatron_default():
    # bucket = max(40M, 1M x dp) parameters
    assert dp_bucket_count(3.2e9, 781) == 5
    assert dp_bucket_count(100e6, 8) == 3
    assert dp_bucket_count(1e6, 8) == 1


# --- memory -------------------------------------------------------------------------------------


def test_state_bytes_per_param():
    assert sum(state_bytes_per_param(0, 8).values()) == 18
    assert sum(state_bytes_per_param(1, 8).values()) == pytest.approx(6 + 12 / 8)
    assert sum(state_bytes_per_param(3, 8).values()) == pytest.approx(18 / 8)


def gpt(hidden=64, heads=4, seq=32) -> Model:
    return Model("gpt", 2, hidden, heads, heads, 4 * hidden, 100, seq, dropout=True)


def test_activation_memory_korthikanti_formulas():
    m = gpt(hidden=64, heads=8, seq=32)
    s, b, h, a, t = 32, 2, 64, 8, 8
    sbh = s * b * h
    # no parallelism: s b h (34 + 5 a s / h)
    assert activation_bytes_per_layer(m, b, s, 1, False, "none", False) == \
        pytest.approx(sbh * (34 + 5 * a * s / h))
    # tensor parallel, no sequence parallel: s b h (10 + 24/t + 5 a s / (h t))
    assert activation_bytes_per_layer(m, b, s, t, False, "none", False) == \
        pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    # tensor + sequence parallel: s b h (34/t + 5 a s / (h t))
    assert activation_bytes_per_layer(m, b, s, t, True, "none", False) == \
        pytest.approx(sbh * (34 / t + 5 * a * s / (h * t)))
    # selective recomputation with sequence parallelism: 34 s b h / t
    assert activation_bytes_per_layer(m, b, s, t, True, "selective", False) == \
        pytest.approx(sbh * 34 / t)
    # full recomputation: the layer input only, 2 s b h (/ t with sequence parallelism)
    assert activation_bytes_per_layer(m, b, s, t, True, "full", False) == pytest.approx(2 * sbh / t)
    assert activation_bytes_per_layer(m, b, s, t, False, "full", False) == pytest.approx(2 * sbh)
    # a flash kernel stores no s x s scores
    assert activation_bytes_per_layer(m, b, s, 1, False, "none", True) == \
        pytest.approx(sbh * 34)


def test_memory_of_a_small_config_by_hand():
    m = Model("tiny", 2, 64, 4, 4, 256, 100, 32)  # no dropout, no gating
    par = Parallel(tp=1, pp=1, cp=1, dp=2, micro_batch=1, recompute="none")
    mem = memory_per_gpu(m, par, Training(), microbatches=4)
    layer = 64 * (64 + 128) + 64 * 64 + 2 * 64 * 256 + 2 * 64  # QKV, proj, MLP, norms
    assert layer == 49280
    params = 2 * layer + 100 * 64 + 100 * 64  # layers, embedding, output layer
    assert mem["weights"] == pytest.approx(2 * params)
    assert mem["grads"] == pytest.approx(4 * params)
    assert mem["optimizer"] == pytest.approx(12 / 2 * params)  # ZeRO-1 over dp = 2
    # 32 s b h per layer (Korthikanti's 34 less two dropout masks), 2 layers, one micro-batch
    # in flight (no pipeline) + logits 6 B x s x V
    sbh = 32 * 1 * 64
    assert mem["activations"] == pytest.approx(2 * 32 * sbh + 6 * 32 * 100)
    assert sum(mem.values()) == pytest.approx(1_486_592)


def test_embedding_and_output_layer_on_the_stages():
    llama = MODELS["llama3-70b"]  # untied: the output layer is a second vocab x hidden matrix
    vh = 128256 * 8192
    assert end_params(llama, 1) == (2 * vh, 2 * vh)  # one stage holds both ends
    assert end_params(llama, 4) == (vh, vh)
    gpt3 = GPT3_51200  # tied, learned positions
    emb = 51200 * 12288 + 2048 * 12288
    assert end_params(gpt3, 1) == (emb, emb)  # the output layer is the embedding
    assert end_params(gpt3, 8) == (emb, 51200 * 12288)  # the last stage keeps a copy
    layer = llama.layer_params()
    assert rank_params(llama, 1) == [80 * layer + 2 * vh]
    assert rank_params(llama, 1)[0] == pytest.approx(llama.params())
    assert rank_params(llama, 4) == [20 * layer + vh, 20 * layer, 20 * layer, 20 * layer + vh]


def test_llama3_layout_puts_one_layer_fewer_on_the_end_ranks():
    """126 layers over pp 16 x v 8: (126 + 2) / 128 = 1 layer per chunk, less one on the first
    chunk (beside the embedding) and the last (beside the output layer), as Llama 3 did. The
    fullest rank is a middle one (8 layers); none holds 8 layers and the embedding."""
    m = MODELS["llama3-405b"]
    layer, vh = m.layer_params(), 128256 * 16384
    ranks = rank_params(m, 16, 8)
    assert ranks[0] == 7 * layer + vh and ranks[-1] == 7 * layer + vh
    assert set(ranks[1:-1]) == {8 * layer} and max(ranks) == 8 * layer
    assert sum(ranks) == pytest.approx(m.params())


def test_dp_gradients_and_memory_count_the_same_parameters():
    """pp = 1, untied (llama3-70b): the one stage's gradients, optimizer shard and weights all
    include both the embedding and the output layer (~1.05B parameters, /tp)."""
    m = MODELS["llama3-70b"]
    clu = hardware.cluster("colossus-100k")
    meas = no_ref()
    tp, dp = 8, 4
    par = Parallel(tp=tp, pp=1, dp=dp, recompute="full")
    st = step_time(m, par, Training(), clu, H100, meas, microbatches=2)
    # Megatron pads the vocabulary to a multiple of 128 x tp: 128,256 -> 129,024 at tp 8
    vocab = padded_vocab(128256, tp)
    assert vocab == 129024
    params_local = (80 * m.layer_params() + 2 * vocab * 8192) / tp
    assert params_local * tp == pytest.approx(m.params(), rel=1e-3)
    hbm = meas.hbm_tbps(H100).value * 1e12
    # Adam over the ZeRO-1 shard, 30 B per parameter
    assert st.breakdown_s["optimizer"] == pytest.approx(params_local / dp * 30 / hbm)
    assert st.memory_bytes["weights"] == pytest.approx(2 * params_local)
    assert st.memory_bytes["grads"] == pytest.approx(4 * params_local)
    # tying drops exactly the output layer from both
    tied = step_time(replace(m, tied_embeddings=True), par, Training(), clu, H100, meas, 2)
    assert tied.memory_bytes["weights"] == pytest.approx(2 * (params_local - vocab * 8192 / tp))
    assert tied.breakdown_s["optimizer"] < st.breakdown_s["optimizer"]
    assert tied.breakdown_s["dp_comm"] < st.breakdown_s["dp_comm"]


def test_memory_capacity_is_the_driver_reported_gib():
    # H100 80GB HBM3: torch total_memory 85,520,809,984 B = 79.6 GiB (not 80e9 B = 74.5 GiB)
    assert H100.memory_bytes == 85_520_809_984
    assert H100.memory_bytes / 2**30 == pytest.approx(79.65, abs=0.01)
    assert hardware.gpu("H200-SXM").memory_bytes / 2**30 == pytest.approx(140.4, abs=0.1)
    # A100-SXM4-80GB: torch reports 79.35 GiB, 0.65 below nvidia-smi's 81,920 MiB
    assert hardware.gpu("A100-SXM-80GB").memory_bytes / 2**30 == pytest.approx(79.35, abs=0.001)
    for g in hardware.GPUS.values():
        assert "memory_total_bytes" in g.sources and g.node_gpus == 8
    st = step_time(MODELS["gpt3-175b"], Parallel(tp=8, pp=8, dp=4), Training(),
                   hardware.cluster("colossus-100k"), H100, no_ref(), microbatches=16)
    assert st.capacity_bytes == pytest.approx(USABLE_MEMORY_FRACTION * 85_520_809_984)


def test_pipeline_keeps_p_microbatches_in_flight():
    m = MODELS["gpt3-175b"]
    t = Training()
    a1 = memory_per_gpu(m, Parallel(tp=8, pp=8, dp=1, recompute="full"), t, 64)["activations"]
    a2 = memory_per_gpu(m, Parallel(tp=8, pp=8, dp=1, recompute="full"), t, 2)["activations"]
    assert a1 > a2  # only min(p, m) micro-batches can be in flight
    inter = memory_per_gpu(m, Parallel(tp=8, pp=8, dp=1, virtual_stages=2, recompute="full"),
                           t, 64)["activations"]
    assert inter > a1  # interleaving: x (1 + (p-1)/(p v))


# --- the step -----------------------------------------------------------------------------------


def test_step_time_breakdown_adds_up_and_pipeline_bubble():
    m = MODELS["gpt3-175b"]
    par = Parallel(tp=8, pp=8, cp=1, dp=4, micro_batch=1, recompute="none")
    clu = hardware.cluster("colossus-100k")
    st = step_time(m, par, Training(), clu, H100, no_ref(), microbatches=16)
    assert st.step_s == pytest.approx(sum(st.breakdown_s.values()))
    assert st.breakdown_s["pp_bubble"] == pytest.approx(7 / 16 * 16 * st.microbatch_s)
    assert st.breakdown_s["compute"] > 0 and st.breakdown_s["tp_comm"] > 0
    assert st.fits
    full = step_time(m, Parallel(tp=8, pp=8, dp=4, recompute="full"), Training(), clu, H100,
                     no_ref(), microbatches=16)
    assert full.breakdown_s["recompute"] > 0 and full.step_s > st.step_s
    assert full.memory_total < st.memory_total


def test_model_and_parallel_errors():
    with pytest.raises(ScenarioError, match="not divisible by heads"):
        Model("x", 2, 100, 3, 3, 400, 10, 16)
    with pytest.raises(ScenarioError, match="positive integer"):
        Model("x", 0, 64, 4, 4, 256, 10, 16)
    with pytest.raises(ScenarioError, match="recompute"):
        Parallel(recompute="some")
    with pytest.raises(ScenarioError, match="virtual_stages"):
        Parallel(pp=1, virtual_stages=2)
    with pytest.raises(ScenarioError, match="unknown model keys"):
        model_from({"layers": 2, "hidden": 64, "heads": 4, "vocab": 10, "seq_len": 8, "x": 1})
    with pytest.raises(ScenarioError, match="missing"):
        model_from({"layers": 2})
    with pytest.raises(ScenarioError, match="unknown model preset"):
        model_from("gpt-5")
    with pytest.raises(ScenarioError, match="unknown training keys"):
        training_from({"flash": True})
    with pytest.raises(ScenarioError, match="attention"):
        training_from({"attention": "slow"})


@pytest.mark.parametrize("spec, message", [
    ({"tp_overlap": "x"}, "training tp_overlap must be a number, got 'x'"),
    ({"tp_overlap": True}, "tp_overlap must be a number"),
    ({"tp_overlap": 1.5}, "tp_overlap must be in"),
    # a quoted "false" in YAML/JSON is a non-empty string: bool("false") would be True
    ({"causal": "false"}, "training causal must be true or false"),
    ({"sequence_parallel": "false"}, "training sequence_parallel must be true or false"),
    ({"overlap_grad_reduce": 0}, "overlap_grad_reduce must be true or false"),
    ({"async_dgrad": "yes"}, "training async_dgrad must be true or false"),
    ({"zero": True}, "training zero must be an integer"),
    ({"zero": "1"}, "training zero must be an integer"),
    ({"grad_bytes": 4.0}, "grad_bytes must be an integer"),
    ({"attention": ["flash"]}, "attention must be a string"),
    ({"grad_accum": "unfused"}, "grad_accum must be one of fused, add, cast_add, got 'unfused'"),
    ({"grad_accum": 1}, "training grad_accum must be a string"),
])
def test_training_types_are_checked(spec, message):
    with pytest.raises(ScenarioError, match=message):
        training_from(spec)


def test_training_accepts_real_types():
    t = training_from({"causal": False, "sequence_parallel": False, "tp_overlap": 0, "zero": 3})
    assert t.causal is False and t.sequence_parallel is False and t.tp_overlap == 0
    t = training_from({"sequence_parallel": True, "tp_overlap": 1})
    assert t.sequence_parallel is True and t.tp_overlap == 1


def test_tp_overlap_without_sequence_parallel_is_refused():
    """Transformer Engine overlaps the sequence-parallel collectives only: without sequence
    parallelism a tp_overlap used to be ignored silently (the step time of 0)."""
    with pytest.raises(ScenarioError, match=r"tp_overlap 1 needs sequence_parallel: true"):
        training_from({"tp_overlap": 1, "sequence_parallel": False})
    with pytest.raises(ScenarioError, match=r"tp_overlap 0.5 needs sequence_parallel"):
        training_from({"tp_overlap": 0.5, "sequence_parallel": False})


@pytest.mark.parametrize("change, message", [
    ({"gated_mlp": "false"}, "model gated_mlp must be true or false"),
    ({"tied_embeddings": 1}, "model tied_embeddings must be true or false"),
    ({"hidden": "64"}, "model hidden must be a positive integer"),
    ({"hidden": 64.0}, "model hidden must be a positive integer"),
    ({"layers": True}, "model layers must be a positive integer"),
    ({"name": 7}, "model name must be a string"),
])
def test_model_dict_types_are_checked(change, message):
    spec = {"layers": 2, "hidden": 64, "heads": 4, "vocab": 10, "seq_len": 8, **change}
    with pytest.raises(ScenarioError, match=message):
        model_from(spec)


def test_parallel_types_are_checked():
    with pytest.raises(ScenarioError, match="parallel tp must be a positive integer"):
        Parallel(tp="8")
    with pytest.raises(ScenarioError, match="recompute"):
        Parallel(recompute=["full"])


# --- measurements -------------------------------------------------------------------------------


def test_fallback_gemm_model_reproduces_its_anchor():
    hbm = 3.0
    t = gemm_time_fallback(8192, 8192, 8192, H100, 798.0, hbm)
    assert 2 * 8192**3 / t / 1e12 == pytest.approx(798.0)
    assert anchor_rate(798.0) > 798e12  # the launch cost comes on top
    # small GEMMs are slower per FLOP (launch and memory bound)
    small = gemm_time_fallback(256, 256, 256, H100, 798.0, hbm)
    assert 2 * 256**3 / small / 1e12 < 100


def row(workload, params, device="H100-SXM", status="ok", correct=True, **kw):
    """A whole record, as a table holds it (the usable-rows rule checks every field)."""
    from results.schema import Result

    # a throughput is its work over its median (results/validate.py checks that they agree)
    if any(kw.get(k) is not None for k in ("tflops", "gbps", "algbw_gbps", "busbw_gbps")):
        t = kw.setdefault("median_s", 1e-3)
        if kw.get("tflops") is not None:
            kw.setdefault("flops", kw["tflops"] * 1e12 * t)
        if kw.get("gbps") is not None:
            kw.setdefault("bytes", kw["gbps"] * 1e9 * t)
    return Result(id=f"{workload}-{len(str(params))}-{len(kw)}", run_id="r1", workload=workload,
                  backend=kw.pop("backend", "torch"), dtype=kw.pop("dtype", "bf16"),
                  params=params, host="node-1", device={"model": device}, status=status,
                  correct=correct, telemetry=kw.pop("telemetry", {"source": "none"}),
                  **kw).to_dict()


def test_measured_rows_are_preferred_and_bad_rows_ignored():
    frame = pd.DataFrame([
        row("gemm", {"m": 4096, "n": 4096, "k": 4096}, tflops=600.0),
        row("gemm", {"m": 4096, "n": 4096, "k": 4096}, tflops=650.0, backend="triton"),
        row("gemm", {"m": 4096, "n": 4096, "k": 4096}, tflops=900.0, correct=False),
        row("gemm", {"m": 4096, "n": 4096, "k": 4096}, tflops=950.0, status="failed"),
        row("gemm", {"m": 4096, "n": 4096, "k": 4096}, tflops=990.0, device="H200-SXM"),
        row("gemm", {"m": 16384, "n": 16384, "k": 16384}, tflops=750.0),
        row("membw", {"op": "copy", "bytes": 2**30}, gbps=2800.0),
        row("attention", {"s": 4096, "d": 128, "causal": True, "direction": "fwd"},
            tflops=500.0),
        row("attention", {"s": 16384, "d": 128, "causal": True, "direction": "fwd"},
            tflops=600.0),
        row("all_reduce", {"op": "all_reduce", "bytes": 2**30}, busbw_gbps=400.0,
            backend="nccl", world_size=8),
        row("gemm", {"m": 8192, "n": 8192, "k": 8192}, tflops=700.0,
            telemetry={"power_w_mean": 650.0}),
    ])
    meas = no_ref(frame)
    sec, fig = meas.gemm_seconds(H100, 4096, 4096, 4096)
    assert fig.kind == "measured" and fig.value == 650.0  # best correct ok row, any backend
    assert "triton" in fig.source
    assert sec == pytest.approx(2 * 4096**3 / 650e12)
    # between measured shapes: interpolated from the nearest, inside their range
    _, mid = meas.gemm_seconds(H100, 8192, 8192, 4096)
    assert mid.kind == "measured" and 600 <= mid.value <= 750 and "interpolated" in mid.source
    assert meas.hbm_tbps(H100).value == pytest.approx(2.8)
    a = meas.attention_tflops(H100, 8192, 128, True, "fwd")
    assert a.value == pytest.approx(550.0) and a.kind == "measured"  # halfway in log s
    assert meas.attention_tflops(H100, 8192, 128, True, "bwd").kind == "assumption"
    assert meas.nvlink_busbw_gbps(H100).value == 400.0
    assert meas.gemm_power_w(H100).value == 650.0
    # each type with rows of its own is priced from them (the H200 row is not the H100's best
    # row, nor the H100 rows the H200's); the other type's value is stated as the spread
    h200 = hardware.gpu("H200-SXM")
    _, f200 = meas.gemm_seconds(h200, 4096, 4096, 4096)
    assert f200.kind == "measured" and f200.value == 990.0
    assert "H100-SXM's rows give 650" in f200.source and "H200-SXM's rows give 990" in fig.source
    # the H200's attention and power: nothing of its own, so its attention comes from the H100's
    # rows (same SMs and clocks); power stays per type
    a200 = meas.attention_tflops(h200, 8192, 128, True, "fwd")
    assert a200.value == a.value and "H100-SXM's measured rows" in a200.source
    assert "assumption" in meas.gemm_power_w(h200).source
    _, f_a100 = meas.gemm_seconds(hardware.gpu("A100-SXM-80GB"), 4096, 4096, 4096)
    assert f_a100.kind == "assumption" and "fallback" in f_a100.source


def test_nvlink_figure_uses_intra_node_all_reduce_rows_only():
    def ar(world, busbw, nbytes=2**30, op="all_reduce", **kw):
        params = {"bytes": nbytes} if op is None else {"op": op, "bytes": nbytes}
        return row("allreduce", params, busbw_gbps=busbw, backend="nccl", world_size=world, **kw)

    # across nodes (16 ranks), another collective, no op, a single rank: none are NVLink figures
    noise = [ar(16, 900.0), ar(8, 800.0, op="all_gather"), ar(8, 700.0, op=None), ar(1, 600.0)]
    assert no_ref(pd.DataFrame(noise)).nvlink_busbw_gbps(H100).kind == "assumption"
    # a full node (8 ranks) wins over a smaller world even with bigger messages or more GB/s
    fig = no_ref(pd.DataFrame([*noise, ar(4, 500.0, nbytes=2**32), ar(8, 360.0),
                               ar(8, 350.0, nbytes=2**20)])).nvlink_busbw_gbps(H100)
    assert fig.value == 360.0 and fig.kind == "measured" and "x8" in fig.source
    assert "smaller world" not in fig.source
    # only a smaller world measured: used, and the source says so
    fig = no_ref(pd.DataFrame([*noise, ar(2, 150.0), ar(4, 300.0)])).nvlink_busbw_gbps(H100)
    assert fig.value == 300.0 and "x4" in fig.source and "smaller world" in fig.source


def test_empty_frames_fall_back_to_labelled_anchors():
    meas = no_ref(pd.DataFrame(columns=["workload", "status"]))
    _, fig = meas.gemm_seconds(H100, 8192, 8192, 8192)
    assert fig.kind == "assumption" and "798" in fig.source
    assert fig.value == pytest.approx(GEMM_ANCHOR["H100-SXM"].value)
    assert meas.hbm_tbps(H100).value == 3.0
    assert meas.nvlink_busbw_gbps(H100).value == 370.0
    assert meas.gemm_power_w(H100).value == 700.0 and "assumption" in meas.gemm_power_w(H100).source
    assert isinstance(as_measurements(None), Measurements)
    with pytest.raises(TypeError):
        as_measurements(42)
    with pytest.raises(ValueError):
        meas.gemm_seconds(H100, 0, 1, 1)


def test_hardware_presets_carry_sources():
    for name, c in hardware.CLUSTERS.items():
        assert c.gpus > 0 and c.sources, name
        for p in c.pools:
            g = hardware.gpu(p.gpu)
            assert g.sources and g.bf16_tflops > 0 and g.memory_bytes > 0
    assert hardware.cluster("colossus-100k").gpus == 100_000
    assert hardware.cluster("colossus-200k").gpu_types == ["H100-SXM", "H200-SXM"]
    assert {p.gpu: p.gpus for p in hardware.cluster("colossus-200k-h200").pools} == \
        {"H100-SXM": 100_000, "H200-SXM": 100_000}
    # peaks come from the one table in bench.device; only the what-if GPU is added here
    from bench.device import PEAKS

    assert hardware.peaks_of("H100-SXM") is PEAKS["H100-SXM"]
    assert "B200-SXM" not in PEAKS or hardware.WHAT_IF_PEAKS == {}
    assert hardware.FABRICS["spectrum-x-400g"].busbw_gbps == pytest.approx(47.5)
    with pytest.raises(ValueError, match="unknown GPU"):
        hardware.gpu("V100")
    with pytest.raises(ValueError, match="unknown cluster keys"):
        cluster_from_dict({"gpu": "H100-SXM", "gpus": 8, "nics": 1})
    assert math.isclose(cluster_from_dict(
        {"gpu": "H100-SXM", "gpus": 16, "scale_out_gbps_per_gpu": 200}).fabric.busbw_gbps,
        200 / 8 * 0.95)


def test_zero2_and_bf16_gradients():
    # ZeRO-2 / FSDP keeping weights after the forward: gradients and optimizer state sharded
    assert sum(state_bytes_per_param(2, 8).values()) == pytest.approx(2 + 16 / 8)
    # bf16 main gradients where a framework keeps them
    assert sum(state_bytes_per_param(1, 8, grad_bytes=2).values()) == pytest.approx(4 + 12 / 8)
    assert training_from({"zero": 2}).zero == 2
    with pytest.raises(ScenarioError, match="zero must be 0, 1, 2 or 3"):
        training_from({"zero": 4})


def test_zero2_reduce_scatters_every_micro_batch():
    """Memory keeps only a 1/dp gradient shard under ZeRO-2, so the time must reduce-scatter
    each micro-batch's gradients (as DeepSpeed's ZeRO-2 and FSDP's SHARD_GRAD_OP do), not once
    per step as ZeRO-1 may; the weights are gathered once either way."""
    m, clu = MODELS["gpt3-175b"], hardware.cluster("colossus-100k")
    g = hardware.gpu(clu.pools[0].gpu)
    par = Parallel(tp=8, pp=8, dp=64, micro_batch=1, recompute="none")
    meas = no_ref()
    by_m = {z: {n: step_time(m, par, Training(zero=z), clu, g, meas, n) for n in (8, 16)}
            for z in (1, 2)}
    # ZeRO-1: the same exposed reduction at any number of micro-batches
    assert by_m[1][8].breakdown_s["dp_comm"] == pytest.approx(by_m[1][16].breakdown_s["dp_comm"])
    # ZeRO-2: the per-micro-batch part doubles with the micro-batches, the gather does not
    d8, d16 = by_m[2][8].breakdown_s["dp_comm"], by_m[2][16].breakdown_s["dp_comm"]
    assert d8 < d16 < 2 * d8
    assert "reduce-scatter every micro-batch" in by_m[2][8].sources["dp_comm"]
    # one micro-batch: the same traffic behind the same backward as ZeRO-1, never cheaper
    one = {z: step_time(m, par, Training(zero=z), clu, g, meas, 1).breakdown_s["dp_comm"]
           for z in (1, 2)}
    assert one[2] == pytest.approx(one[1])
    # overlap off: every micro-batch's reduce-scatter exposed, linear in the micro-batches
    off = [step_time(m, par, Training(zero=2, overlap_grad_reduce=False), clu, g, meas, n)
           for n in (8, 16, 24)]
    d = [o.breakdown_s["dp_comm"] for o in off]
    assert d[2] - d[1] == pytest.approx(d[1] - d[0]) and d[0] > d8
    assert "not overlapped" in off[0].sources["dp_comm"]
    # ZeRO-3 the same way: each micro-batch's gathers and reduce-scatter hide behind the next
    z3 = [step_time(m, par, Training(zero=3), clu, g, meas, n).breakdown_s["dp_comm"]
          for n in (8, 16, 24)]
    assert z3[2] - z3[1] == pytest.approx(z3[1] - z3[0]) and z3[1] > z3[0]
    z3_off = step_time(m, par, Training(zero=3, overlap_grad_reduce=False), clu, g, meas, 8)
    assert z3_off.breakdown_s["dp_comm"] > z3[0]
    # and the memory holds the shard, not the whole gradients
    assert by_m[2][8].memory_bytes["grads"] < by_m[1][8].memory_bytes["grads"] / 32


def test_per_micro_batch_reduction_longer_than_its_window_is_exposed():
    """On a slow fabric a micro-batch's reduce-scatter outlasts the next micro-batch's work: the
    excess is exposed every micro-batch, so each one adds at least its transfer minus the work."""
    m = MODELS["gpt3-175b"]
    clu = cluster_from_dict({"gpu": "H100-SXM", "gpus": 512, "scale_out_gbps_per_gpu": 10})
    g = hardware.gpu("H100-SXM")
    par = Parallel(tp=8, pp=8, dp=8, micro_batch=1, recompute="none")
    meas = no_ref()
    st = {n: step_time(m, par, Training(zero=2), clu, g, meas, n) for n in (8, 16)}
    per_mb = (st[16].breakdown_s["dp_comm"] - st[8].breakdown_s["dp_comm"]) / 8
    params = max(rank_params(m, 8, 1, 8)) / 8
    transfer = params * 4 * 7 / 8 / (clu.fabric.busbw_gbps * 1e9)
    assert transfer > 2 * st[8].microbatch_s  # the premise: far longer than the work
    assert per_mb >= transfer - st[8].microbatch_s


def test_interleaving_memory_and_schedule_rules():
    from reports.model.pipeline import inflight_microbatches, schedule_problem

    assert inflight_microbatches(16, 32, 1) == 16
    assert inflight_microbatches(16, 32, 2) == pytest.approx(16 * (1 + 15 / 32))
    assert inflight_microbatches(1, 32, 1) == 1
    assert schedule_problem(96, 8, 3, 32) is None
    assert "multiple of pp" in schedule_problem(96, 8, 2, 12)
    assert "equal chunks" in schedule_problem(96, 8, 5, 32)
    # Llama 3: 126 layers on 16 stages, one fewer on the first and last
    assert schedule_problem(126, 16, 4, 16) is None


def test_gemm_shape_model_wave_quantisation():
    from reports.model.fallbacks import shape_efficiency

    # one full wave of 128x256 tiles on 132 SMs; one tile more leaves a wave nearly empty,
    # which a smaller tile recovers in part (the best tile is taken)
    assert shape_efficiency(128 * 132, 256, 8192, 132) == pytest.approx(1.0)
    assert 133 / 264 < shape_efficiency(128 * 133, 256, 8192, 132) < 0.9
    # 8192^3: 2048 tiles of 128x256 take 16 waves (97%); a 128x128 grid of 4096 fills 32 of 31.03
    assert shape_efficiency(8192, 8192, 8192, 132) >= 2048 / (16 * 132)
    h200 = hardware.gpu("H200-SXM")
    _, a = no_ref().gemm_seconds(H100, 8192, 8192, 8192)
    _, b = no_ref().gemm_seconds(h200, 8192, 8192, 8192)
    assert a.value == pytest.approx(b.value)  # one ceiling per architecture


def test_deepspeed_pipeline_sends_partition_activations_but_not_gradients():
    # Megatron-LM's scatter/gather sends 1/t each way (Narayanan et al. 2021, sec. 4.1);
    # DeepSpeed's engine sends 1/t activations, gathered over NVLink, and whole gradients, each
    # exposed DEEPSPEED_P2P_EXPOSURE times (tests/test_pipeline_sends.py)
    m = MODELS["mt-nlg-530b"]
    clu = hardware.cluster("selene-a100")
    g = hardware.gpu(clu.pools[0].gpu)
    par = Parallel(tp=8, pp=35, dp=8)
    meas = no_ref()
    sg = pp_seconds(m, par, clu, g, meas, Training())
    ds = pp_seconds(m, par, clu, g, meas, Training(pp_scatter_gather=False))
    alpha = clu.fabric.alpha_s
    share = sg / 2  # one 1/t hop
    whole = 8 * (share - alpha) + alpha
    gather = ds - DEEPSPEED_P2P_EXPOSURE * (share + whole)  # the receiver's, once
    assert 0 < gather < share  # the NVLink all-gather is cheap beside the fabric hop
    assert training_from({"pp_scatter_gather": False}).pp_scatter_gather is False
    with pytest.raises(ScenarioError):
        training_from({"pp_scatter_gather": "false"})


def test_gradient_accumulation_by_hand():
    # per micro-batch, on the gradients the GPU keeps: "add" reads the 16-bit gradient and reads
    # and writes the accumulator (2 + 2 x grad_bytes); "cast_add" (DeepSpeed's BF16_Optimizer)
    # first casts it to a temporary (2 + 4), then adds (3 x 4): 18 B; fused: nothing
    from reports.model.step import grad_accum_bytes

    assert grad_accum_bytes(1e9, Training(), 1) == 0.0
    assert grad_accum_bytes(1e9, Training(grad_accum="add", grad_bytes=2), 1) == 6e9
    assert grad_accum_bytes(1e9, Training(grad_accum="add", grad_bytes=4), 1) == 10e9
    assert grad_accum_bytes(1e9, Training(grad_accum="cast_add", grad_bytes=4), 1) == 18e9
    assert grad_accum_bytes(1e9, Training(grad_accum="cast_add", grad_bytes=4), 8) == 18e9 / 8
    m, clu = MODELS["mt-nlg-530b"], hardware.cluster("selene-a100")
    g = hardware.gpu(clu.pools[0].gpu)
    par = Parallel(tp=8, pp=35, dp=8, micro_batch=1, recompute="full")
    meas = no_ref()
    fused = step_time(m, par, Training(), clu, g, meas, microbatches=240)
    cast = step_time(m, par, Training(grad_accum="cast_add"), clu, g, meas, microbatches=240)
    assert fused.breakdown_s["grad_accum"] == 0.0
    per_mb = 18 * max(rank_params(m, 35, 1, 8)) / 8 / (meas.hbm_tbps(g).value * 1e12)
    assert cast.breakdown_s["grad_accum"] == pytest.approx(240 * per_mb)
    # inside the pipeline slot: the bubble grows with it
    assert cast.microbatch_s == pytest.approx(fused.microbatch_s + per_mb)
    assert training_from({"grad_accum": "add"}).grad_accum == "add"
    with pytest.raises(ScenarioError, match="cast_add casts 16-bit gradients to fp32"):
        training_from({"grad_accum": "cast_add", "grad_bytes": 2})
    # ZeRO-2 and -3 reduce-scatter every micro-batch: they accumulate their 1/dp shard; ZeRO-1
    # reduces once per step (comm.dp_seconds) and accumulates whole
    gpt = MODELS["gpt3-175b"]
    p64 = Parallel(tp=8, pp=1, dp=64, micro_batch=1, recompute="full")
    acc = {z: step_time(gpt, p64, Training(grad_accum="add", zero=z), clu, g, meas, 4)
           for z in (1, 2, 3)}
    for z in (2, 3):
        assert acc[z].breakdown_s["grad_accum"] == pytest.approx(
            acc[1].breakdown_s["grad_accum"] / 64)


def test_jean_zay_has_the_omni_path_links_bloom_states():
    clu = hardware.cluster("jean-zay-a100")
    assert clu.fabric.gbps_per_gpu == 50.0  # 4 x 100 Gb/s per 8-GPU node


def test_every_pipeline_rank_holds_layers_and_time_and_memory_agree():
    """A plain 1F1B layout puts ceil(l/p) layers on the first l mod p ranks and floor(l/p) on
    the rest (126 layers on 25 stages: one of 6, 24 of 5), as the step time assumes; it used to
    fill greedily and leave ranks empty (twenty of 6, then 1, 5, 0, 0, 0)."""
    from reports.model.pipeline import chunk_layers, stage_layers

    assert [c[0] for c in chunk_layers(126, 25, 1)] == [6] + [5] * 24
    for layers in (24, 32, 80, 96, 105, 118, 126):
        for pp in range(1, min(layers, 40) + 1):
            ranks = [sum(c) for c in chunk_layers(layers, pp, 1)]
            per, last = stage_layers(layers, pp)
            assert sum(ranks) == layers and min(ranks) >= 1, (layers, pp, ranks)
            assert max(ranks) == per and ranks[-1] <= per, (layers, pp, ranks)


def test_micro_batches_per_replica_are_the_nearest_whole_number_and_the_batch_rule():
    from reports.model.pipeline import (
        BATCH_TOLERANCE,
        closest_batches,
        microbatches_per_replica,
        valid_microbatch_counts,
    )

    assert BATCH_TOLERANCE == 0.05
    assert microbatches_per_replica(2048, 125, 1) == 16  # 16.38: not 17 (ceil ran 1.06x)
    assert microbatches_per_replica(2048, 625, 1) == 3  # 3.28
    assert microbatches_per_replica(2048, 64, 1) == 32
    assert microbatches_per_replica(5, 2, 1) == 3  # 2.5: halves round up
    assert microbatches_per_replica(3, 4, 1) == 1  # never none
    # within +-5% of the request, or when none is, the closest
    assert closest_batches([90, 97, 104, 130], lambda x: x, 100) == [97, 104]
    assert closest_batches([70, 130, 115], lambda x: x, 100) == [115]
    assert closest_batches([80, 120], lambda x: x, 100) == [80, 120]
    assert closest_batches([], lambda x: x, 100) == []
    # counts the schedule can run next to a share: any for 1F1B, multiples of pp interleaved
    assert valid_microbatch_counts(8, 1, 33.4) == [33, 34]
    assert valid_microbatch_counts(8, 6, 33.4) == [32, 40]
    assert valid_microbatch_counts(8, 6, 3.0) == [8]


def test_counts_are_singular_when_one():
    from reports.model import hardware
    from reports.model.comm import dp_seconds
    from reports.model.config import Parallel, Training
    from reports.model.measurements import Measurements
    from reports.model.presets import MODELS
    from results.words import counted

    assert counted(1, "GPU") == "1 GPU" and counted(1024, "GPU") == "1,024 GPUs"
    assert counted(1, "micro-batch", "micro-batches") == "1 micro-batch"
    assert counted(2, "micro-batch", "micro-batches") == "2 micro-batches"
    # 8 GPUs of one node, a small model: one node, one gradient bucket
    clu = hardware.cluster("colossus-100k")
    _, how = dp_seconds(MODELS["megatron-1.7b"], Parallel(tp=1, pp=1, dp=8), Training(), clu,
                        hardware.gpu("H100-SXM"), Measurements(None, use_reference=False),
                        30e6, {"compute": 0.1}, 1)
    assert "x 1 node on" in how and "1 bucket," in how
    assert "1 nodes" not in how and "1 buckets" not in how
