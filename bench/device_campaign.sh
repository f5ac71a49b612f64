#!/usr/bin/env bash
# The one-GPU-window campaign in one call on a GPU node without network (about 8 minutes on an
# H200; `python -m bench.campaign estimate` says how it adds up):
#   facts (nvidia-smi, `info`), the bandwidth and GEMM families of the `campaign` suite, the
#   telemetry overhead, NCCL all-reduce at world size 1, then decode attention and attention
#   (each family time-boxed with `run --budget`; attention last, as it time-boxes itself and
#   stores what does not fit as skipped, so the cheap stages are never the ones dropped).
# Every stage runs under its own `timeout` into the same SQLite file under $OUT (rows are stored
# as they complete), so a stage that crashes or hangs loses none of the others' rows. After
# every stage, and again by the EXIT trap, the table is exported as JSON Lines
# ($OUT/results.jsonl, written whole or not at all), so even a SIGKILL keeps what finished; the
# trap prints a summary last. Rows the database refuses are kept under
# $OUT/colossus-bench/unstored-*.jsonl (XDG_DATA_HOME is $OUT), so they come back with $OUT.
#
# Time: a total cap (CAMPAIGN_CAP_S) bounds the stages, which end by the cap less
# EXPORT_RESERVE_S plus a stage's kill grace (KILL_AFTER_S); then come at most two exports
# (EXPORT_RESERVE_S + 2 s each) and the summary (SUMMARY_S): the worst case of the whole call is
# 480 - 20 + 10 + 2 x 22 + 10 = 524 s by default, so a launcher's 600 s limit (give the call
# all of it) is never what ends it. Keep CAMPAIGN_CAP_S <= 550 under such a limit.
#
# The GPU image lacks SQLAlchemy: bring its pure-Python wheel (and typing_extensions') in .whl/
# (docs/CAMPAIGN.md says how to build it); they are installed with --no-deps into
# $CAMPAIGN_SITE (default /tmp/site), never into the image, or, where the image has no pip,
# put on PYTHONPATH as they are (a pure-Python wheel is an importable zip). Without an
# importable SQLAlchemy (or typer, rich, pyarrow, numpy, torch) the script stops at once with
# one line and exit status 2.
#
# Environment (defaults in brackets): OUT [$PWD/out], SUITE [campaign], TIMING [by device],
# CAMPAIGN_CAP_S [480], CAMPAIGN_<STAGE>_S (a stage's own limit, e.g. CAMPAIGN_GEMM_S),
# ALLREDUCE_BACKEND [nccl], ALLREDUCE_MAX [1G], PYTHON [python3], CAMPAIGN_WHEELS [.whl],
# CAMPAIGN_SITE [/tmp/site], COLOSSUS_GIT_SHA (the commit, where the copied tree has no git:
# every row's software.git_sha). The CPU rehearsal (tests/test_campaign_script.py) runs this same
# script with SUITE=quick TIMING=smoke ALLREDUCE_BACKEND=gloo and a small cap.
# Exit status: 0 every stage ran clean, 1 some stage failed or timed out, 2 bad set-up (no
# SQLAlchemy or another module, unusable wheels or $OUT), 130 interrupted.
set -uo pipefail

START=$SECONDS
OUT=${OUT:-$PWD/out}
SUITE=${SUITE:-campaign}
TIMING=${TIMING:-}
CAP_S=${CAMPAIGN_CAP_S:-480}
PY=${PYTHON:-python3}
WHEELS=${CAMPAIGN_WHEELS:-.whl}
SITE=${CAMPAIGN_SITE:-/tmp/site}
ALLREDUCE_BACKEND=${ALLREDUCE_BACKEND:-nccl}
ALLREDUCE_MAX=${ALLREDUCE_MAX:-1G}
EXPORT_RESERVE_S=20  # kept back from the cap for the final export; also each export's timeout
KILL_AFTER_S=10      # a stage that ignores its timeout's SIGTERM is killed this much later
SUMMARY_S=10         # the summary's own timeout
RUN_MARGIN_S=${CAMPAIGN_RUN_MARGIN_S:-15}  # Python, typer and the final table: outside --budget

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)  # absolute: the stages and the store see the same folder

# SQLAlchemy (the store) from the wheels in .whl/: pip into $SITE, else the wheels themselves.
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if ((${#wheels[@]})); then
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}" || { echo "cannot install the wheels in $WHEELS" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else  # no pip in the image: pure-Python wheels are zips Python imports from directly
    zips=
    for w in "${wheels[@]}"; do
      [[ $w == *-none-any.whl ]] || echo "note: $w is not pure Python: its compiled parts" \
        "cannot load from a zip (SQLAlchemy falls back to its pure-Python code)"
      zips+="$(realpath "$w"):"
    done
    echo "no pip for $PY: the wheels in $WHEELS go on PYTHONPATH as they are"
    export PYTHONPATH="${zips%:}${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! where=$("$PY" -c 'import sqlalchemy; print(sqlalchemy.__version__, sqlalchemy.__file__)' \
    2>/dev/null); then
  echo "error: $PY cannot import sqlalchemy: bring its pure-Python wheel (and" \
       "typing_extensions') in $WHEELS/ (docs/CAMPAIGN.md)" >&2
  exit 2
fi
echo "== sqlalchemy $where"
# the rest of what the command line imports (typer, rich, pyarrow, numpy) and torch: the image
# should have them; if not, one line naming the module instead of a traceback per stage
if ! why=$("$PY" -c 'import importlib.util as u, sys
try:
    import cli  # noqa: F401
except ModuleNotFoundError as e:
    sys.exit(f"no module {e.name or e}")
except Exception as e:  # a name that will not import, an ABI mismatch: said as it is
    sys.exit(f"{type(e).__name__}: " + (str(e).splitlines() or [""])[0])
if u.find_spec("torch") is None:
    sys.exit("no module torch")' 2>&1); then
  echo "error: $PY cannot start colossus-bench: ${why##*$'\n'} (docs/CAMPAIGN.md)" >&2
  exit 2
fi
# Rows the database refuses go to $XDG_DATA_HOME/colossus-bench/unstored-*.jsonl
# (bench/spool.py): under $OUT they come back with it.
export XDG_DATA_HOME="$OUT"

STAGES="$OUT/stages.tsv"
: > "$STAGES"
DB="sqlite:///$OUT/results.db"

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
  STAGE_LIMIT_S=$limit timeout --kill-after="$KILL_AFTER_S" "$limit" "$@" > "$OUT/$name.log" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  rc=$?
  CHILD=
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STAGES"
  ((rc == 0)) || FAILED=1
  tail -n 3 "$OUT/$name.log"
  export_rows  # what finished so far survives even a SIGKILL of this script
  return 0
}

# The table as JSON Lines, written whole or not at all (cli export writes a temporary file and
# renames it), within EXPORT_RESERVE_S.
export_rows() {
  timeout --kill-after=2 "$EXPORT_RESERVE_S" "$PY" -m cli export --format jsonl \
    --out "$OUT/results.jsonl" --db "$DB" > "$OUT/export.log" 2>&1
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
  export_rows || echo "export failed: see $OUT/export.log" >&2
  echo
  echo "== campaign summary ($((SECONDS - START))s of the ${CAP_S}s cap)"
  timeout "$SUMMARY_S" "$PY" -m bench.campaign summary "$OUT"
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

# Limits (bench/campaign.py EXTRA_STAGES_S mirrors the non-suite ones): the stages before
# attention add to 375 s, so attention keeps about 85 s of the 460 s the cap leaves (less the
# between-stage exports, seconds each) even when every earlier stage runs to its limit.
stage facts 30 bash -c facts
stage bandwidth 60 bash -c 'run_family "membw/*,hostdevice/*"'
stage gemm 130 bash -c 'run_family "gemm/*"'
stage telemetry_overhead 45 bash -c overhead
stage allreduce 60 "$PY" -m cli allreduce --backend "$ALLREDUCE_BACKEND" --nproc-per-node 1 \
  -b 8 -e "$ALLREDUCE_MAX" -f 4 --db "$DB"
stage decode 50 bash -c 'run_family "decode_attention/*"'
stage attention 240 bash -c 'run_family "attention/*"'
