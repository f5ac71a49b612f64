"""Workload families, one file each; importing this package registers them all.

Every module here except `base` and the helpers (`sdpa`, `attention_cases`, `shapes`: data and
functions the workloads share) defines one `Workload` subclass decorated with `@register`.
"""

import importlib
import pkgutil

from bench.workloads.base import WORKLOADS, Case, Check, Unsupported, Workload, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["WORKLOADS", "Case", "Check", "Unsupported", "Workload", "register"]
