#!/usr/bin/env bash
# Stop the cluster that scripts/slurm/up.sh started, every daemon by its pid.
S=$(realpath -m "${SLURM_DIR:-build/slurm}")
export SLURM_CONF="$S/slurm.conf"
[ -f "$SLURM_CONF" ] && scancel --user=root >/dev/null 2>&1
stop() {  # stop PIDFILE: TERM, then wait up to 10 s for it to go
  [ -s "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}
for f in slurmd slurmctld slurmdbd; do stop "$S/$f.pid"; done
stop /run/mysqld/mysqld.pid
stop /run/munge/munged.pid
echo "slurm-down: stopped"
