"""Workload families, one file each; importing this package registers them all.

Every module listed below defines one `Workload` subclass decorated with `@register`; a new
family is one new file and one name in the import line.
"""

from bench.workloads import attention, gemm, hostdevice, membw  # noqa: F401  (they register)
from bench.workloads.base import WORKLOADS, Case, Check, Unsupported, Workload, register

__all__ = ["WORKLOADS", "Case", "Check", "Unsupported", "Workload", "register"]
