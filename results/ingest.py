"""Load result files into the table: JSON Lines of records, or pytest-benchmark JSON.

A file is all or nothing: every row is validated first, then all rows are inserted in one
transaction, so a malformed file (truncated JSON, another tool's pytest-benchmark file, a row
with a missing field) writes nothing and the error names the file and the row.
"""

from __future__ import annotations

import json
from pathlib import Path

from results.schema import RecordError, Result


class IngestError(ValueError):
    """A file that cannot be loaded; the message names the file and the row."""


def load_jsonl(path: Path) -> list[Result]:
    """Records, one JSON object per line (our export format and results/reference/)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise IngestError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            try:
                out.append(Result.from_dict(row, where=f"{path}: line {lineno}"))
            except (RecordError, TypeError) as e:
                raise IngestError(str(e)) from None
    return out


def load_pytest_benchmark(path: Path, doc: dict) -> list[Result]:
    """Records from a pytest-benchmark --benchmark-json file written by bench/benchmarks."""
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise IngestError(f"{path}: no 'benchmarks' list: not a pytest-benchmark JSON file")
    out = []
    for i, b in enumerate(benchmarks, 1):
        name = b.get("fullname") or b.get("name") if isinstance(b, dict) else None
        extra = b.get("extra_info") if isinstance(b, dict) else None
        record = extra.get("record") if isinstance(extra, dict) else None
        if record is None:
            raise IngestError(f"{path}: benchmark {i} ({name}): no colossus-bench record in "
                              "extra_info: this file was not written by bench/benchmarks")
        try:
            out.append(Result.from_dict(record, where=f"{path}: benchmark {i} ({name})"))
        except (RecordError, TypeError) as e:
            raise IngestError(str(e)) from None
    return out


def load_file(path: str | Path) -> list[Result]:
    """Every record of a file, validated, or an IngestError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise IngestError(f"{path}: empty file")
    first = text.lstrip()[0]
    if first == "{" and "\n{" not in text.strip():  # one JSON document, not JSON Lines
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise IngestError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); "
                              "truncated?") from None
        if isinstance(doc, dict) and "benchmarks" in doc:
            return load_pytest_benchmark(path, doc)
    return load_jsonl(path)


def ingest(path: str | Path, store) -> tuple[int, int]:
    """Load a file into the store in one transaction. Returns (new rows, rows in the file)."""
    records = load_file(path)
    with store.engine.begin() as conn:
        new = store.insert(records, conn=conn)
    return new, len(records)
