#!/bin/bash
# A one-node or two-node SLURM on this machine, to run the job script of `dreamtext batch
# --sbatch-script` (dreamtext/data/slurm_array.sbatch) for real (RESULTS.md, "SLURM job arrays
# on a real SLURM" and "SLURM arrays on two nodes"). Debian 12's
# slurm-wlm 22.05 and munge, no systemd, no accounting: the daemons run as root, started by hand;
# finished jobs are recorded by jobcomp/filetxt in $SLURM_LOCAL/jobcomp.log (sacct needs
# accounting storage, which this has not).
#
#   bash benchmarks/slurm_local.sh install   # apt-get the packages (root)
#   bash benchmarks/slurm_local.sh up        # write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   bash benchmarks/slurm_local.sh up2       # the same with two nodes, node1 and node2 (below)
#   bash benchmarks/slurm_local.sh status    # sinfo -N and squeue
#   bash benchmarks/slurm_local.sh kill NODE # node1 or node2 dies: SIGKILL to all its processes
#   bash benchmarks/slurm_local.sh cut NODE  # node1 or node2 loses its network, its processes live on
#   bash benchmarks/slurm_local.sh revive NODE  # the node boots again: network up, a new slurmd
#   bash benchmarks/slurm_local.sh down      # stop the daemons and namespaces started here
#
# SLURM_LOCAL (default /tmp/slurm-local) holds the state, logs and pid files. The node of `up` is
# this host (`hostname -s`) with all its CPUs and RealMemory 1 GiB under what `slurmd -C` reports.
# `up` and `up2` refuse to overwrite a slurm.conf they did not write. Both make two partitions of
# the same node(s): local, the default, and urgent, whose jobs preempt local's (PreemptMode=REQUEUE,
# GraceTime 0: `scontrol update partitionname=local gracetime=60` gives one; README, "A SLURM
# cluster", says what each did).
#
# `up2`: Debian's slurmd is built without --enable-multiple-slurmd, so each node is a slurmd in a
# network namespace of its own (`ip netns`: slurm-node1, slurm-node2) and a UTS namespace of its
# own (`unshare --uts`: its hostname is node1 or node2, which dreamtext records as `host`), pinned
# to one CPU (taskset: CPU 0, CPU 1), reached over a bridge (dtslurm0): slurmctld on this host at
# 10.10.0.1, node1 at 10.10.0.11, node2 at 10.10.0.12. Both see this machine's file system (the
# shared results folder, as NFS would be) and munged's socket in /run/munge. SlurmdTimeout is
# 30 s, so a dead node is DOWN within about a minute. `kill NODE` stands in for a node that dies
# (power, a kernel panic): every process of its namespace (slurmd, slurmstepd, the batch script,
# srun, dreamtext) gets SIGKILL. `cut NODE` for one whose network fails while it runs on: its
# processes live and, since the file system here does not go over that network, keep writing the
# results folder (on a cluster, NFS over the lost network would hang them instead).
set -euo pipefail
state=${SLURM_LOCAL:-/tmp/slurm-local}
conf=/etc/slurm/slurm.conf
marker="# written by dreamtext benchmarks/slurm_local.sh"
bridge=dtslurm0
subnet=10.10.0
nodes=(node1 node2)

need_slurm() {  # Slurm's and munge's commands, or exit 2 with the way to get them
    local tool
    for tool in sinfo squeue slurmctld slurmd munged; do
        if ! command -v "$tool" > /dev/null; then
            echo "slurm_local.sh: no $tool here (Slurm's and munge's commands): run 'bash benchmarks/slurm_local.sh install' first (as root)" >&2
            exit 2
        fi
    done
}

install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

write_conf() {  # [two]: the two nodes of up2, else this host alone
    local host cpus mem ctld node_lines partition slurmd_files
    host=$(hostname -s)
    cpus=$(nproc --all)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem - 1024))
    if [[ -e $conf ]] && ! grep -qF "$marker" "$conf"; then
        echo "slurm_local.sh: $conf exists and was not written here; move it away first" >&2
        exit 2
    fi
    if [[ ${1:-} == two ]]; then
        ctld="$host($subnet.1)"
        node_lines="NodeName=node1 NodeAddr=$subnet.11 CPUs=1 RealMemory=$((mem / 2)) State=UNKNOWN
NodeName=node2 NodeAddr=$subnet.12 CPUs=1 RealMemory=$((mem / 2)) State=UNKNOWN"
        partition=node1,node2
        # %n, the node's name: each slurmd has files of its own
        slurmd_files="SlurmdSpoolDir=$state/slurmd.%n
SlurmdPidFile=$state/slurmd.%n.pid
SlurmdLogFile=$state/slurmd.%n.log
# A node that stops answering is DOWN after this many seconds (default 300).
SlurmdTimeout=30"
    else
        ctld=$host
        node_lines="NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN"
        partition=$host
        slurmd_files="SlurmdSpoolDir=$state/slurmd
SlurmdPidFile=$state/slurmd.pid
SlurmdLogFile=$state/slurmd.log"
    fi
    mkdir -p "$state/ctld" /etc/slurm
    cat > "$conf" <<EOF
$marker
ClusterName=local
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/slurmctld.pid
SlurmctldLogFile=$state/slurmctld.log
$slurmd_files
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
# Preemption: a job of "urgent" (PriorityTier 2) that needs the CPUs a job of "local" holds
# requeues that job, after "local"'s GraceTime.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$node_lines
PartitionName=local Nodes=$partition Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$partition MaxTime=INFINITE State=UP PriorityTier=2
EOF
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [[ -s /etc/munge/munge.key ]] || mungekey --create
    chown -R root: /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
        munged --force --pid-file="$state/munged.pid"
    fi
}

wait_for_nodes() {  # COUNT: wait until that many nodes are up
    for _ in $(seq 30); do
        if (($(sinfo -h -N -o %T 2> /dev/null | grep -cE '^(idle|mixed|allocated)') >= $1)); then
            sinfo -N
            return 0
        fi
        sleep 1
    done
    echo "slurm_local.sh: the nodes did not come up; see $state/slurmctld.log and slurmd*.log" >&2
    exit 1
}

up() {
    write_conf
    mkdir -p "$state/slurmd"
    start_munge
    slurmctld -f "$conf"
    slurmd -f "$conf"
    wait_for_nodes 1
}

up2() {
    if ip link show "$bridge" > /dev/null 2>&1; then
        echo "slurm_local.sh: $bridge exists: run down first" >&2
        exit 2
    fi
    write_conf two
    mkdir -p "$state/slurmd.node1" "$state/slurmd.node2"
    start_munge
    ip link add "$bridge" type bridge
    ip addr add "$subnet.1/24" dev "$bridge"
    ip link set "$bridge" up
    local i node
    for i in 1 2; do
        node=node$i
        ip netns add "slurm-$node"
        ip link add "vs-$node" type veth peer name eth0 netns "slurm-$node"
        ip link set "vs-$node" master "$bridge" up
        ip netns exec "slurm-$node" ip addr add "$subnet.1$i/24" dev eth0
        ip netns exec "slurm-$node" ip link set eth0 up
        ip netns exec "slurm-$node" ip link set lo up
    done
    slurmctld -f "$conf"
    start_slurmd node1
    start_slurmd node2
    wait_for_nodes 2
}

start_slurmd() {  # NODE: its slurmd, in its namespaces, on its CPU
    # slurmd daemonizes inside the namespaces; -N names the node whatever the hostname.
    # nsenter, not `ip netns exec`, which remounts /sys without /sys/fs/cgroup (slurmd's
    # cgroup plugin then refuses to start).
    nsenter --net="/run/netns/slurm-$1" unshare --uts taskset -c $((${1#node} - 1)) \
        sh -c "hostname $1 && exec slurmd -f $conf -N $1"
}

revive() {  # NODE: a killed node boots again, a cut one gets its network back
    local ns
    ns=$(node_namespace "${1:-}")
    ip netns exec "$ns" ip link set eth0 up
    if [[ -z $(ip netns pids "$ns") ]]; then
        start_slurmd "$1"  # it registers, and ReturnToService=2 takes the node back
    else
        # A cut node's slurmd lived on and does not register again: Slurm 22.05 kept it
        # "down* Not responding" (over a minute here) until resumed, as an admin would.
        scontrol update nodename="$1" state=resume
    fi
    wait_for_nodes 2
}

node_namespace() {  # NODE: its namespace's name, or exit 2
    if [[ ! " ${nodes[*]} " == *" ${1:-} "* ]] || ! ip netns pids "slurm-$1" > /dev/null 2>&1; then
        echo "slurm_local.sh: no node '${1:-}' of up2 here (node1 or node2)" >&2
        exit 2
    fi
    echo "slurm-$1"
}

kill_node() {  # NODE: SIGKILL to every process in its namespace, as if it lost power
    local ns pids
    ns=$(node_namespace "${1:-}")
    pids=$(ip netns pids "$ns" | tr '\n' ' ')
    if [[ -n ${pids// /} ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids
    fi
    echo "killed $1: processes $pids"
}

cut_node() {  # NODE: its network goes down; its processes live on
    local ns
    ns=$(node_namespace "${1:-}")
    ip netns exec "$ns" ip link set eth0 down
    echo "cut $1 off the network"
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
    local node pids
    for node in "${nodes[@]}"; do
        stop_pid "$state/slurmd.$node.pid"
        if ip netns pids "slurm-$node" > /dev/null 2>&1; then
            # What is left of its jobs (slurmstepd, a cut node's runs): nothing outlives its node.
            pids=$(ip netns pids "slurm-$node" | tr '\n' ' ')
            if [[ -n ${pids// /} ]]; then
                # shellcheck disable=SC2086
                kill -KILL $pids
            fi
            ip netns del "slurm-$node"
        fi
    done
    ip link del "$bridge" 2> /dev/null || true
    stop_pid "$state/slurmctld.pid"
    stop_pid "$state/munged.pid"
    if [[ -e $conf ]] && grep -qF "$marker" "$conf"; then
        rm -f "$conf"
    fi
    echo "stopped; state and logs left in $state"
}

case "${1:-}" in
    install) install ;;
    up) need_slurm && up ;;
    up2) need_slurm && up2 ;;
    kill) kill_node "${2:-}" ;;
    cut) cut_node "${2:-}" ;;
    revive) need_slurm && revive "${2:-}" ;;
    status) need_slurm && sinfo -N && squeue ;;
    down) down ;;
    *)
        echo "usage: bash benchmarks/slurm_local.sh install|up|up2|status|kill|cut|revive NODE|down" >&2
        exit 2
        ;;
esac
