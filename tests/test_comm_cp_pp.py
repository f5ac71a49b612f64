"""Context-parallel ring exchange and pipeline point-to-point: what comm.cp_seconds and
comm.pp_seconds charge, and where their links are."""

import pytest

from reports.model import hardware
from reports.model.comm import cp_seconds, overlap_exposed, pp_seconds
from reports.model.config import Parallel, Training
from reports.model.measurements import Measurements
from reports.model.presets import MODELS

H100 = hardware.gpu("H100-SXM")
LLAMA = MODELS["llama3-405b"]
CLU = hardware.cluster("colossus-100k")
MEAS = Measurements(None, use_reference=False)
NVL = MEAS.nvlink_busbw_gbps(H100).value


def kv_block(par: Parallel) -> float:
    """One K and one V block of s/cp tokens of this tp rank's KV heads, bf16."""
    return par.micro_batch * (LLAMA.seq_len // par.cp) * 2 * (LLAMA.kv_dim / par.tp) * 2


def test_no_context_parallelism_costs_nothing():
    assert cp_seconds(LLAMA, Parallel(tp=8, cp=1), CLU, H100, MEAS, 1.0, 2.0) == (0.0, 0.0)


def test_the_ring_passes_cp_minus_one_blocks_forward_and_twice_that_backward():
    par = Parallel(tp=4, cp=2, dp=1)  # tp x cp = 8: the ring stays on NVLink
    f, b = cp_seconds(LLAMA, par, CLU, H100, MEAS, 0.0, 0.0)  # nothing to hide behind
    comm = (par.cp - 1) * kv_block(par) / (NVL * 1e9)
    assert f == pytest.approx(comm) and b == pytest.approx(2 * comm)


def test_the_ring_hides_behind_attention_but_for_the_sms_it_takes():
    par = Parallel(tp=4, cp=2, dp=1)
    comm = kv_block(par) / (NVL * 1e9)
    f, b = cp_seconds(LLAMA, par, CLU, H100, MEAS, 10 * comm, 10 * comm)
    share = MEAS.comm_sm_share.value
    assert f == pytest.approx(overlap_exposed(comm, 10 * comm, share))
    assert b == pytest.approx(overlap_exposed(2 * comm, 10 * comm, share))
    assert 0.0 < f < comm and 0.0 < b < 2 * comm


def test_a_ring_across_nodes_runs_on_the_fabric():
    inside, _ = cp_seconds(LLAMA, Parallel(tp=4, cp=2), CLU, H100, MEAS, 0.0, 0.0)
    across, _ = cp_seconds(LLAMA, Parallel(tp=4, cp=4), CLU, H100, MEAS, 0.0, 0.0)
    # 3 blocks of half the size over the NIC against 1 block over NVLink
    expect = 3 * kv_block(Parallel(tp=4, cp=4)) / (CLU.fabric.busbw_gbps * 1e9)
    assert across == pytest.approx(expect) and across > inside


def test_pipeline_hops_stay_on_nvlink_only_when_the_whole_pipeline_fits_in_a_node():
    train = Training()
    in_node = pp_seconds(LLAMA, Parallel(tp=2, pp=4, dp=1), CLU, H100, MEAS, train)
    # tp 2 x dp 2 x pp 4 = 16 ranks: stages 0-1 share a node, the 1 -> 2 hop crosses the fabric
    spans = pp_seconds(LLAMA, Parallel(tp=2, pp=4, dp=2), CLU, H100, MEAS, train)
    nbytes = LLAMA.seq_len * LLAMA.hidden * 2 / 2  # one micro-batch's activations, 1/tp each
    assert in_node == pytest.approx(2 * (nbytes / (NVL * 1e9) + CLU.nvlink_alpha_s))
    assert spans == pytest.approx(2 * (nbytes / (CLU.fabric.busbw_gbps * 1e9)
                                       + CLU.fabric.alpha_s))


def test_interleaving_sends_once_per_chunk_boundary():
    train = Training()
    one = pp_seconds(LLAMA, Parallel(tp=8, pp=4, dp=1), CLU, H100, MEAS, train)
    four = pp_seconds(LLAMA, Parallel(tp=8, pp=4, dp=1, virtual_stages=4), CLU, H100, MEAS,
                      train)
    assert four == pytest.approx(4 * one) and pp_seconds(
        LLAMA, Parallel(tp=8, pp=1), CLU, H100, MEAS, train) == 0.0
