"""Compute figures from rows: one per silicon (an H200 priced from H100 rows), the origin decided
per architecture, and GEMM rows calibrating the shape model instead of replacing it."""

import pandas as pd
import pytest

from reports.model import hardware
from reports.model.h200 import h200_gain
from reports.model.measurements import Measurements, same_silicon
from tests.test_model import row

H100, H200 = hardware.gpu("H100-SXM"), hardware.gpu("H200-SXM")
A100 = hardware.gpu("A100-SXM-80GB")
CUBES = {4096: 640.0, 8192: 700.0, 16384: 720.0}  # a plausible first H100 campaign
# compute-bound shapes: measured, between measured ones, and far from any (Llama 3 405B's MLP)
SHAPES = [(8192, 8192, 8192), (8192, 8192, 4096), (300, 8192, 8192), (16384, 53248, 16384)]


def cubes(device="H100-SXM", scale=1.0) -> list[dict]:
    return [row("gemm", {"m": n, "n": n, "k": n}, device=device, tflops=tf * scale)
            for n, tf in CUBES.items()]


def attention(device="H100-SXM", fwd=(500.0, 600.0)) -> list[dict]:
    return [row("attention", {"s": s, "d": 128, "causal": True, "direction": "fwd"},
                device=device, tflops=tf) for s, tf in zip((4096, 16384), fwd, strict=True)]


def meas(*rows) -> Measurements:
    return Measurements(pd.DataFrame(list(rows)) if rows else None, use_reference=False)


def shape_model(m: Measurements, gpu, *shape) -> float:
    """The fallback shape model's TFLOP/s, from a Measurements with no rows."""
    return m.gemm_seconds(gpu, *shape)[1].value


def test_same_silicon_is_the_architecture_and_its_sms():
    assert same_silicon(H100) == (H200,) and same_silicon(H200) == (H100,)
    assert same_silicon(A100) == ()


def test_h100_rows_give_the_h200_the_same_gemm_and_attention_figures():
    m = meas(*cubes(), *attention())
    for shape in SHAPES:
        _, a = m.gemm_seconds(H100, *shape)
        _, b = m.gemm_seconds(H200, *shape)
        assert b.kind == "measured" and b.value == pytest.approx(a.value, rel=1e-12), shape
        assert "H100-SXM's measured rows: same SMs and clocks" in b.source
        assert "H100-SXM's" not in a.source  # its own rows, no sibling to compare with
    for s in (4096, 8192, 32768):
        fa, fb = (m.attention_tflops(g, s, 128, True, "fwd") for g in (H100, H200))
        assert fb.kind == "measured" and fb.value == fa.value
        assert "H100-SXM's measured rows: same SMs and clocks" in fb.source
    # what neither measured stays the shared fallback
    assert m.attention_tflops(H200, 8192, 128, True, "bwd").kind == "assumption"
    assert m.gemm_seconds(A100, 8192, 8192, 8192)[1].kind == "assumption"


def test_a_memory_bound_shape_from_sibling_rows_keeps_each_types_hbm():
    m = meas(*cubes())
    shape = (16, 8192, 8192)  # decode-sized: the HBM roofline binds
    a, b = (m.gemm_seconds(g, *shape)[1].value for g in (H100, H200))
    empty = meas()
    ratio = shape_model(empty, H200, *shape) / shape_model(empty, H100, *shape)
    assert ratio > 1.3  # 4.3 against 3.0 TB/s
    assert b / a == pytest.approx(ratio)


def test_both_types_measured_each_uses_its_own_and_the_spread_is_stated():
    m = meas(*cubes(), *cubes("H200-SXM", scale=0.98), *attention(),
             *attention("H200-SXM", fwd=(490.0, 590.0)))
    _, a = m.gemm_seconds(H100, 8192, 8192, 8192)
    _, b = m.gemm_seconds(H200, 8192, 8192, 8192)
    assert (a.value, b.value) == (700.0, 700.0 * 0.98)
    assert "from H100-SXM" not in b.source and "from H200-SXM" not in a.source
    assert "H200-SXM's rows give 686 (-2.0%) at 8192x8192x8192" in a.source
    assert "H100-SXM's rows give 700 (+2.0%) at 8192x8192x8192" in b.source
    fa, fb = (m.attention_tflops(g, 16384, 128, True, "fwd") for g in (H100, H200))
    assert (fa.value, fb.value) == (600.0, 590.0)
    assert "H200-SXM's rows give 590" in fa.source and "H100-SXM's rows give 600" in fb.source


def test_measured_rows_calibrate_the_shape_model():
    empty, m = meas(), meas(row("gemm", {"m": 8192, "n": 8192, "k": 8192}, tflops=700.0))
    cube = shape_model(empty, H100, 8192, 8192, 8192)
    thin = shape_model(empty, H100, 300, 8192, 8192)
    assert cube == pytest.approx(793.0) and thin == pytest.approx(577.0, abs=1.0)
    _, at = m.gemm_seconds(H100, 8192, 8192, 8192)
    assert at.value == 700.0 and at.kind == "measured"  # a measured shape: its row exactly
    _, f = m.gemm_seconds(H100, 300, 8192, 8192)  # not 700: the wave quantisation stays
    assert f.value == pytest.approx(thin * 700.0 / cube) and f.kind == "measured"
    assert 505 < f.value < 512 and "interpolated" in f.source and "shape model 577" in f.source
    # the ratio is interpolated between measured shapes (inverse distance in log2 space) and
    # every measured shape returns its row, whatever the others say
    m3 = meas(*cubes())
    for n, tf in CUBES.items():
        assert m3.gemm_seconds(H100, n, n, n)[1].value == tf
    ratios = [tf / shape_model(empty, H100, n, n, n) for n, tf in CUBES.items()]
    r = m3.gemm_seconds(H100, 300, 8192, 8192)[1].value / thin
    assert min(ratios) < r < max(ratios)


def test_sibling_measured_rows_come_before_own_reference_rows(monkeypatch, request):
    import results.reference
    from reports.model import frame_rows

    ref = pd.DataFrame([row("gemm", {"m": 8192, "n": 8192, "k": 8192}, device="H200-SXM",
                            tflops=760.0)])
    monkeypatch.setattr(results.reference, "load_reference", lambda: ref)
    frame_rows.reference_frame.cache_clear()  # read once per process: plant, then forget
    request.addfinalizer(frame_rows.reference_frame.cache_clear)
    # no measured rows: the H200's reference row prices both types
    only_ref = Measurements(None)
    for g in (H100, H200):
        f = only_ref.gemm_seconds(g, 8192, 8192, 8192)[1]
        assert (f.value, f.kind) == (760.0, "reference")
    assert "H200-SXM's reference rows" in only_ref.gemm_seconds(H100, 8192, 8192, 8192)[1].source
    # an H100 campaign: its measured rows price the H200 too, before the H200's reference row
    m = Measurements(pd.DataFrame(cubes()))
    for g in (H100, H200):
        f = m.gemm_seconds(g, 8192, 8192, 8192)[1]
        assert (f.value, f.kind) == (700.0, "measured")


def test_h100_only_rows_leave_the_h200_gain_near_the_fallback_one():
    base = h200_gain("llama3-405b", 16384, meas())
    got = h200_gain("llama3-405b", 16384, meas(*cubes()))
    ceil = got["gemm_8192_tflops"]
    assert ceil["H100-SXM"]["tflops"] == ceil["H200-SXM"]["tflops"] == 700.0
    for k in ("h200_same_config", "h200_own_config"):
        assert got[k]["gain"] == pytest.approx(base[k]["gain"], rel=0.01), k


def test_fallback_gemm_label_says_what_the_model_does():
    _, f = meas().gemm_seconds(H100, 300, 8192, 8192)
    assert f.kind == "assumption" and "wave quantisation and tile padding over 132 SMs" in f.source
    assert "k efficiency" not in f.source and "HBM roofline" in f.source
