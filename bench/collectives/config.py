"""What a collectives run is asked to do (CollConfig), in nccl-tests' terms, and where a rank
sits in its world (World). Plain data, no torch: the CLI validates arguments before importing it.

nccl-tests (src/common.cu, README "Arguments") names every choice; we take its names and
meanings one-to-one and refuse, with one line, what we do not support:

  -d  datatype: int8 uint8 int32 uint32 int64 uint64 half float double bfloat16 f8e4m3 f8e5m2
      or all (ours: the project names fp32, fp16, bf16, ... are accepted too)
  -o  reduction: sum prod min max avg, or all (mulsum is refused: torch.distributed has no
      pre-multiplied sum); all_gather reduces nothing (redop "none")
  -a  time reported across ranks: 0 rank 0, 1 mean (default), 2 min, 3 max
  -z  blocking: wait for each collective and barrier after it (0/1)
  -N  run cycles: sweep the sizes this many times (0: until interrupted)
  -G  CUDA graph launches: refused (not implemented)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from bench.collectives.formulas import OPS, check_op
from bench.collectives.sizes import size_sweep

MiB = 1024**2
BACKENDS = ("nccl", "gloo")

# Project name -> (torch dtype attribute, nccl-tests name in its type column).
DTYPES: dict[str, tuple[str, str]] = {
    "fp32": ("float32", "float"), "fp16": ("float16", "half"), "bf16": ("bfloat16", "bfloat16"),
    "fp64": ("float64", "double"), "int8": ("int8", "int8"), "uint8": ("uint8", "uint8"),
    "int32": ("int32", "int32"), "uint32": ("uint32", "uint32"), "int64": ("int64", "int64"),
    "uint64": ("uint64", "uint64"), "fp8_e4m3": ("float8_e4m3fn", "f8e4m3"),
    "fp8_e5m2": ("float8_e5m2", "f8e5m2"),
}
NCCL_TYPE_NAMES = {nccl: ours for ours, (_, nccl) in DTYPES.items()}
INTEGER = ("int8", "uint8", "int32", "uint32", "int64", "uint64")
FP8 = ("fp8_e4m3", "fp8_e5m2")
# Why a type is refused, whatever the backend (torch.distributed's limits, not NCCL's).
REFUSED_TYPES = {
    "uint32": "torch has only shell support for uint32 tensors (no fill or arithmetic)",
    "uint64": "torch has only shell support for uint64 tensors (no fill or arithmetic)",
}
# What gloo (torch 2.11-2.13) refuses with "Invalid scalar type".
GLOO_REFUSED = FP8

REDOPS = ("sum", "prod", "min", "max", "avg")  # nccl-tests' test_opnames, less mulsum
AVERAGE = {0: "rank 0", 1: "mean over ranks", 2: "min over ranks", 3: "max over ranks"}

# nccl-tests defaults (src/common.cu): -n 20, -w 5, -c 1, -a 1, -z 0, -N 1. The timeout is our
# assumption: long enough for one phase (up to -n calls) of a 1 GiB collective on a slow fabric.
DEFAULT_ITERS, DEFAULT_WARMUP, DEFAULT_CHECK = 20, 5, 1
DEFAULT_TIMEOUT_S = 300.0
# The database URL may hold a password: the launcher hands it to its ranks in this variable
# (readable by the same user only, /proc/<pid>/environ), never in the config file.
DB_URL_ENV = "COLOSSUS_BENCH_RANK_DB_URL"


def dtype_name(text: str) -> str:
    """Our name for a nccl-tests or project type name: 'float' -> 'fp32', 'bf16' -> 'bf16'."""
    if text in DTYPES:
        return text
    if text in NCCL_TYPE_NAMES:
        return NCCL_TYPE_NAMES[text]
    raise ValueError(f"unknown datatype {text!r}; choose one of "
                     f"{', '.join(NCCL_TYPE_NAMES)} or all (or {', '.join(DTYPES)})")


def parse_dtypes(text: str) -> tuple[str, ...]:
    """-d: one name, comma-separated names, or 'all' (every type this backend can run)."""
    if text == "all":
        return tuple(d for d in DTYPES if d not in REFUSED_TYPES)
    return tuple(dict.fromkeys(dtype_name(t.strip()) for t in text.split(",")))


def parse_redops(text: str) -> tuple[str, ...]:
    """-o: sum, prod, min, max, avg, comma-separated, or 'all'."""
    if text == "all":
        return REDOPS
    out = []
    for name in (t.strip().lower() for t in text.split(",")):
        if name == "mulsum":
            raise ValueError("-o mulsum is not supported: torch.distributed has no "
                             "pre-multiplied sum (ncclRedOpCreatePreMulSum)")
        if name in OPS:
            raise ValueError(f"-o/--op is the reduction (sum, prod, min, max, avg), as in "
                             f"nccl-tests; choose the collective with --collective {name}")
        if name not in REDOPS:
            raise ValueError(f"unknown reduction {name!r}; choose one of {', '.join(REDOPS)} "
                             "or all")
        out.append(name)
    return tuple(dict.fromkeys(out))


def refusal(backend: str, dtype: str, op: str, redop: str | None) -> str | None:
    """Why (backend, dtype, collective, reduction) cannot run here, or None when it can."""
    if dtype in REFUSED_TYPES:
        return f"-d {DTYPES[dtype][1]}: {REFUSED_TYPES[dtype]}"
    if backend == "gloo" and dtype in GLOO_REFUSED:
        return f"-d {DTYPES[dtype][1]}: gloo has no {DTYPES[dtype][1]} (use nccl)"
    if redop is None:
        return None
    if backend == "nccl" and dtype in FP8:
        return (f"-d {DTYPES[dtype][1]} with {op}: torch.distributed refuses fp8 reductions "
                "on NCCL (all_gather only)")
    if redop == "avg" and dtype in INTEGER:
        return f"-o avg with -d {DTYPES[dtype][1]}: averages are run for floating types only"
    return None


@dataclass(frozen=True)
class CollConfig:
    """Everything a rank needs; the launcher passes it to its ranks as JSON."""

    ops: tuple[str, ...] = ("all_reduce",)
    backend: str = "gloo"
    dtype: str = "fp32"  # the first of `dtypes`; kept for callers that name one type
    min_bytes: int = 1024
    max_bytes: int = 16 * MiB
    step_factor: int = 2
    step_bytes: int = MiB
    iters: int = DEFAULT_ITERS
    warmup_iters: int = DEFAULT_WARMUP
    check_iters: int = DEFAULT_CHECK
    timeout_s: float = DEFAULT_TIMEOUT_S
    db_url: str | None = None
    run_id: str = ""
    status_dir: str | None = None
    spool: str | None = None  # rank 0's JSON Lines of rows; default <status_dir>/rows.jsonl
    iter_stats: bool = False
    json: bool = False
    telemetry: bool = True
    dtypes: tuple[str, ...] = ()  # -d; empty: (dtype,)
    redops: tuple[str, ...] = ("sum",)  # -o
    average: int = 1  # -a
    blocking: bool = False  # -z
    run_cycles: int = 1  # -N
    # The ranks' own collective timeout; None: timeout_s. The launcher, which watches every
    # rank and stops the run at timeout_s itself, gives them a little longer.
    pg_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ops, str) or not self.ops:
            raise ValueError("ops must be a non-empty sequence of collective names")
        object.__setattr__(self, "ops", tuple(check_op(op) for op in self.ops))
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
        dtypes = tuple(self.dtypes) or (self.dtype,)
        object.__setattr__(self, "dtypes", tuple(dtype_name(d) for d in dtypes))
        object.__setattr__(self, "dtype", self.dtypes[0])
        object.__setattr__(self, "redops", tuple(self.redops))
        for r in self.redops:
            if r not in REDOPS:
                raise ValueError(f"unknown reduction {r!r}; choose one of {', '.join(REDOPS)}")
        if not self.redops:
            raise ValueError("redops must name at least one reduction")
        for name in ("iters", "warmup_iters", "check_iters", "average", "run_cycles"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if self.iters < 1:
            raise ValueError(f"iters (-n) must be >= 1, got {self.iters}")
        if self.warmup_iters < 0 or self.check_iters < 0:
            raise ValueError("warm-up (-w) and check (-c) iterations must be >= 0")
        if self.average not in AVERAGE:
            raise ValueError(f"-a must be 0 (rank 0), 1 (mean), 2 (min) or 3 (max), got "
                             f"{self.average}")
        if self.run_cycles < 0:
            raise ValueError(f"-N must be >= 0 (0: until interrupted), got {self.run_cycles}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got "
                             f"{self.timeout_s!r}")
        self.sizes()  # validates -b, -e, -f, -i
        if not self.tests():
            raise ValueError("nothing to run: " + "; ".join(dict.fromkeys(self.refusals())))

    def sizes(self) -> list[int]:
        return size_sweep(self.min_bytes, self.max_bytes, self.step_factor, self.step_bytes)

    def _combinations(self):
        """(collective, dtype, redop) in nccl-tests' order: per collective, type, then op."""
        for op in self.ops:
            for dtype in self.dtypes:
                for redop in (self.redops if op != "all_gather" else (None,)):
                    yield op, dtype, redop, refusal(self.backend, dtype, op, redop)

    def tests(self) -> list[tuple[str, str, str | None]]:
        """The (collective, dtype, redop) triples that run."""
        return [(o, d, r) for o, d, r, why in self._combinations() if why is None]

    def refusals(self) -> list[str]:
        """One line for each asked-for combination that does not run."""
        return [why for *_, why in self._combinations() if why is not None]

    def to_json(self) -> str:
        """The configuration without the database URL (see DB_URL_ENV)."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "db_url"})

    @classmethod
    def from_json(cls, text: str, db_url: str | None = None) -> CollConfig:
        d = json.loads(text)
        for key in ("ops", "dtypes", "redops"):
            d[key] = tuple(d[key])
        return cls(**d, db_url=db_url)


@dataclass(frozen=True)
class World:
    """This process's place in the distributed job, from the launcher's environment."""

    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" (RANK/WORLD_SIZE, also set by users) or "slurm" (srun)


def world_from_env(env=None) -> World | None:
    """The world this process already belongs to, or None (then the CLI launches one).

    torchrun and friends set RANK and WORLD_SIZE; srun sets SLURM_PROCID and, only inside a
    job step (not in the batch script itself), SLURM_STEP_NUM_TASKS. A one-task srun step is
    not a world: `srun -N1 colossus-bench allreduce --nproc-per-node 8` launches locally.
    """
    env = os.environ if env is None else env
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return World(int(env["RANK"]), int(env["WORLD_SIZE"]),
                         int(env.get("LOCAL_RANK", "0")), "torchrun")
        if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
            return World(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                         int(env.get("SLURM_LOCALID", "0")), "slurm")
    except ValueError as e:
        raise ValueError(f"bad rank variables in the environment: {e}") from None
    return None
