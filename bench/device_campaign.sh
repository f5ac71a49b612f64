#!/usr/bin/env bash
# The one-GPU-window campaign in one call on a GPU node without network (about 8 minutes on an
# H200; `python -m bench.campaign estimate` says how it adds up):
#   facts (nvidia-smi, `info`), the `campaign` suite family by family (bandwidth, gemm,
#   attention, decode attention, each time-boxed with `run --budget`), the telemetry overhead,
#   NCCL all-reduce at world size 1.
# Every stage runs under its own `timeout` into the same SQLite file under $OUT (rows are stored
# as they complete), so a stage that crashes or hangs loses none of the others' rows. Whatever
# happens, the EXIT trap exports the table as JSON Lines ($OUT/results.jsonl) and prints a
# summary last. A total wall-time cap (CAMPAIGN_CAP_S) bounds the whole call.
#
# The GPU image lacks SQLAlchemy: carry wheels in .whl/ (README, "Reference runs"); they are
# installed with --no-deps into $CAMPAIGN_SITE (default /tmp/site), never into the image.
#
# Environment (defaults in brackets): OUT [$PWD/out], SUITE [campaign], TIMING [by device],
# CAMPAIGN_CAP_S [480], CAMPAIGN_<STAGE>_S (a stage's own limit, e.g. CAMPAIGN_GEMM_S),
# ALLREDUCE_BACKEND [nccl], ALLREDUCE_MAX [1G], PYTHON [python3], CAMPAIGN_WHEELS [.whl],
# CAMPAIGN_SITE [/tmp/site], COLOSSUS_GIT_SHA (the commit, where the copied tree has no git:
# every row's software.git_sha). The CPU rehearsal (tests/test_campaign_script.py) runs this same
# script with SUITE=quick TIMING=smoke ALLREDUCE_BACKEND=gloo and a small cap.
set -uo pipefail

OUT=${OUT:-$PWD/out}
SUITE=${SUITE:-campaign}
TIMING=${TIMING:-}
CAP_S=${CAMPAIGN_CAP_S:-480}
PY=${PYTHON:-python3}
WHEELS=${CAMPAIGN_WHEELS:-.whl}
SITE=${CAMPAIGN_SITE:-/tmp/site}
ALLREDUCE_BACKEND=${ALLREDUCE_BACKEND:-nccl}
ALLREDUCE_MAX=${ALLREDUCE_MAX:-1G}
EXPORT_RESERVE_S=20  # kept back from every stage for the final export and summary
RUN_MARGIN_S=15      # a run stage's process start and final table, outside its --budget

mkdir -p "$OUT" || exit 2
STAGES="$OUT/stages.tsv"
: > "$STAGES"
DB="sqlite:///$OUT/results.db"
START=$SECONDS

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "cannot install the wheels in $WHEELS" >&2; exit 2; }
  export PYTHONPATH="$SITE"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

cb() { "$PY" -m cli "$@"; }

left_s() { echo $((CAP_S - (SECONDS - START) - EXPORT_RESERVE_S)); }

# stage NAME DEFAULT_LIMIT_S COMMAND...: run COMMAND under min(its limit, what the cap leaves),
# its output in $OUT/NAME.log; record NAME, exit status and seconds. Never stops the script.
stage() {
  local name=$1 default=$2 var limit left rc t0
  shift 2
  var="CAMPAIGN_${name^^}_S"
  limit=${!var:-$default}
  left=$(left_s)
  ((left < limit)) && limit=$left
  if ((limit <= 0)); then
    printf '%s\tcap\t0\n' "$name" >> "$STAGES"
    echo "== $name: not run, the ${CAP_S}s cap is spent"
    return 0
  fi
  echo "== $name (limit ${limit}s)"
  t0=$SECONDS
  CURRENT=$name
  # in the background and waited for, so that a signal to this script is handled at once
  STAGE_LIMIT_S=$limit timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  rc=$?
  CHILD=
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STAGES"
  ((rc == 0)) || FAILED=1
  tail -n 3 "$OUT/$name.log"
  return 0
}

# run_family NAME FILTER: the suite's cases matching FILTER, time-boxed inside the stage limit.
run_family() {
  local filter=$1 budget=$((STAGE_LIMIT_S - RUN_MARGIN_S))
  ((budget < 1)) && budget=1
  cb run --suite "$SUITE" --filter "$filter" --db "$DB" --budget "$budget" \
    ${TIMING:+--timing "$TIMING"}
}

facts() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -q > "$OUT/nvidia-smi.txt" 2>&1
  fi
  cb info --json > "$OUT/info.json"
}

overhead() { "$PY" -m bench.telemetry_overhead > "$OUT/telemetry_overhead.json"; }

# INT/TERM: stop the running stage (timeout passes the signal on; its stored rows stay), note
# it, and exit; the EXIT trap then exports and summarises.
interrupted() {
  if [[ -n ${CHILD:-} ]]; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
    printf '%s\t130\t-\n' "$CURRENT" >> "$STAGES"
  fi
  exit 130
}

# Exit status: 130 interrupted, 1 some stage failed or timed out, 0 every stage ran clean.
finish() {
  local status=$?
  trap - EXIT INT TERM
  timeout 60 "$PY" -m cli export --format jsonl --out "$OUT/results.jsonl" --db "$DB" \
    > "$OUT/export.log" 2>&1 || echo "export failed: see $OUT/export.log" >&2
  echo
  echo "== campaign summary ($((SECONDS - START))s of the ${CAP_S}s cap)"
  "$PY" -m bench.campaign summary "$OUT"
  ((status == 0 && FAILED)) && status=1
  exit "$status"
}
trap finish EXIT
trap interrupted INT TERM
CHILD=
CURRENT=
FAILED=0

export -f cb run_family facts overhead
export PY DB SUITE TIMING OUT RUN_MARGIN_S

stage facts 30 bash -c facts
stage bandwidth 60 bash -c 'run_family "membw/*,hostdevice/*"'
stage gemm 150 bash -c 'run_family "gemm/*"'
stage attention 240 bash -c 'run_family "attention/*"'
stage decode 60 bash -c 'run_family "decode_attention/*"'
stage telemetry_overhead 60 bash -c overhead
stage allreduce 90 "$PY" -m cli allreduce --backend "$ALLREDUCE_BACKEND" --nproc-per-node 1 \
  -b 8 -e "$ALLREDUCE_MAX" -f 4 --db "$DB"
