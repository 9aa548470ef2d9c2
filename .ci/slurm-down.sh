#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started, by the pids it recorded (never by process name).
# Jobs still queued or running are cancelled first; their leftover processes (which ignore
# SIGTERM under submitit) are killed by the pid each dgbench run writes into its lock file only
# when the caller passes results folders: .ci/slurm-down.sh [RESULTS_DIR ...]
set -uo pipefail

D=${DGBENCH_SLURM_DIR:-/tmp/dgbench-slurm}
[ -f "$D/pids" ] || { echo "slurm-down: nothing recorded in $D/pids"; exit 0; }
export SLURM_CONF=$D/slurm.conf

alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
stop() {  # name pid
  local pid=$2
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  echo "slurm-down: $1 ($pid) ignored SIGTERM; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# Cancel what is left on this private cluster and give Slurm KillWait (5 s) to end it.
if [ -f "$SLURM_CONF" ] && squeue -h -o %i >/dev/null 2>&1; then
  if [ -n "$(squeue -h -o %i)" ]; then
    scancel --full "$(squeue -h -o %i | tr '\n' ',' | sed 's/,$//')" 2>/dev/null || true
    for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for results in "$@"; do
  for lock in "$results"/runs/*/lock; do
    [ -f "$lock" ] || continue
    pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$lock")
    [ -n "$pid" ] && alive "$pid" && { echo "slurm-down: SIGKILL leftover run process $pid ($lock)"; kill -KILL "$pid"; }
  done
done

# slurmd, then slurmctld, then munged: the reverse of the start order.
for name in slurmd slurmctld munged; do
  pid=$(awk -v n="$name" '$1 == n {print $2}' "$D/pids")
  [ -n "$pid" ] && stop "$name" "$pid"
done
rm -f "$D/pids"
if [ "${DGBENCH_SLURM_KEEP:-0}" = 1 ]; then
  echo "slurm-down: stopped; logs kept in $D"
else
  rm -rf "$D"
  echo "slurm-down: stopped; removed $D"
fi
