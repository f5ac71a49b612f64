"""Load result files into the table: JSON Lines of records, a JSON array of records (what
`run --json-out` writes), or pytest-benchmark JSON.

A file is all or nothing: every row passes the door (results/validate.py) first, then all rows
are inserted in one transaction, so a malformed file (truncated JSON, another tool's
pytest-benchmark file, a row with a missing field or an impossible value, bytes that are not
UTF-8 text) writes nothing, and the one-line error names the file, the row, the field and value.
"""

from __future__ import annotations

import json
from pathlib import Path

from results.schema import RecordError, Result
from results.validate import check, unchecked
from results.words import counted

# A file larger than this is refused before it is read into memory. Assumption: a record is a
# few KiB (its samples and telemetry), so 2 GiB is hundreds of thousands of rows, more than one
# ingest should carry; split larger sets.
MAX_FILE_BYTES = 2 * 1024**3

# What ingest reads, for the line that refuses anything else.
FORMATS = ("ingest reads JSON Lines of records (export --format jsonl), a JSON array of records "
           "(run --json-out), or pytest-benchmark JSON (bench/benchmarks)")

# Keys that mark a JSON object as a results record (results/schema.py) rather than another file.
RECORD_KEYS = {"workload", "schema_version", "run_id", "median_s"}


class IngestError(ValueError):
    """A file that cannot be loaded; the message names the file and the row."""


def record(row, where: str, strict: bool = False) -> Result:
    """One row of a file as a record: the door's checks (`strict`: with the contract's names,
    results/validate.py), then the record's own (id, status)."""
    try:
        if isinstance(row, dict):
            check(row, where, strict=strict)
        return Result.from_dict(row, where=where)
    except (RecordError, TypeError) as e:
        raise IngestError(str(e)) from None


def _loads(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise IngestError(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise IngestError(f"{where}: JSON nested too deep") from None


def parse_jsonl(path: Path, text: str, strict: bool = False) -> list[Result]:
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            where = f"{path}: line {lineno}"
            out.append(record(_loads(line, where), where, strict))
    return out


def load_jsonl(path: str | Path) -> list[Result]:
    """Records, one JSON object per line (our export format and results/reference/)."""
    path = Path(path)
    return parse_jsonl(path, read_text(path))


def _label(name) -> str:
    """A benchmark's name for a one-line message: control characters escaped, cut short."""
    text = str(name)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= 120 else text[:117] + "..."


def load_pytest_benchmark(path: Path, doc: dict, strict: bool = False) -> list[Result]:
    """Records from a pytest-benchmark --benchmark-json file written by bench/benchmarks."""
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise IngestError(f"{path}: no 'benchmarks' list: not a pytest-benchmark JSON file")
    out = []
    for i, b in enumerate(benchmarks, 1):
        name = b.get("fullname") or b.get("name") if isinstance(b, dict) else None
        extra = b.get("extra_info") if isinstance(b, dict) else None
        rec = extra.get("record") if isinstance(extra, dict) else None
        if rec is None:
            raise IngestError(f"{path}: benchmark {i} ({_label(name)}): no colossus-bench record "
                              "in extra_info: this file was not written by bench/benchmarks")
        out.append(record(rec, f"{path}: benchmark {i} ({_label(name)})", strict))
    return out


def read_text(path: Path) -> str:
    """The file as text, or one IngestError line: missing, a folder, too big, not UTF-8."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if not path.is_file():
        raise IngestError(f"{path}: not a file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise IngestError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB: not a results "
                              "file")
        data = path.read_bytes()
    except OSError as e:
        raise IngestError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IngestError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                          f"{e.start}): not a JSON or JSON Lines file") from None
    if "\x00" in text:
        raise IngestError(f"{path}: holds NUL bytes: not a JSON or JSON Lines file")
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write


def load_file(path: str | Path, *, strict: bool = False) -> list[Result]:
    """Every record of a file, validated (`read_records`), none two different results of one
    identity: a table keeps the first of an id, so the second would be dropped silently."""
    records = read_records(path, strict=strict)
    seen: dict[str, tuple[int, Result]] = {}
    for i, r in enumerate(records, 1):
        first = seen.setdefault(r.id, (i, r))
        if first[1] != r:  # field by field, as the record's dataclass compares
            raise IngestError(f"{path}: records {first[0]} and {i} are one result (id {r.id}: "
                              "same run, case and rank) with different figures; keep one")
    return records


def read_records(path: str | Path, *, strict: bool = False) -> list[Result]:
    """Every record of a file, validated, or an IngestError naming the file and row. `strict`
    (the `ingest` verb): the contract's run ids and workloads too (results/validate.py); the
    library default takes what the tables take (a spool of a planted or named run)."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise IngestError(f"{path}: empty file")
    first = text.lstrip()[0]
    if first not in "{[":
        raise IngestError(f"{path}: not JSON or JSON Lines (it does not start with {{ or [): "
                          f"{FORMATS}")
    if first == "[" or "\n{" not in text.strip():  # one JSON document, not JSON Lines
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            # a file cut short fails at its end, after the last newline: name the last line
            line = text.count("\n", 0, min(e.pos, len(text.rstrip()))) + 1
            raise IngestError(f"{path}: not valid JSON (line {line}: {e.msg}); "
                              "truncated?") from None
        except RecursionError:
            raise IngestError(f"{path}: JSON nested too deep") from None
        # a one-line document is also a JSON Lines file of one row: its rows keep that reading
        one_line = "\n" not in text.strip()
        if isinstance(doc, dict) and "benchmarks" in doc:
            return load_pytest_benchmark(path, doc, strict)
        if isinstance(doc, list) and (not one_line or all(isinstance(r, dict) for r in doc)):
            # `run --json` / `--json-out`: an array of records
            return [record(row, f"{path}: record {i}", strict) for i, row in enumerate(doc, 1)]
        if isinstance(doc, dict) and not one_line:  # one pretty-printed record, or another file
            if not RECORD_KEYS & set(doc):
                raise IngestError(f"{path}: a JSON object that is not a results record: "
                                  f"{FORMATS}")
            return [record(doc, f"{path}: record 1", strict)]
    return parse_jsonl(path, text, strict)


def unchecked_notes(path, records: list[Result]) -> list[str]:
    """One line per kind of figure that could not be checked (results/validate.py
    `unchecked`): which throughput, on which device models, in how many rows."""
    kinds: dict[str, tuple[int, set[str]]] = {}
    for r in records:
        for name in unchecked(r):
            n, models = kinds.get(name, (0, set()))
            models.add(str(r.device.get("model") or r.device.get("name") or "unknown"))
            kinds[name] = (n + 1, models)
    return [f"{path}: {name} of {counted(n, 'row')} not checked: no datasheet peak known for "
            f"{', '.join(sorted(models))} (stored all the same)" for name, (n, models)
            in kinds.items()]


def insert_all(records: list[Result], store) -> int:
    """Insert one file's records in one transaction; returns the rows new to the table."""
    with store.engine.begin() as conn:
        return store.insert(records, conn=conn)


def ingest(path: str | Path, store) -> tuple[int, int]:
    """Load a file into the store in one transaction. Returns (new rows, rows in the file)."""
    records = load_file(path)
    return insert_all(records, store), len(records)
