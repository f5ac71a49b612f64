"""The scaling model's public face: scenarios, estimate(), and the cluster-scale questions.

Where things live: scenario.py (Scenario, SCENARIOS, BATCH_PRESETS, load_scenario), search.py
(Estimate, evaluate, search, estimate with its range), cluster.py (cluster_throughput,
batch_sensitivity, mixed_job, colossus_200k_gain, power, TOKEN_BUDGETS), h200.py (h200_gain),
goodput.py (goodput, young_daly_interval, useful_fraction). This module re-exports them for callers.
"""

from reports.model.cluster import (
    COLOSSUS_CLUSTERS,
    COLOSSUS_MODELS,
    TOKEN_BUDGETS,
    batch_sensitivity,
    cluster_throughput,
    colossus_200k_gain,
    mixed_job,
    power,
)
from reports.model.config import ScenarioError
from reports.model.estimate import Estimate
from reports.model.goodput import (
    CHECKPOINT_S,
    LLAMA3_FAILURES_PER_GPU_HOUR,
    RESTART_S,
    goodput,
    useful_fraction,
    young_daly_interval,
)
from reports.model.h200 import h200_gain
from reports.model.scenario import (
    BATCH_PRESETS,
    SCENARIOS,
    Scenario,
    load_scenario,
)
from reports.model.search import candidates, estimate, evaluate, search

__all__ = ["BATCH_PRESETS", "CHECKPOINT_S", "COLOSSUS_CLUSTERS", "COLOSSUS_MODELS", "Estimate",
           "LLAMA3_FAILURES_PER_GPU_HOUR", "RESTART_S", "SCENARIOS", "Scenario", "ScenarioError",
           "TOKEN_BUDGETS", "batch_sensitivity", "candidates",
           "cluster_throughput", "colossus_200k_gain", "estimate", "evaluate", "goodput",
           "h200_gain", "load_scenario", "mixed_job", "power", "search", "useful_fraction",
           "young_daly_interval"]
