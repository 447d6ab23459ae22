#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM test in tests/test_sweep.py: Debian's slurm-wlm
# and munge (installed with apt-get if missing), munged, slurmctld and slurmd started directly
# (no init system here), one node named `hostname -s` with every CPU. Idempotent: exits 0 at
# once if the node already answers. Needs root. On failure: one line on stderr, exit 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

NODE="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
WAIT_S=60

die() {
    echo "slurm_up.sh: $*" >&2
    exit 1
}

node_state() {  # idle, mixed, allocated, down*, drained, ... or nothing if no answer
    timeout 10 sinfo -h -N -n "${NODE}" -o %T 2>/dev/null | head -n 1 || true
}

node_usable() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

if command -v sbatch >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q UP \
    && node_usable; then
    echo "slurm_up.sh: already up (node ${NODE}: $(node_state))"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts daemons)"

# 1. packages
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null \
    || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt_log=/tmp/slurm_up-apt.log
    { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } \
        >"${apt_log}" 2>&1 || die "apt-get install slurm-wlm munge failed (log: ${apt_log})"
fi

# 2. munge: a key, then munged as the munge user
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key \
        || die "mungekey could not create /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged || die "munged did not start (log: /var/log/munge/munged.log)"
    for _ in $(seq 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 \
        || die "munge credentials do not round-trip (log: /var/log/munge/munged.log)"
fi

# 3. slurm.conf: one node, every CPU, 90% of the memory. CR_CPU (not CR_Core) so that two
# 1-CPU tasks share the node even where a core has two hardware threads.
cpus="$(nproc)"
mem_mb="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
install -d -m 0755 /etc/slurm "${LOGDIR}" /var/lib/slurm/slurmctld /var/spool/slurmd
conf="$(
    cat <<EOF
# Written by .ci/slurm_up.sh: a one-node test cluster.
ClusterName=graphqa-ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=main Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
)"
changed=0
if [ ! -f "${CONF}" ] || [ "$(cat "${CONF}")" != "${conf}" ]; then
    printf '%s\n' "${conf}" >"${CONF}"
    changed=1
fi

# 4. the daemons (each daemonises itself); a running one re-reads a changed slurm.conf
if pgrep -x slurmctld >/dev/null; then
    [ "${changed}" = 0 ] || timeout 20 scontrol reconfigure >/dev/null 2>&1 || true
else
    slurmctld || die "slurmctld did not start (log: ${LOGDIR}/slurmctld.log)"
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd || die "slurmd did not start (log: ${LOGDIR}/slurmd.log)"
fi

# 5. wait (bounded) for the node to be usable; resume it if it came up down or drained
state=""
deadline=$((SECONDS + WAIT_S))
while [ "${SECONDS}" -lt "${deadline}" ]; do
    state="$(node_state)"
    case "${state}" in
        idle | mixed | allocated | completing)
            echo "slurm_up.sh: up (node ${NODE}: ${cpus} CPUs, ${mem_mb} MB; ${state})"
            exit 0
            ;;
        down | drained | draining | drain)
            scontrol update nodename="${NODE}" state=resume >/dev/null 2>&1 || true
            ;;
    esac
    sleep 1
done
die "node ${NODE} not usable after ${WAIT_S} s (sinfo state: '${state:-no answer}'; logs:" \
    "${LOGDIR}/slurmctld.log, ${LOGDIR}/slurmd.log)"
