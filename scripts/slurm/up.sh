#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (slurmctld, slurmd, and slurmdbd on MariaDB so
# that sacct works), as root, without systemd or cgroups. For trying launcher=slurm on a laptop
# or a CI machine; a real cluster needs none of this.
#
#   sudo scripts/slurm/up.sh            # or: make slurm-up
#   export SLURM_CONF=$PWD/build/slurm/slurm.conf
#   sinfo; deqexp train -m launcher=slurm ...
#   sudo scripts/slurm/down.sh          # or: make slurm-down
#
# State lives under $SLURM_DIR (default build/slurm, git-ignored). Each start begins with an
# empty job state and accounting database, so job ids never meet stale accounting rows.
set -euo pipefail
S=$(realpath -m "${SLURM_DIR:-build/slurm}")
export SLURM_CONF="$S/slurm.conf"
say() { echo "slurm-up: $*"; }

if [ "$(id -u)" != 0 ]; then
  say "error: must run as root (it starts munged, mariadbd and slurmd); try sudo $0"; exit 2
fi
if [ -s "$S/slurmctld.pid" ] && kill -0 "$(cat "$S/slurmctld.pid")" 2>/dev/null \
   && sinfo -h >/dev/null 2>&1; then
  say "already running ($SLURM_CONF)"; sinfo; exit 0
fi

if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  say "error: a slurmctld or slurmd from another folder is running (pids $(pgrep -d, -x 'slurmctld|slurmd')):"
  say "stop it with that folder's scripts/slurm/down.sh (or SLURM_DIR=... $0), then run this again"; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
   || ! command -v mariadbd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm, munge and mariadb (Debian packages, about a minute)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi

rm -rf "$S/state" "$S/spool"
mkdir -p "$S/state" "$S/spool" "$S/log"
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$S/slurm.conf" <<CONF
ClusterName=deqexp
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its credential expired: 10 s, not the default 120
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# requests no node can satisfy fail at submission instead of pending forever
EnforcePartLimits=ALL
ReturnToService=2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
MinJobAge=600
# time between SIGTERM and SIGKILL (scancel, end of the time limit), as on most clusters
KillWait=30
InactiveLimit=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat > "$S/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=deqexp_slurm_acct
PidFile=$S/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
CONF
chmod 600 "$S/slurmdbd.conf"   # slurmdbd refuses a readable password file

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local n=$(( $1 * 5 )) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "error: $what did not come up; see $S/log"; exit 1
}

install -d -o munge -g munge -m 755 /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
install -d -o mysql -g mysql /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >"$S/log/mariadb.log" 2>&1 &
  wait_for 30 mariadb mariadb-admin ping
fi
mariadb -e "DROP DATABASE IF EXISTS deqexp_slurm_acct;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON deqexp_slurm_acct.* TO 'slurm'@'localhost';"
slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i -Q add cluster deqexp >/dev/null 2>&1 || true
slurmctld
slurmd
wait_for 60 "the node (state idle)" bash -c 'sinfo -h -o %T | grep -qx idle'
say "up: export SLURM_CONF=$SLURM_CONF"
sinfo
