"""Workload families, one file each; importing this package registers them all.

Every module listed in the import line below defines one `Workload` subclass decorated with
`@register`; `base` and the helpers (`sdpa`, `attention_cases`, `shapes`: data and functions the
workloads share) define none. A new family is one new file and one name in that line.
"""

from bench.workloads import attention, decode, gemm, hostdevice, membw  # noqa: F401  (register)
from bench.workloads.base import WORKLOADS, Case, Check, Unsupported, Workload, register

__all__ = ["WORKLOADS", "Case", "Check", "Unsupported", "Workload", "register"]
