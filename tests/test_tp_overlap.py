"""Tensor-parallel communication with and without Transformer Engine's comm-GEMM overlap."""

import pytest

from reports.model import hardware
from reports.model.comm import (
    UB_SITES,
    UbSite,
    reduce_scatter_seconds,
    tp_seconds,
    ub_site_exposed,
)
from reports.model.config import Parallel, ScenarioError, Training
from reports.model.measurements import Measurements
from reports.model.presets import MODELS

H100 = hardware.gpu("H100-SXM")
GPT3 = MODELS["gpt3-175b"]
CLU = hardware.cluster("colossus-100k")
MEAS = Measurements(None, use_reference=False)
BIG = Parallel(tp=8, pp=8, dp=4, micro_batch=4)
BIG_TOKENS = 4 * GPT3.seq_len  # large enough chunks at tp 8: 1,024 rows each


def tp(par: Parallel, tokens: int, **training) -> tuple[float, float]:
    """GPT-3's (forward, backward) tensor-parallel seconds per layer on colossus H100s."""
    return tp_seconds(GPT3, tokens, par, CLU, H100, MEAS, Training(**training))


def collective(tokens: int) -> float:
    """One all-gather or reduce-scatter of the layer's activations over tp 8 on NVLink."""
    return reduce_scatter_seconds(tokens * GPT3.hidden * 2, 8, MEAS.nvlink_busbw_gbps(H100).value,
                                  CLU.nvlink_alpha_s)


def flat(m: int, n: int, k: int) -> float:
    """A GEMM that runs at one rate whatever its shape: chunking costs nothing."""
    return 2.0 * m * n * k / 500e12


def test_ring_exchange_hides_an_all_gather_behind_the_gemm_chunks():
    site = UbSite("qkv", "fprop", "ring_exchange")
    whole = flat(4096, 4096, 4096)
    assert ub_site_exposed(site, whole / 10, flat, 4096, 4096, 4096, 8, 132) == \
        pytest.approx(0.0, abs=1e-12)
    # a collective far longer than the GEMM: all but the local chunk's compute is exposed
    big = 10 * whole
    exposed = ub_site_exposed(site, big, flat, 4096, 4096, 4096, 8, 132)
    assert exposed == pytest.approx(whole / 8 + big - whole)


def test_pipelined_reduce_scatter_exposes_its_last_chunk_and_costs_sms():
    site = UbSite("out_proj", "fprop", "pipeline", num_sm=24, num_splits=4)
    whole = flat(4096, 4096, 4096)
    coll = whole / 10
    exposed = ub_site_exposed(site, coll, flat, 4096, 4096, 4096, 8, 132)
    slowed = whole * 132 / (132 - 24) - whole  # the GEMM on 108 of 132 SMs
    assert exposed == pytest.approx(slowed + coll / 4)


def test_bulk_overlap_runs_beside_the_whole_gemm():
    site = UbSite("qkv", "wgrad", "bulk", num_sm=24)
    whole = flat(4096, 4096, 4096)  # wgrad shape (k, n, m) is the same cube here
    assert ub_site_exposed(site, whole / 2, flat, 4096, 4096, 4096, 8, 132) == \
        pytest.approx(whole / 2 * 24 / 132)
    assert ub_site_exposed(site, 2 * whole, flat, 4096, 4096, 4096, 8, 132) == \
        pytest.approx(whole + whole * 24 / 132)


def test_the_sites_are_nemo_h100_configuration():
    assert len(UB_SITES["fwd"]) == len(UB_SITES["bwd"]) == 4  # as the plain collectives
    methods = {(s.role, s.gemm_pass): s.method for d in UB_SITES.values() for s in d}
    assert methods[("qkv", "fprop")] == methods[("fc1", "fprop")] == "ring_exchange"
    assert methods[("out_proj", "fprop")] == methods[("fc2", "fprop")] == "pipeline"
    assert methods[("qkv", "wgrad")] == "bulk"


def test_overlap_is_between_none_and_free():
    off = tp(BIG, BIG_TOKENS, tp_overlap=0.0)
    on = tp(BIG, BIG_TOKENS, tp_overlap=1.0)
    half = tp(BIG, BIG_TOKENS, tp_overlap=0.5)
    coll = collective(BIG_TOKENS)
    sync = tp(BIG, BIG_TOKENS, async_dgrad=False)
    assert sync == pytest.approx((4 * coll, 4 * coll))  # all four collectives each way exposed
    assert off[0] == pytest.approx(4 * coll)
    for d in range(2):
        assert 0 < on[d] < off[d]  # hidden, but chunked GEMMs and SMs are not free
        assert half[d] == pytest.approx((on[d] + off[d]) / 2)
    assert tp(Parallel(tp=1, pp=8, dp=32), BIG_TOKENS, tp_overlap=1.0) == (0.0, 0.0)


def test_overlap_never_costs_more_than_the_plain_collectives():
    # 2,048 tokens over tp 8: 256-row chunks run slowly; each site then runs plainly
    par = Parallel(tp=8, pp=8, dp=4)
    off = tp(par, GPT3.seq_len, tp_overlap=0.0)
    on = tp(par, GPT3.seq_len, tp_overlap=1.0)
    assert all(o <= p + 1e-15 for o, p in zip(on, off, strict=True))


def test_pipeline_chunks_split_the_output_features():
    # Transformer Engine's split_overlap_rs chunks the weight's rows (output features), so each
    # chunk keeps every token: a GEMM priced by shape sees (m, n / splits, k), not (m / splits)
    seen = []

    def record(m: int, n: int, k: int) -> float:
        seen.append((m, n, k))
        return flat(m, n, k)

    site = UbSite("out_proj", "fprop", "pipeline", num_sm=24, num_splits=4)
    ub_site_exposed(site, 1e-6, record, 4096, 8192, 1024, 8, 132)
    assert seen == [(4096, 8192, 1024), (4096, 2048, 1024)]


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown userbuffers method"):
        ub_site_exposed(UbSite("qkv", "fprop", "pipelined"), 1e-6, flat, 64, 64, 64, 2, 132)


def test_overlap_needs_sequence_parallelism():
    # Megatron-LM refuses --tp-comm-overlap without --sequence-parallel, and so does the model
    # (it used to price it plainly, silently the same step as tp_overlap 0)
    off = tp(BIG, BIG_TOKENS, tp_overlap=0.0, sequence_parallel=False)
    assert off[0] > 0
    with pytest.raises(ScenarioError, match="tp_overlap 1.0 needs sequence_parallel: true"):
        tp(BIG, BIG_TOKENS, tp_overlap=1.0, sequence_parallel=False)


def test_the_input_gradient_collective_hides_behind_the_weight_gradient():
    # Megatron's async reduce-scatter (all-reduce without sequence parallelism) of the
    # column-parallel layers' input gradient runs beside their weight-gradient GEMM
    coll = collective(BIG_TOKENS)
    for sp in (True, False):
        fwd, bwd = tp(BIG, BIG_TOKENS, sequence_parallel=sp)
        sync = tp(BIG, BIG_TOKENS, sequence_parallel=sp, async_dgrad=False)
        assert fwd == sync[0] == pytest.approx(4 * coll)
        hidden = 2 * (coll if sp else 2 * coll)  # two layers' reduce-scatters (all-reduces)
        share = MEAS.comm_sm_share.value
        assert bwd == pytest.approx(4 * coll - hidden + hidden * share)  # wgrad GEMMs longer
