"""Message sizes as nccl-tests takes them: `-b`, `-e` with K/M/G suffixes, `-f` or `-i` steps.

nccl-tests `parsesize` (src/common.cu): a number with an optional K, M or G suffix (either
case), binary units (K = 1024); fractions are allowed ("0.5M") and truncated to whole bytes.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGkmg]?)\s*[Bb]?\s*$")


def parse_size(text: str | int) -> int:
    """'1K' -> 1024, '16M' -> 16777216, '1G' -> 1073741824, '4096' -> 4096 (bytes)."""
    if isinstance(text, bool):
        raise TypeError("a size is a number of bytes or a string like '16M', not a bool")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return text
    if not isinstance(text, str):
        raise TypeError(f"a size is an int or a string like '16M', not {type(text).__name__}")
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r}: expected bytes or a number with K, M or G "
                         "(binary units), e.g. 4096, 1K, 16M, 1G")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def format_size(nbytes: int) -> str:
    """The shortest exact K/M/G spelling: 1048576 -> '1M', 1536 -> '1536'."""
    for suffix in ("G", "M", "K"):
        unit = UNITS[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def size_sweep(min_bytes: int, max_bytes: int, factor: int = 1,
               step_bytes: int = 1024**2) -> list[int]:
    """Sizes from min to max inclusive: times `factor` when factor > 1, else plus `step_bytes`.

    nccl-tests TimeTest: `for (size = min; size <= max; size = f > 1 ? size*f : size+step)`.
    """
    for name, v in (("min_bytes", min_bytes), ("max_bytes", max_bytes), ("factor", factor),
                    ("step_bytes", step_bytes)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if min_bytes < 1:
        raise ValueError(f"minimum size must be at least 1 byte, got {min_bytes}")
    if min_bytes > max_bytes:
        raise ValueError(f"invalid sizes: minimum {min_bytes} B > maximum {max_bytes} B")
    if factor < 1:
        raise ValueError(f"step factor must be >= 1, got {factor}")
    if factor == 1 and step_bytes < 1:
        raise ValueError(f"step bytes must be >= 1 when the factor is 1, got {step_bytes}")
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size = size * factor if factor > 1 else size + step_bytes
    return sizes
