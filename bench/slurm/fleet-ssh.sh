#!/bin/bash
# Fleet run without Slurm: ssh to every host of a hostfile and run fleet.sbatch's node part
# there (each GPU runs the suite into a node-local SQLite file, then uploads it).
#
#   export COLOSSUS_BENCH_UPLOAD_URL=postgresql://bench@dbhost:5432/colossus
#   bench/slurm/fleet-ssh.sh hosts.txt            # one host per line; '#' starts a comment
#
# Hosts run in parallel, at most $COLOSSUS_FLEET_PARALLEL at a time (default 32). Needs
# non-interactive ssh (keys; BatchMode, so a host asking for a password fails instead of
# hanging) and colossus-bench on each host (or COLOSSUS_BENCH=/path/to/colossus-bench).
# Passwords: ~/.pgpass (mode 600) on each host; they are not forwarded.
# The node script and the settings travel on ssh's stdin, not its command line (which `ps`
# shows on both ends). The COLOSSUS_FLEET_* settings of fleet.sbatch apply; logs go to
# $COLOSSUS_FLEET_LOG_DIR (default ./colossus-fleet-<UTC time>). A host that fails (cannot be
# reached, no GPU, a failed run or upload) is named in the summary and keeps its local files.
# Exit codes as fleet.sbatch's: 0 every host ok, 1 a host failed (ssh could not connect, a
# crash, a failed run or upload), 2 bad input (usage, no URL, every failure a bad input), 130
# interrupted.

set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 HOSTFILE   (one host per line; COLOSSUS_BENCH_UPLOAD_URL must be set)" >&2
    exit 2
fi
if [ ! -r "$1" ]; then
    echo "error: no readable host file at $1 (one host per line)" >&2
    exit 2
fi
if [ -z "${COLOSSUS_BENCH_UPLOAD_URL:-}" ]; then
    echo "error: set COLOSSUS_BENCH_UPLOAD_URL to the shared database URL" >&2
    exit 2
fi
hostfile=$1
node_script="$(dirname "$0")/fleet.sbatch"
# shellcheck source=/dev/null  # (its batch part never runs: --functions returns first)
source "$node_script" --functions  # worst: the exit-code rule of the node part
interrupted=0
trap 'interrupted=1' INT TERM
parallel=${COLOSSUS_FLEET_PARALLEL:-32}
ssh_cmd=${COLOSSUS_FLEET_SSH:-ssh}  # e.g. "ssh -i ~/.ssh/fleet" or a wrapper
export COLOSSUS_FLEET_TAG=${COLOSSUS_FLEET_TAG:-$(date -u +%Y%m%dT%H%M%S)}
logdir=${COLOSSUS_FLEET_LOG_DIR:-$PWD/colossus-fleet-$COLOSSUS_FLEET_TAG}
mkdir -p "$logdir"

# The settings the node part reads, as shell assignments for the remote bash.
settings() {
    local v
    for v in COLOSSUS_BENCH_UPLOAD_URL COLOSSUS_FLEET_SUITE COLOSSUS_FLEET_RUN_ARGS \
             COLOSSUS_FLEET_LOCAL_DIR COLOSSUS_FLEET_SERIAL COLOSSUS_FLEET_CPU \
             COLOSSUS_FLEET_TAG COLOSSUS_BENCH \
             COLOSSUS_BENCH_UPLOAD_TRIES COLOSSUS_BENCH_UPLOAD_BACKOFF; do
        if [ -n "${!v:-}" ]; then
            printf 'export %s=%q\n' "$v" "${!v}"
        fi
    done
}

run_host() {
    local host=$1
    { settings; cat "$node_script"; } |
        $ssh_cmd -o BatchMode=yes -o ConnectTimeout=15 "$host" bash -s -- --node \
            > "$logdir/$host.log" 2>&1
    echo $? > "$logdir/$host.rc"
}

hosts=$(sed -e 's/#.*//' "$hostfile" | awk 'NF { print $1 }')
if [ -z "$hosts" ]; then
    echo "no hosts in $hostfile" >&2
    exit 2
fi
for host in $hosts; do
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do
        wait -n
    done
    run_host "$host" &
done
wait

ok=0
code=0
failed=()
for host in $hosts; do
    rc=$(cat "$logdir/$host.rc" 2>/dev/null || echo 1)
    if [ "$rc" = 0 ]; then
        ok=$((ok + 1))
        continue
    elif [ "$rc" = 255 ]; then
        failed+=("$host: FAILED: ssh could not connect ($(tail -n 1 "$logdir/$host.log"))")
        rc=1
    else
        last=$(grep -E "^[^ ]+: (ok|FAILED)" "$logdir/$host.log" | tail -n 1)
        failed+=("${last:-$host: FAILED: exit $rc, see $logdir/$host.log} [exit $rc]")
    fi
    code=$(worst "$code" "$rc")
done
echo "fleet run $COLOSSUS_FLEET_TAG: $ok of $(echo "$hosts" | wc -w) hosts ok (logs: $logdir)"
for line in "${failed[@]}"; do
    echo "  $line"
done
if [ "$interrupted" = 1 ]; then
    exit 130
fi
exit "$code"
