"""The workload contract.

A workload family (gemm, attention, membw, ...) is one file in this package with one `Workload`
subclass decorated by `@register`. Like a tritonbench operator, it knows its cases, how to make
fresh random inputs, the callable to time for each backend, how to check an output against a
higher-precision reference, and its FLOP and byte formulas. The runner does the rest (check, time,
telemetry, store), so every workload is timed by the same recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bench.device import DeviceInfo


@dataclass(frozen=True)
class Case:
    """One point of a workload: what to run, at which sizes and dtype, on which backends.

    `params` holds plain lower-case keys (gemm: m, n, k, layout; attention: b, h, kv_h, s, d,
    causal, direction; membw: op, bytes) exactly as the result record stores them.
    """

    workload: str
    dtype: str
    params: dict[str, Any] = field(hash=False)
    backends: tuple[str, ...]

    @property
    def key(self) -> str:
        """A short readable name, also what --filter matches against."""
        p = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.workload}/{self.dtype}/{p}"


@dataclass(frozen=True)
class Check:
    """The outcome of comparing an output to its reference."""

    correct: bool
    max_rel_error: float
    tolerance: float


class Unsupported(Exception):
    """Raised by setup/prepare when a case cannot run here (stored as skipped with the reason)."""


class Workload:
    """Base class; subclasses fill in the methods below. Instances hold no per-run state."""

    name: ClassVar[str]
    # What bounds one call: "compute" (peak_fraction is TFLOP/s against the dtype's tensor
    # peak) or "memory" (GB/s against the link's or the HBM peak; the results table shows GB/s).
    # A memory-bound workload may still report TFLOP/s; its share of peak is the bandwidth's.
    bound: ClassVar[str] = "compute"
    # backend -> one line the results table prints under that backend's rows (what its figures
    # are not: e.g. a kernel run outside the shapes it is built for)
    notes: ClassVar[dict[str, str]] = {}

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        """The cases of a named suite (quick, standard, full, mamf, ...) for this device.

        On CPU return small sizes: the CPU path proves the flow, it does not measure a CPU.
        """
        raise NotImplementedError

    def backends(self, case: Case, device: DeviceInfo) -> list[str]:
        """The backends of `case` that can run on this device (default: all of them)."""
        return list(case.backends)

    def setup(self, case: Case, device: DeviceInfo) -> Any:
        """Fresh random inputs on the device (never zeros: zeros flatter tensor cores)."""
        raise NotImplementedError

    def prepare(self, case: Case, backend: str, inputs: Any) -> Callable[[], Any]:
        """A zero-argument callable that launches the work once and returns its output."""
        raise NotImplementedError

    def check(self, case: Case, backend: str, inputs: Any, out: Any) -> Check:
        """Compare `out` (from the callable) with a higher-precision reference."""
        raise NotImplementedError

    def flops(self, case: Case) -> float | None:
        """Useful floating-point operations of one call, or None if not a compute workload."""
        return None

    def bytes_moved(self, case: Case) -> float | None:
        """Bytes read plus written by one call, or None if not a bandwidth workload."""
        return None

    def shape(self, case: Case) -> str:
        """A short shape label for the table (the record's `shape`), e.g. "8192x8192x8192".
        Default: the params' values joined by spaces."""
        return " ".join(str(v) for v in case.params.values())

    def peak_gbps(self, case: Case, device: DeviceInfo) -> float | None:
        """The bandwidth ceiling that GB/s is a share of; None means the device's HBM peak.
        A workload over another link (PCIe, say) returns that link's peak."""
        return None


class CaseMemo:
    """What a case's check computes from its inputs alone (an fp32 reference, the baseline
    backend's error), kept across the case's backends: `setup` runs once per (case, backend)
    and seeds its inputs identically, so these are the same for every backend. Values are
    filed under (name, fingerprint of the inputs), so inputs made otherwise never get another's
    reference. One case at a time: `begin` with another case (each setup calls it) drops the
    previous case's values, so device memory holds one case's reference, never the run's."""

    def __init__(self) -> None:
        self.case: Any = None
        self.values: dict = {}

    def begin(self, case: Any) -> None:
        if case != self.case:
            self.case, self.values = case, {}

    def get(self, case: Any, name: Any, compute: Callable[[], Any]) -> Any:
        self.begin(case)
        if name not in self.values:
            self.values[name] = compute()
        return self.values[name]


def human_bytes(n: int) -> str:
    """1073741824 -> "1 GiB", 4194304 -> "4 MiB" (shape labels)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


WORKLOADS: dict[str, Workload] = {}


def register(cls: type[Workload]) -> type[Workload]:
    """Class decorator: make a workload known to the runner, suites and pytest-benchmark."""
    WORKLOADS[cls.name] = cls()
    return cls


COMPARE_CHUNK = 1 << 26  # elements compared at a time: 512 MiB per fp64 temporary


def max_rel_error(out, ref) -> float:
    """Largest absolute error relative to the largest reference magnitude (normwise).

    Normwise rather than elementwise: elementwise relative error explodes where the reference
    crosses zero, which random data always does.
    """
    import torch

    if callable(ref):  # ref(i, j): the reference of flat elements i..j, made chunk by chunk
        ref_chunk = ref
    else:
        if out.shape != ref.shape:
            raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
        flat_ref = ref.detach().reshape(-1)
        ref_chunk = lambda i, j: flat_ref[i:j]
    flat = out.detach().reshape(-1)
    err = scale = 0.0
    # In chunks: fp64 copies of a whole 8 GiB buffer (and |ref|, out - ref) would not fit in
    # an 80 GB GPU beside the buffers themselves.
    for i in range(0, flat.numel(), COMPARE_CHUNK):
        j = min(i + COMPARE_CHUNK, flat.numel())
        o, r = flat[i:j].to(torch.float64), ref_chunk(i, j).to(torch.float64)
        if not torch.isfinite(o).all():
            return math.inf
        scale = max(scale, r.abs().max().item())
        err = max(err, (o - r).abs().max().item())
    return err / scale if scale > 0 else err
