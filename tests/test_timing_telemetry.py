"""The timing recipe's statistics and the telemetry sampler where NVML is absent."""

import time

import numpy as np
import pytest

from bench.device import DeviceInfo, detect
from bench.telemetry import Sampler, reason_names, summarise
from bench.timing import PRESETS, Timing, TimingConfig, measure, repetitions


def test_statistics_match_numpy():
    xs = [0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.7]
    t = Timing(xs)
    assert t.median_s == pytest.approx(np.median(xs))
    assert t.p20_s == pytest.approx(np.percentile(xs, 20))
    assert t.p80_s == pytest.approx(np.percentile(xs, 80))
    assert t.mean_s == pytest.approx(np.mean(xs))
    assert t.stdev_s == pytest.approx(np.std(xs, ddof=1))
    assert t.stats()["samples_s"] == xs and t.n == 7


def test_empty_timing_is_an_error():
    with pytest.raises(ValueError):
        Timing([])


def test_repetitions_fill_the_budget_within_bounds():
    cfg = TimingConfig(budget_s=1.0, min_reps=10, max_reps=100)
    assert repetitions(0.05, cfg) == 20
    assert repetitions(1.0, cfg) == 10
    assert repetitions(1e-6, cfg) == 100


def test_cpu_measure_times_the_call():
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.05, min_reps=5, max_reps=10, flush_l2=False)
    t = measure(lambda: time.sleep(0.002), detect(), cfg)
    assert 5 <= t.n <= 10
    assert 0.0015 < t.median_s < 0.05


def test_smoke_preset_is_three_samples():
    t = measure(lambda: None, detect(), PRESETS["smoke"])
    assert t.n == 3


def test_sampler_on_cpu_is_source_none():
    with Sampler(detect()) as s:
        pass
    summary = s.summary()
    assert summary["source"] == "none"
    assert summary["power_w_mean"] is None and summary["energy_j"] is None
    assert "no GPU" in summary["reason"]


def test_sampler_without_nvml_never_raises():
    # A CUDA device that NVML cannot reach (no driver on this machine): source none, a reason.
    fake = DeviceInfo(name="NVIDIA H100 80GB HBM3", kind="cuda", model="H100-SXM", cc="9.0")
    with Sampler(fake) as s:
        time.sleep(0.01)
    summary = s.summary()
    assert summary["source"] == "none"
    assert "NVML unavailable" in summary["reason"]


def test_summary_before_exit_is_an_error():
    s = Sampler(detect())
    with pytest.raises(RuntimeError):
        s.summary()


def test_summarise_aggregates_samples():
    samples = [
        {"power_w": 600.0, "sm_clock_mhz": 1980, "temp_c": 60, "throttle_mask": 0x0},
        {"power_w": 700.0, "sm_clock_mhz": 1755, "temp_c": 66, "throttle_mask": 0x4},
        {"power_w": None, "sm_clock_mhz": 1800, "temp_c": None, "throttle_mask": 0x44},
    ]
    s = summarise(samples)
    assert s["power_w_mean"] == 650.0 and s["power_w_max"] == 700.0
    assert s["sm_clock_mhz_min"] == 1755
    assert s["temp_c_max"] == 66
    assert s["throttle_reasons"] == ["hw_thermal_slowdown", "sw_power_cap"]
    assert s["samples"] == 3


def test_reason_names_keeps_unknown_bits():
    assert reason_names(0x4 | 0x10000) == ["sw_power_cap", "0x10000"]


def test_backlog_covers_the_host_enqueue_time_within_a_cap():
    from bench.timing import MAX_BACKLOG_S, backlog_s

    assert backlog_s(100e-6, 50) == pytest.approx(1.2 * 100e-6 * 50)
    assert backlog_s(1e-3, 10_000) == MAX_BACKLOG_S


def test_telemetry_region_is_the_timed_samples_only():
    """The sampler is entered after the warm-up, around the samples alone."""
    import contextlib

    events = []

    @contextlib.contextmanager
    def region():
        events.append("enter")
        yield
        events.append("exit")

    calls = []
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=4, max_reps=4, flush_l2=False)
    t = measure(lambda: calls.append(list(events)), detect(), cfg, region())
    assert t.n == 4 and events == ["enter", "exit"]
    assert [c for c in calls if c == []]  # the warm-up ran before the region
    assert calls[-4:] == [["enter"]] * 4  # every sample inside it


def test_event_timer_and_device_interval_on_cpu():
    from bench.timing import EventTimer, device_interval

    device = detect()
    if device.kind == "cuda":
        pytest.skip("the CPU marks; the CUDA path is covered by the gpu tests")
    t = EventTimer(device)
    t.start()
    time.sleep(0.01)
    t.stop()
    assert 0.005 < t.seconds() < 1.0
    with device_interval(device) as t2:
        time.sleep(0.005)
    assert 0.002 < t2.seconds() < 1.0


def test_cpu_timing_holds_torch_to_a_fixed_thread_count():
    import torch

    from bench.cpu_recipe import CPU_TIMING_THREADS

    device = detect()
    if device.kind == "cuda":
        pytest.skip("CPU timing only")
    before = torch.get_num_threads()
    seen = []
    measure(lambda: seen.append(torch.get_num_threads()), device, PRESETS["smoke"])
    assert set(seen) == {CPU_TIMING_THREADS}
    assert torch.get_num_threads() == before  # restored


def test_cpu_timing_turns_gc_off_while_sampling_and_records_its_settings():
    import gc

    from bench.cpu_recipe import CPU_TIMING

    device = DeviceInfo(name="cpu", kind="cpu")
    seen = []
    assert gc.isenabled()
    t = measure(lambda: seen.append(gc.isenabled()), device, PRESETS["smoke"])
    assert seen and not any(seen)  # off for the warm-up and every sample
    assert gc.isenabled()  # on again after
    assert t.settings == CPU_TIMING and t.settings is not CPU_TIMING
    assert "settings" not in t.stats()  # not a timing field of the record


def test_cpu_timing_restores_threads_and_gc_after_an_error_and_keeps_gc_off_if_it_was():
    import gc

    import torch

    from bench.cpu_recipe import CPU_TIMING_THREADS, cpu_timing

    device = DeviceInfo(name="cpu", kind="cpu")
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), cpu_timing(device):
        assert torch.get_num_threads() == CPU_TIMING_THREADS and not gc.isenabled()
        raise RuntimeError("a case crashed while timed")
    assert torch.get_num_threads() == before and gc.isenabled()
    gc.disable()
    try:
        with cpu_timing(device):
            pass
        assert not gc.isenabled()  # a caller's own gc.disable() is left as it was
    finally:
        gc.enable()


def test_cpu_timing_leaves_a_gpu_alone():
    import gc

    import torch

    from bench.cpu_recipe import cpu_timing, timing_settings

    gpu = DeviceInfo(name="NVIDIA H200", kind="cuda", model="H200-SXM", cc="9.0")
    before = torch.get_num_threads()
    with cpu_timing(gpu):
        assert torch.get_num_threads() == before and gc.isenabled()
    assert timing_settings(gpu) == {}


def test_flush_is_outside_each_sample_and_returns_none():
    import torch

    from bench.timing import flusher

    buf = torch.zeros(16)
    assert flusher(buf)() is None and bool((buf == 1).all())
    order = []
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=3, max_reps=3, flush_l2=True)
    device = DeviceInfo(name="cpu", kind="cpu")
    import bench.timing as timing

    timing._flush_buffers["cpu"] = _Recorder(order)  # the CPU stand-in for the L2 buffer
    try:
        measure(lambda: order.append("call"), device, cfg)
    finally:
        timing._flush_buffers.pop("cpu", None)
    timed = order[2:]  # after the two warm-up calls
    assert timed == ["flush", "call"] * 3


class _Recorder:
    """Has the flush buffer's `fill_` (which returns the buffer, as a tensor's does)."""

    def __init__(self, order):
        self.order = order

    def fill_(self, value):
        self.order.append("flush")
        return self


@pytest.mark.gpu
def test_gpu_event_timer_clock_and_flush():
    """The CUDA paths of the one timing primitive, the pytest-benchmark clock with its backlog,
    and the flush's return contract on a real device buffer."""
    import torch

    from bench.benchmarks.timer import DeviceClock
    from bench.timing import (
        EventTimer,
        default_config,
        device_interval,
        l2_flusher,
    )

    device = detect()
    x = torch.randn(4096, 4096, device=device.torch_device)
    with device_interval(device) as t:
        x @ x
    assert 0 < t.seconds() < 1.0
    timers = [EventTimer(device) for _ in range(3)]
    for timer in timers:
        timer.start()
        x @ x
        timer.stop()
    assert all(0 < timer.seconds() < 1.0 for timer in timers)
    clock = DeviceClock(device, backlog_s=0.001)
    fn = clock.wrap(lambda: x @ x)
    start = clock()
    fn()
    assert clock() - start > 0  # device time of the call (the sleep before it is outside)
    flush = l2_flusher(device, default_config(device))
    assert flush is not None and flush() is None


CPU = DeviceInfo(name="cpu", kind="cpu")


def test_cpu_rounds_take_the_cases_samples_round_robin_after_every_warm_up():
    from bench.timing import measure_rounds, slice_of

    order = []
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=3, max_reps=3, flush_l2=False,
                       rounds=3)
    ts = measure_rounds([lambda: order.append("a"), lambda: order.append("b")], CPU, cfg)
    assert [t.n for t in ts] == [3, 3]
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3  # two warm-up calls each, then rounds
    assert [slice_of(10, r, 3) for r in range(3)] == [3, 3, 4]
    more = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=3, max_reps=3, flush_l2=False,
                        rounds=5)
    assert measure(lambda: None, CPU, more).n == 5  # at least one sample a round


def test_the_yardstick_is_timed_in_every_slice_between_the_cases_shares(monkeypatch):
    import bench.timing as timing
    from bench.cpu_recipe import CPU_TIMING

    order, told = [], []

    def yardstick():  # stands in for the loop; its "seconds" are 1, 2, 3, ... in call order
        order.append("y")
        return float(order.count("y"))

    monkeypatch.setattr(timing, "yardstick", yardstick)
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=3, max_reps=3, flush_l2=False,
                       rounds=3)
    ts = timing.measure_rounds([lambda: order.append("a"), lambda: order.append("b")], CPU,
                               cfg, done=lambda i, t: told.append(order.count("y")))
    # warm-ups, one untimed yardstick, then one either side of every share of every slice
    assert order == ["a", "a", "b", "b", "y"] + ["y", "a", "y", "b", "y"] * 3
    assert told == [9, 10]  # each told once the yardstick after its last share is in
    # each case's median over the yardsticks either side of its shares: a 2,3 5,6 8,9; b one on
    assert [t.yardstick_s for t in ts] == [5.5, 6.5]
    assert ts[0].software() == {**CPU_TIMING, "yardstick_s": 5.5}


def test_a_cpu_timing_carries_a_real_yardstick():
    t = measure(lambda: None, CPU, PRESETS["smoke"])
    assert t.yardstick_s > 0 and t.software()["yardstick_s"] == t.yardstick_s
    assert Timing([1.0]).software() == {}  # a GPU timing: no settings, no yardstick


def test_a_case_that_raises_while_timed_drops_out_and_the_others_go_on():
    from bench.timing import measure_rounds

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("lost the device")

    def broken():
        raise ValueError("bad shape")

    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=4, max_reps=4, flush_l2=False,
                       rounds=2)
    told = []
    ok, bad, worse, ok2 = measure_rounds([lambda: None, flaky, broken, lambda: None], CPU, cfg,
                                         done=lambda i, r: told.append(i))
    assert ok.n == ok2.n == 4
    assert isinstance(bad, RuntimeError) and isinstance(worse, ValueError)
    assert told == [2, 1, 0, 3]  # each told once: when it failed, or at its last sample
    with pytest.raises(ValueError, match="bad shape"):  # one case: the error is raised
        measure(broken, CPU, cfg)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_rounds([lambda: None, interrupted], CPU, cfg)
