#!/bin/bash
# A one-node SLURM on this machine, to run scripts/slurm_array.sbatch for real (RESULTS.md,
# "SLURM job arrays on a real SLURM"). Debian 12's slurm-wlm 22.05 and munge, no systemd, no
# accounting: the daemons run as root, started by hand; finished jobs are recorded by
# jobcomp/filetxt in $SLURM_LOCAL/jobcomp.log (sacct needs accounting storage, which this has not).
#
#   bash benchmarks/slurm_local.sh install   # apt-get the packages (root)
#   bash benchmarks/slurm_local.sh up        # write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   bash benchmarks/slurm_local.sh status    # sinfo and squeue
#   bash benchmarks/slurm_local.sh down      # stop the daemons started here, remove the config
#
# SLURM_LOCAL (default /tmp/slurm-local) holds the state, logs and pid files. The node is this
# host (`hostname -s`) with all its CPUs and RealMemory 1 GiB under what `slurmd -C` reports.
# `up` refuses to overwrite a slurm.conf it did not write.
set -euo pipefail
state=${SLURM_LOCAL:-/tmp/slurm-local}
conf=/etc/slurm/slurm.conf
marker="# written by dreamtext benchmarks/slurm_local.sh"

install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc --all)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem - 1024))
    if [[ -e $conf ]] && ! grep -qF "$marker" "$conf"; then
        echo "slurm_local.sh: $conf exists and was not written here; move it away first" >&2
        exit 2
    fi
    mkdir -p "$state/ctld" "$state/slurmd" /etc/slurm
    cat > "$conf" <<EOF
$marker
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.log
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or reaches its limit.
KillWait=30
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    write_conf
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [[ -s /etc/munge/munge.key ]] || mungekey --create
    chown -R root: /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
        munged --force --pid-file="$state/munged.pid"
    fi
    slurmctld -f "$conf"
    slurmd -f "$conf"
    for _ in $(seq 30); do
        if sinfo -h -o %T 2> /dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "slurm_local.sh: the node did not come up; see $state/slurmctld.log and slurmd.log" >&2
    exit 1
}

stop_pid() {  # PIDFILE: end the daemon whose id it holds, if it is running
    [[ -s $1 ]] || return 0
    local pid
    pid=$(cat "$1")
    if kill -0 "$pid" 2> /dev/null; then
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
    fi
    rm -f "$1"
}

down() {
    stop_pid "$state/slurmd.pid"
    stop_pid "$state/slurmctld.pid"
    stop_pid "$state/munged.pid"
    if [[ -e $conf ]] && grep -qF "$marker" "$conf"; then
        rm -f "$conf"
    fi
    echo "stopped; state and logs left in $state"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    status) sinfo && squeue ;;
    down) down ;;
    *)
        echo "usage: bash benchmarks/slurm_local.sh install|up|status|down" >&2
        exit 2
        ;;
esac
