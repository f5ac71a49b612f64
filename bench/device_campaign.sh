#!/usr/bin/env bash
# The reference campaign in one call on a GPU machine (the `device` tool, or any GPU node):
# device facts, the suite, NCCL world size 1, host-device bandwidth and the telemetry overhead,
# all into one SQLite file exported as JSON Lines under $OUT.
#
# The device image lacks SQLAlchemy (and psycopg): carry wheels in .whl/ (see README,
# "Reference runs"); they are installed to /tmp/site without touching the image's packages.
set -uo pipefail
OUT=${OUT:-$PWD/out}
SUITE=${SUITE:-standard}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DB="sqlite:///$OUT/results.db"
cb() { python3 -m cli "$@"; }

nvidia-smi -q > "$OUT/nvidia-smi.txt" 2>&1
cb info --json > "$OUT/info.json"
cb run --suite "$SUITE" --db "$DB" ${FILTER:+--filter "$FILTER"} 2>&1 | tee "$OUT/run.log"
cb allreduce --backend nccl --nproc-per-node 1 -b 1M -e 1G -f 4 --db "$DB" 2>&1 \
  | tee "$OUT/allreduce.log"
python3 -m bench.telemetry_overhead > "$OUT/telemetry_overhead.json"
cb export --format jsonl --out "$OUT/results.jsonl" --db "$DB"
