"""Device names to peak-table rows."""

import logging
import os

import pytest

from bench.device import PEAKS, DeviceInfo, detect, model_of, peaks


@pytest.mark.parametrize(("name", "model"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"),
    ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA H100 NVL", "H100-NVL"),
    ("NVIDIA H200", "H200-SXM"),
    ("NVIDIA H200 NVL", "H200-NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-SXM-40GB"),
    ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_model_of(name, model):
    assert model_of(name) == model


def test_every_peak_row_has_a_source_and_h200_differs_only_in_memory():
    assert all(p.source for p in PEAKS.values())
    h100, h200 = PEAKS["H100-SXM"], PEAKS["H200-SXM"]
    assert h100.bf16_tflops == h200.bf16_tflops == 989.4
    assert (h100.hbm_tbps, h200.hbm_tbps) == (3.35, 4.8)
    assert h100.tflops("fp8_e4m3") == 1978.9


def test_unknown_gpu_runs_without_peaks_and_is_said_once(caplog):
    d = DeviceInfo(name="NVIDIA Mystery 9000", kind="cuda")
    with caplog.at_level(logging.WARNING):
        assert peaks(d) is None
        assert peaks(d) is None
    assert sum("unknown GPU" in r.message for r in caplog.records) == 1


def test_detect_on_this_machine():
    d = detect()
    assert d.kind in ("cpu", "cuda")
    assert "index" not in d.record()


def test_a_cpu_is_described_by_its_cores_not_sms():
    from bench.device import detect_cpu

    cpu = detect_cpu()
    assert cpu.sm_count is None and cpu.cores == os.cpu_count()
    rec = cpu.record()
    assert "sm_count" not in rec and rec["cores"] == os.cpu_count()
    gpu = DeviceInfo(name="NVIDIA H200", kind="cuda", model="H200-SXM", cc="9.0", sm_count=132)
    assert gpu.record()["sm_count"] == 132 and "cores" not in gpu.record()


def test_info_on_a_cpu_shows_cores():
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    if detect().kind == "cpu":
        assert f"cores: {os.cpu_count()}" in res.output and "sm_count" not in res.output
