"""Scenarios: a model, a cluster, a parallel layout (or "auto"), training settings and the
global batch, a labelled input (BATCH_PRESETS hold published values).

A scenario is a dict, a JSON or YAML file or text, or a preset name from SCENARIOS. `model` and
`cluster` may be preset names or dicts; `parallel` may be "auto" (search the fastest layout that
fits in memory). Optional keys: `training` (reports.model.config.Training), `mixed_batch`
("plain_dp": every replica the same micro-batches, the slowest GPU type sets the pace;
"proportional": micro-batches in proportion to each type's speed), `global_batch_tokens` (an
integer, or a BATCH_PRESETS name), `name`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from reports.model.cluster_spec import cluster_from_dict
from reports.model.config import (
    Parallel,
    ScenarioError,
    Training,
    check_keys,
    training_from,
)
from reports.model.hardware import Cluster, cluster
from reports.model.presets import Model, model_from
from results.errors import first_line

_M16 = 16 * 2**20
# Global batch in tokens per step: published values, each with its source.
BATCH_PRESETS: dict[str, tuple[int, str]] = {
    "llama3": (_M16, "Llama 3 405B: 16M tokens per step (Dubey et al. 2024, Table 4)"),
    "gpt3": (3_200_000 // 2048 * 2048, "GPT-3 175B: 3.2M tokens (Brown et al. 2020, Table 2.1)"),
    "nemotron4-340b": (2304 * 4096, "Nemotron-4 340B: 2,304 x 4,096 tokens (NVIDIA 2024, "
                                    "Table 2)"),
}
DEFAULT_BATCH = "llama3"
# assumption: a scenario without global_batch_tokens runs 4M tokens per step (between GPT-3's
# 3.2M and Llama 3's 16M above); the output names it as a default
DEFAULT_SCENARIO_BATCH = 4 * 2**20
# The largest global batch a scenario may ask for: 10^10 tokens per step, over 600x Llama 3 405B's
# 16M (the largest preset above). Beyond it a "step" is a sizeable share of a whole pre-training
# run (Llama 3: 15.6T tokens, under 1,600 such steps) and the figures mean nothing (a step of
# 10^20 tokens printed as 9.6e13 s); a bound, not a published limit.
MAX_BATCH_TOKENS = 10**10


def _colossus(model: str, cluster_name: str) -> dict:
    return {"model": model, "cluster": cluster_name, "parallel": "auto",
            "global_batch_tokens": DEFAULT_BATCH}


SCENARIOS: dict[str, dict] = {
    "colossus-100k-gpt3": _colossus("gpt3-175b", "colossus-100k"),
    "colossus-100k-llama3-70b": _colossus("llama3-70b", "colossus-100k"),
    "colossus-100k-llama3-405b": _colossus("llama3-405b", "colossus-100k"),
    "colossus-100k-dense-1t": _colossus("dense-1t", "colossus-100k"),
    "colossus-200k-llama3-405b": _colossus("llama3-405b", "colossus-200k"),
    "colossus-200k-h200-llama3-405b": _colossus("llama3-405b", "colossus-200k-h200"),
    # Llama 3's own 16k-GPU run size and batch (Dubey et al. 2024, Table 4), layout searched,
    # default (Megatron-Core) training settings, not Meta's FSDP (docs/MODEL.md, Presets)
    "llama3-405b-16k-h100": {
        "model": "llama3-405b",
        "cluster": {"name": "h100-16k", "gpu": "H100-SXM", "gpus": 16384, "gpus_per_node": 8,
                    "scale_out_gbps_per_gpu": 400},
        "parallel": "auto",
        "global_batch_tokens": "llama3"},
    # the example of ARCHITECTURE.md ("The scenario file")
    "gpt3-4096-h100": {
        "model": "gpt3-175b",
        "cluster": {"name": "h100-4096", "gpu": "H100-SXM", "gpus": 4096, "gpus_per_node": 8,
                    "scale_out_gbps_per_gpu": 400},
        "parallel": {"tp": 8, "pp": 8, "cp": 1, "dp": 64, "micro_batch": 1,
                     "virtual_stages": 1, "recompute": "none"},
        "global_batch_tokens": 4194304},
}

_SCENARIO_KEYS = {"name", "model", "cluster", "parallel", "training", "global_batch_tokens",
                  "mixed_batch"}
_PARALLEL_KEYS = {"tp", "pp", "cp", "dp", "micro_batch", "virtual_stages", "recompute"}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: Model
    cluster: Cluster
    parallel: Parallel | None  # None: search
    training: Training
    global_batch_tokens: int
    mixed_batch: str = "plain_dp"
    batch_source: str = "scenario file"

    @property
    def sequences(self) -> int:
        """Sequences per step (global batch)."""
        return self.global_batch_tokens // self.model.seq_len

    @property
    def attention_count(self) -> str:
        """How MFU counts attention: as computed (compute.flops_per_token), so half the square
        with a causal mask and the whole square without."""
        return "causal" if self.training.causal else "full"


def file_text(path: Path) -> str:
    """A scenario file's text; a file that is not UTF-8 text is one line (ScenarioError)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario file {path} is not UTF-8 text (JSON or YAML)") from None
    except OSError as e:
        raise ScenarioError(f"cannot read scenario file {path}: {e.strerror or e}") from None


def _unique(pairs: list) -> dict:
    """A mapping whose keys are given once: JSON and YAML both keep the last of a repeated key
    silently, and a scenario that says `model:` twice means one of them by mistake."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ScenarioError(f"scenario key {k!r} is given twice")
        out[k] = v
    return out


def _yaml_loader():
    import yaml  # lazy: only YAML scenarios need it

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            # the mapping's own keys once each; a merged one (<<: *anchor) it may override
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value
                    if k.tag not in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")]
            _unique([(k, None) for k in keys if isinstance(k, Hashable)])
            return super().construct_mapping(node, deep=deep)  # unhashable: its YAMLError

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                           Loader.construct_mapping)
    return Loader


def parse_text(text: str):
    """A scenario's JSON or YAML text parsed (JSON first: it is also YAML, only faster); a key
    given twice in one mapping is refused."""
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except ScenarioError:
        raise
    except ValueError:
        pass
    except RecursionError:
        raise ScenarioError("scenario is nested too deep to be one") from None
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ScenarioError(f"scenario is neither JSON nor YAML: {yaml_line(e)}") from None
    except RecursionError:
        raise ScenarioError("scenario is nested too deep to be one") from None


def yaml_line(e) -> str:
    """PyYAML's several-line message as one line: the problem and where (line, column)."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return first_line(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _read_text(spec: str) -> dict:
    """A scenario dict from a preset name, a file path, or JSON/YAML text."""
    if spec in SCENARIOS:
        return dict(SCENARIOS[spec], name=spec)
    name = None
    if "\n" in spec or spec.lstrip().startswith("{"):
        text = spec  # inline JSON or YAML
    else:
        path = Path(spec)
        if path.is_file():
            text, name = file_text(path), path.stem
        elif path.is_dir():
            raise ScenarioError(f"{spec} is a directory, not a scenario file")
        elif path.suffix.lower() in (".json", ".yaml", ".yml"):
            raise ScenarioError(f"scenario file not found: {spec}")
        else:
            raise ScenarioError(f"unknown scenario preset {spec!r}; known: "
                                f"{', '.join(sorted(SCENARIOS))}; serving presets are named "
                                "serve-* (estimate -h lists them); or give a JSON/YAML file")
    data = parse_text(text)
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping with model, cluster, parallel, ...")
    if name and "name" not in data:
        data["name"] = name
    return data


def _number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def batch_tokens(spec, seq_len: int, given_by: str = "scenario file") -> tuple[int, str]:
    """(tokens per step, source) of a global_batch_tokens value: an integer (its source:
    `given_by`, the file or the scenario preset that holds it) or a BATCH_PRESETS name."""
    if isinstance(spec, str):
        if spec not in BATCH_PRESETS and _number_text(spec):  # YAML 1.1 reads 4.0e6 as text
            raise ScenarioError(f"global_batch_tokens {spec!r} was read as text, not a number "
                                "(YAML wants 4.0e+6 or 4000000): write an integer number of "
                                "tokens")
        if spec not in BATCH_PRESETS:
            raise ScenarioError(f"unknown global_batch_tokens preset {spec!r}; known: "
                                f"{', '.join(sorted(BATCH_PRESETS))} (or an integer)")
        return BATCH_PRESETS[spec]
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < seq_len:
        raise ScenarioError(f"global_batch_tokens must be an integer >= seq_len "
                            f"({seq_len}) or a preset name, got {spec!r}")
    if spec > MAX_BATCH_TOKENS:
        raise ScenarioError(f"global_batch_tokens {spec:.3g} is beyond the model's bound of "
                            f"{MAX_BATCH_TOKENS:.0e} tokens per step (over 600x Llama 3's 16M; "
                            f"reports/model/scenario.py MAX_BATCH_TOKENS)")
    return spec, given_by


def _training_mode(spec: dict) -> dict:
    """A training scenario's optional "mode" key: "train" (dropped) or absent; "serve" is read
    by reports/model/serving_scenario.py before this, so any other value is a typo."""
    if "mode" not in spec:
        return spec
    if spec["mode"] != "train":
        raise ScenarioError(f"scenario mode must be \"serve\" (a serving scenario, with a "
                            f"`serving` mapping) or \"train\" (or absent: a training scenario), "
                            f"got {spec['mode']!r}")
    return {k: v for k, v in spec.items() if k != "mode"}


def load_scenario(spec) -> Scenario:
    """A Scenario from a Scenario, a dict, a preset name, a path, or JSON/YAML text."""
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, Path):
        spec = str(spec)
    given_by = f"preset {spec}" if isinstance(spec, str) and spec in SCENARIOS else \
        "scenario file"
    if isinstance(spec, str):
        spec = _read_text(spec)
    if not isinstance(spec, dict):
        raise ScenarioError(f"scenario must be a dict, a file or a preset name, not "
                            f"{type(spec).__name__}")
    spec = _training_mode(spec)
    check_keys(spec, _SCENARIO_KEYS, "scenario")
    for key in ("model", "cluster"):
        if key not in spec:
            raise ScenarioError(f"scenario needs '{key}'")
    model = model_from(spec["model"])
    try:
        clu = cluster(spec["cluster"]) if isinstance(spec["cluster"], str) else \
            cluster_from_dict(spec["cluster"])
    except (ValueError, TypeError, KeyError) as e:
        raise ScenarioError(f"cluster: {e}") from None
    train = training_from(spec.get("training"))
    par_spec = spec.get("parallel", "auto")
    if par_spec == "auto":
        par = None
    elif isinstance(par_spec, dict):
        check_keys(par_spec, _PARALLEL_KEYS, "parallel")
        p = dict(par_spec)
        if "dp" not in p:
            mp = Parallel(**p).model_parallel  # checks the types first (dp defaults to 1)
            if clu.gpus % mp:
                raise ScenarioError(f"tp*pp*cp = {mp} does not divide the {clu.gpus} GPUs")
            p["dp"] = clu.gpus // mp
        par = Parallel(**p)
    else:
        raise ScenarioError(f"parallel must be 'auto' or a dict, got {par_spec!r}")
    if "global_batch_tokens" in spec:
        gbt, bsrc = batch_tokens(spec["global_batch_tokens"], model.seq_len, given_by)
    else:
        gbt, bsrc = DEFAULT_SCENARIO_BATCH, (f"default: {DEFAULT_SCENARIO_BATCH:,} tokens (the "
                                             "scenario gives no global_batch_tokens)")
    mixed = spec.get("mixed_batch", "plain_dp")
    if mixed not in ("plain_dp", "proportional"):
        raise ScenarioError(f"mixed_batch must be 'plain_dp' or 'proportional', got {mixed!r}")
    name = str(spec.get("name", f"{model.name}@{clu.name}"))
    return Scenario(name, model, clu, par, train, max(gbt, model.seq_len), mixed, bsrc)
