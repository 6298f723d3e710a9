#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on this machine, for `make slurm-test`.
#
#   scripts/slurm-cluster.sh up      install (if missing) and start munged, slurmctld, slurmd
#   scripts/slurm-cluster.sh install install slurm-wlm and munge (if missing) only
#   scripts/slurm-cluster.sh down    stop what `up` started (by its pid files)
#   scripts/slurm-cluster.sh env     print the `export SLURM_CONF=...` line for clients
#   scripts/slurm-cluster.sh status  sinfo, squeue
#
# Everything lives in one scratch folder (SLURM_SCRATCH, default out/slurm-cluster): config,
# state, spool, logs, pid files, and munge's own key and socket, so nothing in /etc is touched
# and a munged or Slurm that the machine already runs is left alone. The daemons' ports are
# free ones picked at `up` (or SLURM_CTLD_PORT, SLURM_D_PORT when given), so a second cluster
# on the machine (another checkout, a test beside a trial) does not clash with this one; a
# port that is taken is named. Safe to re-run: `up` on a running cluster only waits for the
# node (on the ports it has), `down` on a stopped one does nothing.
set -euo pipefail

cd "$(dirname "$0")/.."
SCRATCH=${SLURM_SCRATCH:-$PWD/out/slurm-cluster}
CPUS=${SLURM_CPUS:-$(nproc)}
NODE=$(hostname)
CONF=$SCRATCH/slurm.conf
MUNGE_DIR=$SCRATCH/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket

log() { echo "slurm-cluster: $*" >&2; }

# Two free TCP ports (bound to port 0, then let go): the controller's and the node's.
free_ports() {
    python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("", 0))
print(*(x.getsockname()[1] for x in s))'
}

# Whether something listens on (or holds) TCP port $1: binding it fails.
port_busy() {
    ! python3 -c 'import socket,sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))' "$1" 2>/dev/null
}

# The ports: a running cluster's own (from its config), else the ones given, else free ones.
pick_ports() {
    if [[ -f $CONF && -n $(live_pid "$SCRATCH/run/slurmctld.pid") ]]; then
        CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
        D_PORT=$(sed -n 's/^SlurmdPort=//p' "$CONF")
        return
    fi
    local free name port
    free=$(free_ports)
    CTLD_PORT=${SLURM_CTLD_PORT:-${free% *}}
    D_PORT=${SLURM_D_PORT:-${free#* }}
    for name in SlurmctldPort:$CTLD_PORT SlurmdPort:$D_PORT; do
        port=${name#*:}
        if port_busy "$port"; then
            log "port $port (${name%:*}) is in use by another program (ss -ltnp 'sport = :$port' names it); leave SLURM_CTLD_PORT and SLURM_D_PORT unset to take free ports"
            exit 1
        fi
    done
}

# Live pid from a pid file (empty when the file is missing or the process is gone).
live_pid() {
    local f=$1 pid
    [[ -s $f ]] || return 0
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge from the distribution's packages"
    [[ $(id -u) -eq 0 ]] || { log "need root to install packages"; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$SCRATCH"/{state,spool,log,run}
    # proctrack/linuxproc and task/none: no cgroups, which a container may not give us.
    # OverSubscribe=FORCE:4: both parties of every tile pair (and a re-run) share the cores;
    # a pair's S0 must never wait in the queue for a slot its S1 would need. `pairs`: 2 slots
    # (one task a core, 2 cores), fewer than a study's tasks, where the arrays' throttle
    # (--array=...%K) must keep the pairs together (docs/scale-out.md, "Co-scheduling").
    cat >"$CONF.tmp" <<EOF
ClusterName=ppdenoise
SlurmctldHost=$NODE
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=pairs Nodes=$NODE MaxTime=INFINITE State=UP OverSubscribe=NO MaxCPUsPerNode=2
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    if [[ -n $(live_pid "$MUNGE_DIR/munged.pid") ]]; then return; fi
    # munged refuses keys and sockets in folders others could write: its own folder, 0700,
    # owned by the user it runs as (munge if that user exists, as the package sets it up).
    local user=root
    id munge >/dev/null 2>&1 && user=munge
    mkdir -p "$MUNGE_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        log "creating a munge key"
        head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    fi
    chown -R "$user" "$MUNGE_DIR"
    chmod 0700 "$MUNGE_DIR"
    chmod 0400 "$MUNGE_DIR/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    local args=(--key-file "$MUNGE_DIR/munge.key" --socket "$MUNGE_SOCKET"
        --pid-file "$MUNGE_DIR/munged.pid" --log-file "$MUNGE_DIR/munged.log"
        --seed-file "$MUNGE_DIR/munged.seed")
    # The scratch folder's parents may be group-writable here; --force accepts that (the key
    # is still readable by its owner only).
    if [[ $user == root ]]; then
        munged --force "${args[@]}"
    else
        runuser -u munge -- munged --force "${args[@]}"
    fi
    for _ in $(seq 50); do
        [[ -S $MUNGE_SOCKET ]] && break
        sleep 0.1
    done
    munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null \
        || { log "munge does not work; see $MUNGE_DIR/munged.log"; exit 1; }
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        case $state in
        idle* | mix* | alloc*) log "node $NODE is $state (SLURM_CONF=$CONF)"; return ;;
        esac
        sleep 1
    done
    log "node $NODE did not come up (state '${state}'); logs in $SCRATCH/log"
    # The daemons' own words on what failed, and a port another program holds, named.
    grep -hsiE 'address already in use|bind|fatal|error' "$SCRATCH"/log/slurmctld.log \
        "$SCRATCH"/log/slurmd.log | tail -5 | sed 's/^/slurm-cluster:   /' >&2 || true
    local d port
    for d in slurmctld:$CTLD_PORT slurmd:$D_PORT; do
        port=${d#*:} d=${d%:*}
        [[ -n $(live_pid "$SCRATCH/run/$d.pid") ]] && continue
        log "$d is not running (its port $port$(port_busy "$port" && echo ' is held by another program')); see $SCRATCH/log/$d.log"
    done
    exit 1
}

up() {
    install_packages
    pick_ports
    write_config
    start_munge
    if [[ -z $(live_pid "$SCRATCH/run/slurmctld.pid") ]]; then
        # -i: ignore state left by an earlier cluster in this scratch folder.
        slurmctld -f "$CONF" -i || { log "slurmctld did not start (port $CTLD_PORT; $SCRATCH/log/slurmctld.log)"; exit 1; }
    fi
    if [[ -z $(live_pid "$SCRATCH/run/slurmd.pid") ]]; then
        slurmd -f "$CONF" || { log "slurmd did not start (port $D_PORT; $SCRATCH/log/slurmd.log)"; exit 1; }
    fi
    log "slurmctld on port $CTLD_PORT, slurmd on port $D_PORT"
    wait_idle
}

# Stops one daemon by its pid file: TERM, then KILL if it is still there after 10 s.
stop() {
    local f=$1 name=$2 pid
    pid=$(live_pid "$f")
    [[ -n $pid ]] || { rm -f "$f"; return 0; }
    log "stopping $name ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$f"
}

down() {
    if [[ -f $CONF && -n $(live_pid "$SCRATCH/run/slurmctld.pid") ]]; then
        # Jobs first, so that no slurmstepd or ppdenoise outlives the cluster (not --full: that
        # signals the batch shell alone and orphans its children under linuxproc).
        SLURM_CONF=$CONF scancel --quiet --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 30); do
            [[ -z $(SLURM_CONF=$CONF squeue -h 2>/dev/null) ]] && break
            sleep 1
        done
    fi
    stop "$SCRATCH/run/slurmd.pid" slurmd
    stop "$SCRATCH/run/slurmctld.pid" slurmctld
    stop "$MUNGE_DIR/munged.pid" munged
}

case ${1:-} in
up) up ;;
install) install_packages ;;
down) down ;;
env) echo "export SLURM_CONF=$CONF" ;;
status) SLURM_CONF=$CONF sinfo && SLURM_CONF=$CONF squeue ;;
*)
    echo "usage: $0 up|install|down|env|status" >&2
    exit 2
    ;;
esac
