"""Data-parallel buckets as Megatron-Core issues them: a bucket's gradients are reduced once the
backward has made them (register_grad_ready), a bucket's weights are needed once the forward
reaches them (finish_param_sync), so a collective longer than its window also waits for the first
bucket (comm.dp_seconds, comm.weights_gathered_exposed). Checked against an event-by-event
simulation of one stream serving the buckets."""

import itertools
from dataclasses import replace

import pytest

from reports.model import hardware
from reports.model.comm import (
    dp_bucket_count,
    dp_seconds,
    staggered_exposed,
    weights_gathered_exposed,
)
from reports.model.config import Parallel, Training
from reports.model.measurements import Measurements
from reports.model.presets import MODELS

H100 = hardware.gpu("H100-SXM")
EOS = hardware.cluster("eos-h100")
MEAS = Measurements(None, use_reference=False)
SHARE = MEAS.comm_sm_share.value


def test_by_hand():
    # 4 buckets of 2 s behind a 4 s backward: made 1 s apart, the first 3 s before the end
    assert staggered_exposed(8.0, 4, 0.0, 1.0, 0.0) == pytest.approx(8.0 - 4.0 + 1.0)
    # inside the window only the last bucket shows
    assert staggered_exposed(2.0, 4, 0.0, 1.0, 0.0) == pytest.approx(0.5)
    # one bucket: nothing exists before the backward ends
    assert staggered_exposed(2.0, 1, 0.0, 4.0, 0.0) == pytest.approx(2.0)


def _reduce_late(total: float, buckets: int, window: float) -> float:
    """One stream: bucket k's gradients exist (k + 1) window / buckets into the backward, each
    bucket takes total / buckets; how long after the backward the last one ends."""
    end = 0.0
    for k in range(buckets):
        end = max(end, (k + 1) * window / buckets) + total / buckets
    return end - window


def _gather_late(total: float, chunks: int, per_chunk: int, window: float, gap: float) -> float:
    """One stream gathers the buckets in the order the forward needs them, from the step's
    start; chunk c's pass (window / chunks) starts c gaps after the first, its buckets needed
    evenly over it; the forward waits for each. How late it ends."""
    d, tau, done, late = total / (chunks * per_chunk), window / chunks, 0.0, 0.0
    for c, j in itertools.product(range(chunks), range(per_chunk)):
        done += d
        need = c * gap + j * tau / per_chunk + late  # where the forward, late so far, is
        late += max(0.0, done - need)
    return late


GRID = [(total, b, w) for total in (0.5, 2.0, 8.0) for b in (1, 3, 7) for w in (0.0, 1.0, 4.0)]


@pytest.mark.parametrize("total,buckets,window", GRID)
def test_the_gradients_as_one_stream_serves_them(total, buckets, window):
    assert staggered_exposed(total, buckets, 0.0, window / buckets, 0.0) == \
        pytest.approx(_reduce_late(total, buckets, window))


@pytest.mark.parametrize("chunks,per_chunk,gap", [(1, 1, 0.0), (1, 5, 0.0), (2, 2, 3.0),
                                                  (4, 3, 1.0), (8, 2, 0.2)])
@pytest.mark.parametrize("total,window", [(0.5, 4.0), (2.0, 2.0), (8.0, 1.0), (8.0, 0.0)])
def test_the_weights_as_one_stream_serves_them(chunks, per_chunk, gap, total, window):
    gap = max(gap, window / chunks)  # a chunk's next pass starts after its own
    assert weights_gathered_exposed(total, chunks, chunks * per_chunk, window, gap, 0.0) == \
        pytest.approx(_gather_late(total, chunks, per_chunk, window, gap))


@pytest.mark.parametrize("total,buckets,window", GRID)
def test_one_chunk_gathers_as_the_gradients_reduce(total, buckets, window):
    # the two directions mirror each other in time; the SMs of what hides are charged alike
    assert weights_gathered_exposed(total, 1, buckets, window, 0.0, 0.15) == \
        pytest.approx(staggered_exposed(total, buckets, 0.0, window / buckets, 0.15))


def _exposed(dp: int, stage: dict, train: Training = Training()) -> float:
    """Exposed data-parallel seconds of Nemotron-4 15B on tp 8 (1.95B weights per GPU)."""
    par = Parallel(tp=8, pp=1, dp=dp, micro_batch=2)
    return dp_seconds(MODELS["nemotron4-15b"], par, train, EOS, H100, MEAS, 1.95e9, stage, 2)[0]


def _collectives(dp: int, params_local: float = 1.95e9) -> float:
    """The fp32 reduce-scatter plus the bf16 all-gather, seconds: tp 8 leaves one rank per
    node, so each is a ring over dp nodes on one NIC, a latency step per bucket and rank."""
    bw, alpha = EOS.fabric.busbw_gbps * 1e9, EOS.fabric.alpha_s
    steps = dp_bucket_count(params_local, dp) * alpha * (dp - 1)
    return sum(params_local * b * (dp - 1) / dp / bw + steps for b in (4, 2))


def test_fewer_larger_buckets_expose_more_when_the_collective_outlasts_its_window():
    # Nemotron-4 15B on tp 8: 1.95B weights per GPU, buckets of max(40M, 1M x dp)
    assert dp_bucket_count(1.95e9, 96) == 21 and dp_bucket_count(1.95e9, 288) == 7
    stage = {"compute": 0.155}  # one micro-batch: a 0.10 s backward, a 0.05 s forward
    # saturated: each collective less its window, plus one bucket's share of the window
    # waited for, and its SMs taken from the window
    window = 0.155
    for dp in (96, 288):
        assert _collectives(dp) > window
        wait = window / dp_bucket_count(1.95e9, dp)
        assert _exposed(dp, stage) == pytest.approx(
            _collectives(dp) - (window - wait) * (1 - SHARE))
    assert _exposed(288, stage) > _exposed(96, stage)


def test_a_collective_inside_its_window_shows_its_last_bucket_only():
    for dp in (96, 288):
        last = 1 / dp_bucket_count(1.95e9, dp)
        expected = _collectives(dp) * (last + (1 - last) * SHARE)
        assert _exposed(dp, {"compute": 50.0}) == pytest.approx(expected)
        assert _exposed(dp, {"compute": 100.0}) == pytest.approx(expected)


def test_without_overlap_buckets_do_not_matter():
    off = replace(Training(), overlap_grad_reduce=False)
    a, b = (_exposed(288, {"compute": c}, off) for c in (0.155, 50.0))
    assert a == pytest.approx(b) == pytest.approx(_collectives(288))
