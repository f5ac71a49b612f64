"""Data-parallel collectives under an interleaved schedule: each model chunk's share is issued
once its own last backward is done (Megatron-Core), so all but the last chunk's hide behind the
other chunks' backward (comm.staggered_exposed, comm.dp_seconds)."""

from dataclasses import replace

import pytest

from reports.model import hardware
from reports.model.comm import dp_seconds, overlap_exposed, staggered_exposed
from reports.model.config import Parallel, Training
from reports.model.measurements import Measurements
from reports.model.presets import MODELS

H100 = hardware.gpu("H100-SXM")
CLU = hardware.cluster("colossus-100k")
MEAS = Measurements(None, use_reference=False)


@pytest.mark.parametrize("comm,window", [(1.0, 3.0), (3.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_one_chunk_is_the_plain_overlap(comm, window):
    assert staggered_exposed(comm, 1, window, 99.0, 0.15) == \
        pytest.approx(overlap_exposed(comm, window, 0.15))


def test_by_hand():
    # 4 chunks of 2 s each; the last issued has 1 s behind it, each earlier one 3 s more
    assert staggered_exposed(8.0, 4, 1.0, 3.0, 0.0) == pytest.approx(1.0)  # 2 - 1
    # gaps too short: the whole queue less the gaps and the window
    assert staggered_exposed(8.0, 4, 1.0, 1.0, 0.0) == pytest.approx(8.0 - 3.0 - 1.0)
    assert staggered_exposed(8.0, 4, 9.0, 9.0, 0.0) == 0.0
    # gradients as Megatron-Core's default align_grad_reduce launches them: a chunk's whole share
    # after its last backward (no window), the last rank pp - 1 passes late
    assert staggered_exposed(8.0, 4, 0.0, 3.0, 0.0, lag_s=3.0) == pytest.approx(4.0)  # c = 1
    assert staggered_exposed(8.0, 4, 0.0, 3.0, 0.0, lag_s=99.0) == pytest.approx(8.0)  # at the end
    # what hides still takes its SMs from the compute beside it
    assert staggered_exposed(8.0, 4, 1.0, 3.0, 0.1) == pytest.approx(1.0 + 7.0 * 0.1)


def test_interleaving_hides_the_gradient_reduce_of_all_but_the_last_chunk():
    model = MODELS["llama3-405b"]
    train = Training()  # ZeRO-1, overlapped, as Megatron-Core's distributed optimizer
    stage = {"compute": 0.3}  # one micro-batch through the stage, all chunks
    params_local = 4e9
    plain = Parallel(tp=8, pp=8, dp=64, virtual_stages=1)
    v4 = replace(plain, virtual_stages=4)
    one, _ = dp_seconds(model, plain, train, CLU, H100, MEAS, params_local, stage, 16)
    four, _ = dp_seconds(model, v4, train, CLU, H100, MEAS, params_local, stage, 16)
    assert 0.0 < four < one
    # without overlap the schedule does not matter
    off = replace(train, overlap_grad_reduce=False)
    assert dp_seconds(model, plain, off, CLU, H100, MEAS, params_local, stage, 16)[0] == \
        pytest.approx(dp_seconds(model, v4, off, CLU, H100, MEAS, params_local, stage, 16)[0])
