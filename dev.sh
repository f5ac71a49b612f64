#!/bin/sh
# The README's two commands, on a machine with only Python, pip and the system package manager:
#
#   ./dev.sh run          create what is missing (the virtual environment .venv, the CPU build
#                         of torch where there is no GPU, Triton, the project), then run the
#                         quick suite into the default results table
#   ./dev.sh test [ARGS]  the same with the test extras and the tests' servers (PostgreSQL,
#                         Chromium, Slurm + munge, shellcheck: apt-get where the machine allows,
#                         else skipped with the reason), then ruff and `python -m pytest -q ARGS`
#   ./dev.sh setup        only the set-up of `run`;  ./dev.sh setup-test  only that of `test`
#
# Idempotent: a second call skips what exists. On a GPU node (nvidia-smi works, or the system
# Python's torch sees CUDA) the installed torch and Triton are kept: the environment sees the
# system's packages and nothing replaces them.
# Settings: PYTHON (default python3), VENV (default .venv), DEV_NO_APT=1 (never use apt-get).
# Exit status: that of the suite run or of pytest (5: pytest collected no tests); 2 when the
# set-up itself cannot be done.
set -eu
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
VPY=$VENV/bin/python
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
TORCH_FALLBACK=torch==2.13.0
# Triton's interpreter in 3.6 breaks with numpy >= 2.4 in loops with runtime bounds.
TRITON_CPU=triton==3.8.0
APT_UPDATED=0

say() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

GPU_NODE=
gpu_node() {  # asked once: importing torch takes seconds
  if [ -z "$GPU_NODE" ]; then
    GPU_NODE=no
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      GPU_NODE=yes
    elif "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
         >/dev/null 2>&1; then
      GPU_NODE=yes
    fi
  fi
  [ "$GPU_NODE" = yes ]
}

# APT_WHY: why apt-get cannot be used here (empty when it can); SUDO: how to run it.
SUDO=
APT_WHY=
check_apt() {
  APT_WHY=
  if [ "${DEV_NO_APT:-0}" = 1 ]; then
    APT_WHY="DEV_NO_APT=1"
  elif ! command -v apt-get >/dev/null 2>&1; then
    APT_WHY="no apt-get on this machine"
  elif [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
      SUDO=sudo
    else
      APT_WHY="not root and no password-less sudo"
    fi
  fi
}

apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    $SUDO apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying anyway"
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null 2>&1
}

ensure_venv() {
  if [ -x "$VPY" ]; then
    say "$VENV exists"
    return
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON on PATH (set PYTHON=...)"
  say "creating $VENV"
  if make_venv; then return; fi
  rm -rf "$VENV"
  check_apt
  [ -z "$APT_WHY" ] || die "$PYTHON cannot create a virtual environment and apt-get is out" \
                           "($APT_WHY)"
  ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  apt_install "python$ver-venv" || apt_install python3-venv || die "cannot install python3-venv"
  make_venv || die "$PYTHON -m venv $VENV failed"
}

make_venv() {
  if gpu_node; then  # see the system's torch and Triton, and keep them
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
}

pip() { "$VPY" -m pip --disable-pip-version-check "$@"; }
# Wheels brought to a machine without network (.whl/: README, reference runs) are used when
# present.
if [ -d .whl ]; then
  PIP_FIND_LINKS="$(pwd)/.whl${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"
  export PIP_FIND_LINKS
fi

ensure_torch() {
  if versions=$("$VPY" -c 'import torch, triton; print(torch.__version__, triton.__version__)' \
                2>/dev/null); then
    triton_version=${versions#* }
    say "torch ${versions%% *} and triton $triton_version present: kept"
    if [ "$triton_version" = 3.8.0 ] || gpu_node; then
      return
    fi
    say "no GPU: Triton 3.8.0 instead (the interpreter of older ones breaks with numpy >= 2.4)"
    pip install -q "$TRITON_CPU"
    return
  fi
  if gpu_node; then
    say "GPU node without torch and Triton: installing them from the default index"
    pip install -q torch triton
    return
  fi
  if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
    say "no GPU: installing the CPU build of torch"
    if ! pip install -q --timeout 10 --retries 0 torch --index-url "$TORCH_CPU_INDEX" \
         2>/dev/null; then
      say "the PyTorch CPU index is not reachable: $TORCH_FALLBACK from the default index"
      pip install -q "$TORCH_FALLBACK"
    fi
  fi
  pip install -q "$TRITON_CPU"
}

# The project, editable, with or without the test extras; a stamp in the environment records
# the pyproject.toml it was installed from, so an unchanged one is not installed again.
ensure_project() {
  extra=$1
  stamp=$VENV/.colossus-bench-$extra
  want="$(pwd) $(cksum <pyproject.toml)"
  for done in "$stamp" "$VENV/.colossus-bench-test"; do  # the test install covers run's
    if [ -f "$done" ] && [ "$(cat "$done")" = "$want" ]; then
      say "the project ($extra) is installed"
      return
    fi
  done
  spec=.
  [ "$extra" = run ] || spec=".[$extra]"
  say "installing the project ($spec)"
  if ! pip install -q -e "$spec"; then
    gpu_node || die "pip install -e $spec failed"
    # A GPU node may have no network: install the project alone and say what is missing.
    say "installing without dependencies (offline GPU node?)"
    pip install -q --no-deps --no-build-isolation -e . || die "pip install -e . failed"
    pip check >&2 || say "some dependencies are missing (above); the verbs that need them fail"
  fi
  echo "$want" >"$stamp"
}

# The tests' servers: each installed where apt-get may be used, else skipped with the reason.
ensure_servers() {
  check_apt
  need_server postgresql "PostgreSQL (tests/pg.py starts a private cluster)" has_postgres
  need_server chromium "Chromium (the report's browser tests)" has_chromium
  need_server "slurm-wlm munge" "Slurm + munge (the batch-script tests)" has_slurm
  need_server shellcheck "shellcheck (the shell-script lint)" has_shellcheck
}

need_server() {
  packages=$1 what=$2 check=$3
  if "$check"; then
    say "$what: present"
    return
  fi
  if [ -n "$APT_WHY" ]; then
    say "$what: not installed ($APT_WHY); its tests skip (or fail where CI=true needs them)"
    return
  fi
  say "$what: installing $packages with apt-get"
  # shellcheck disable=SC2086  # the package list is meant to split
  apt_install $packages || say "$what: apt-get could not install $packages; its tests skip"
}

has_postgres() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
has_chromium() { [ -x /usr/bin/chromium ]; }
has_slurm() {
  for prog in slurmctld slurmd munged; do
    command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || return 1
  done
}
has_shellcheck() { command -v shellcheck >/dev/null 2>&1; }

setup() {
  ensure_venv
  ensure_torch
  ensure_project "$1"
  if [ "$1" = test ]; then ensure_servers; fi
}

cmd=${1:-help}
[ $# -eq 0 ] || shift
case $cmd in
  setup) setup run ;;
  setup-test) setup test ;;
  run)
    setup run
    exec "$VENV/bin/colossus-bench" run --suite quick "$@"
    ;;
  test)
    setup test
    "$VENV/bin/ruff" check .
    if has_shellcheck; then shellcheck dev.sh .ci/run; fi
    rc=0
    "$VPY" -m pytest -q "$@" || rc=$?
    [ "$rc" -ne 5 ] || say "pytest collected no tests"
    exit "$rc"
    ;;
  help | -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) say "unknown command '$cmd'; use run, test, setup or setup-test"; exit 2 ;;
esac
