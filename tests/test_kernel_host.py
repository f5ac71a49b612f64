"""kernels/host.py: the CUDA-only host helpers, isolated so that a CPU machine can test them."""

import threading

import pytest
import torch
import triton
from triton.runtime import _allocation

from kernels import host


def _current_allocator():
    return _allocation._allocator.get()


def test_allocator_is_reinstalled_whoever_replaced_it():
    # Triton keeps the allocator in a ContextVar: a once-per-thread flag went stale when other
    # code (another library, a test) installed its own; ensure_allocator sets ours every launch.
    host.ensure_allocator()
    assert _current_allocator() is host._workspace
    triton.set_allocator(lambda size, alignment, stream: None)
    host.ensure_allocator()
    assert _current_allocator() is host._workspace


def test_allocator_in_a_new_thread():
    seen = []

    def launch_side():
        seen.append(_current_allocator() is host._workspace)  # a new thread: Triton's default
        host.ensure_allocator()
        seen.append(_current_allocator() is host._workspace)

    t = threading.Thread(target=launch_side)
    t.start()
    t.join()
    assert seen == [False, True]


def test_workspace_refuses_alignment_torch_cannot_give():
    with pytest.raises(ValueError, match="alignment"):
        host._workspace(1024, 1024, None)


@pytest.mark.parametrize("shape,dtype", [((33, 65), torch.float16), ((5, 37), torch.float8_e4m3fn),
                                         ((7, 3), torch.float32)])
def test_pad_rows_aligns_the_row_stride_and_keeps_values(shape, dtype):
    t = torch.randn(*shape).to(dtype)
    p = host.pad_rows(t)
    assert p.shape == t.shape and p.dtype == t.dtype
    assert host.aligned(p) and not host.aligned(t)
    assert torch.equal(p.float(), t.float())


def test_aligned_checks_base_strides_and_unit_stride():
    t = torch.empty(16, 64, dtype=torch.float16)
    assert host.aligned(t)
    assert not host.aligned(t[:, 1:])  # base 2 bytes off
    assert not host.aligned(t.t())  # last stride not 1
    assert not host.aligned(torch.empty(16, 65, dtype=torch.float16))  # 130-byte rows
    assert host.round_up(65, 8) == 72 and host.round_up(64, 8) == 64


def test_tune_switch(monkeypatch):
    monkeypatch.delenv(host.TUNE_ENV, raising=False)
    assert not host.tune_requested()
    monkeypatch.setenv(host.TUNE_ENV, "1")
    assert host.tune_requested()


def test_non_cuda_devices_are_not_hopper():
    assert not host.is_sm90(torch.device("cpu"))
    assert host.has_tensor_descriptors()  # Triton >= 3.4 (3.6 on the GPU machine, 3.8 here)
