"""What recomputation costs and hides, and how MFU counts attention (compute.flops_per_token):
as computed, so half the square with a causal mask and the whole square without."""

import pytest

from reports.model import hardware
from reports.model.cluster_spec import cluster_from_dict
from reports.model.comm import dp_seconds
from reports.model.compute import mfu
from reports.model.config import Parallel, Training
from reports.model.measurements import Measurements
from reports.model.memory import memory_per_gpu
from reports.model.presets import MODELS
from reports.model.scenario import Scenario
from reports.model.search import evaluate
from reports.model.step import layer_seconds

H100 = hardware.gpu("H100-SXM")
MEAS = Measurements(None, use_reference=False)
LLAMA = MODELS["llama3-70b"]


def test_selective_recompute_with_flash_runs_the_attention_forward_again():
    """Megatron-Core's selective granularity checkpoints core attention: a flash kernel's
    forward runs again before its backward, for the same bytes as no recompute."""
    clu = hardware.cluster("colossus-100k")
    train = Training(attention="flash")
    none = Parallel(tp=8, pp=1, dp=1, recompute="none")
    sel = Parallel(tp=8, pp=1, dp=1, recompute="selective")
    a = layer_seconds(LLAMA, none, train, clu, H100, MEAS).t
    b = layer_seconds(LLAMA, sel, train, clu, H100, MEAS).t
    assert a.get("recompute", 0.0) == 0.0 and b["recompute"] > 0.0
    assert sum(b.values()) > sum(a.values())
    assert memory_per_gpu(LLAMA, sel, train, 1) == memory_per_gpu(LLAMA, none, train, 1)


def test_the_gradient_reduce_also_hides_behind_what_the_backward_recomputes():
    clu = hardware.cluster("colossus-100k")
    par = Parallel(tp=8, pp=1, dp=64)
    plain, _ = dp_seconds(LLAMA, par, Training(), clu, H100, MEAS, 9e9, {"compute": 0.3}, 4)
    more, _ = dp_seconds(LLAMA, par, Training(), clu, H100, MEAS, 9e9,
                         {"compute": 0.3, "recompute": 0.1}, 4)
    assert more < plain


@pytest.mark.parametrize("causal, count", [(True, "causal"), (False, "full")])
def test_mfu_counts_attention_as_computed(causal, count):
    clu = cluster_from_dict({"gpu": "H100-SXM", "gpus": 64})
    par = Parallel(tp=8, pp=1, dp=8, recompute="none")
    scn = Scenario("t", LLAMA, clu, par, Training(causal=causal), 64 * LLAMA.seq_len)
    est = evaluate(scn, par, MEAS)
    assert est.mfu == pytest.approx(mfu(est.tokens_per_s / 64, LLAMA, H100.bf16_tflops, count))
