#!/usr/bin/env bash
# Start a single-node Slurm (munge + slurmctld + slurmd) without systemd, for `pytest -m slurm`.
#
#   .ci/slurm-up.sh            installs slurm-wlm + munge (Debian) if missing, writes
#                              $DGBENCH_SLURM_DIR/slurm.conf, starts the daemons, waits for an
#                              idle node; records the pids it started in $DGBENCH_SLURM_DIR/pids
#   export SLURM_CONF=$DGBENCH_SLURM_DIR/slurm.conf   (clients and submitit read it)
#   .ci/slurm-down.sh          stops what this script started, by pid
#
# DGBENCH_SLURM_DIR defaults to /tmp/dgbench-slurm.
set -euo pipefail

D=${DGBENCH_SLURM_DIR:-/tmp/dgbench-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
die() {
  echo "slurm-up: FAILED: $*" >&2
  for f in "$D"/logs/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
  # stop whatever this attempt started; keep $D (logs) for inspection
  [ -f "$D/pids" ] && DGBENCH_SLURM_KEEP=1 "$HERE/slurm-down.sh" >&2 || true
  exit 1
}
alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }

# An earlier cluster from this script is replaced, never doubled.
if [ -f "$D/pids" ]; then "$HERE/slurm-down.sh" || true; fi

# 1. packages ------------------------------------------------------------------------------
if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/slurmstepd ] \
   || [ ! -x /usr/sbin/munged ] || ! command -v sbatch >/dev/null; then
  [ "$(id -u)" = 0 ] || die "Slurm is not installed and this is not root (apt-get needs root)"
  echo "slurm-up: installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || die "apt-get install slurmctld slurmd slurm-client munge"
fi
[ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (munge post-install did not run)"

mkdir -p "$D"/state "$D"/spool "$D"/logs
: > "$D/pids"

# 2. munge ---------------------------------------------------------------------------------
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "slurm-up: reusing the running munged"          # not ours: slurm-down leaves it alone
else
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  [ -s /run/munge/munged.pid ] || die "munged wrote no pid file"
  echo "munged $(cat /run/munge/munged.pid)" >> "$D/pids"
  munge -n | unmunge | grep -q 'STATUS: *Success' || die "munge -n | unmunge does not succeed"
fi

# 3. config --------------------------------------------------------------------------------
H=$(hostname -s)
CPUS=$(nproc)
MEM=$(free -m | awk '/^Mem:/ {print int($2 * 0.8)}')
cat > "$D/slurm.conf" <<CONF
ClusterName=dgbench
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/logs/slurmctld.log
SlurmdLogFile=$D/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
SlurmctldParameters=preempt_send_user_signal
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$D/slurm.conf
# Another controller on this machine would answer our clients and fake a healthy cluster.
if timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then
  die "another slurmctld already answers on this machine (ports 6817/6818); stop it first"
fi

# 4. daemons (they daemonise and write their pid files) -------------------------------------
/usr/sbin/slurmctld -f "$SLURM_CONF" </dev/null >"$D/logs/slurmctld.out" 2>&1 || die "slurmctld did not start"
for _ in $(seq 50); do [ -s "$D/slurmctld.pid" ] && break; sleep 0.1; done
[ -s "$D/slurmctld.pid" ] || die "slurmctld wrote no pid file"
echo "slurmctld $(cat "$D/slurmctld.pid")" >> "$D/pids"

/usr/sbin/slurmd -f "$SLURM_CONF" -N "$H" </dev/null >"$D/logs/slurmd.out" 2>&1 || die "slurmd did not start"
for _ in $(seq 50); do [ -s "$D/slurmd.pid" ] && break; sleep 0.1; done
[ -s "$D/slurmd.pid" ] || die "slurmd wrote no pid file"
echo "slurmd $(cat "$D/slurmd.pid")" >> "$D/pids"

# 5. ready: the node must be idle ---------------------------------------------------------
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || die "node not idle after 30 s (sinfo: '${state}')"
while read -r name pid; do
  alive "$pid" || die "$name (pid $pid) is not running"
done < "$D/pids"
echo "slurm-up: node $H idle ($CPUS CPUs, ${MEM} MB); export SLURM_CONF=$SLURM_CONF"
