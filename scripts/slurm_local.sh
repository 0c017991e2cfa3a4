#!/usr/bin/env bash
# slurm_local.sh -- a throw-away single-node SLURM cluster on 127.0.0.1 (with accounting).
#
# Usage (as root; Debian bookworm, SLURM 22.05; no systemd needed):
#   eval "$(scripts/slurm_local.sh start)"   # install if needed, start, print `export SLURM_CONF=...`
#   scripts/slurm_local.sh status            # exit 0 when everything is up (prints the export too)
#   scripts/slurm_local.sh stop              # cancel our jobs, stop exactly the daemons we started
# stdout carries only `export ...` lines (safe to eval); progress goes to stderr, one line per step,
# and the daemons' logs go to $SHOTLAB_SLURM_DIR/log/.
#
# Environment (all optional):
#   SHOTLAB_SLURM_DIR        state folder (config, spool, logs, pids, MariaDB data)  [/tmp/shotlab-slurm]
#   SHOTLAB_SLURM_PARTITION  name of the single, default partition                   [local]
#   SHOTLAB_SLURM_CLUSTER    ClusterName (also the accounting cluster)              [shotlab]
#   SHOTLAB_SLURM_PORT_BASE  slurmctld port; slurmd/slurmdbd/mariadbd use +1/+2/+3   [6817]
#   SHOTLAB_SLURM_TIMEOUT    seconds to wait for each daemon to come up              [90]
#   SHOTLAB_SLURM_CRED_EXPIRE AuthInfo cred_expire = delay before a requeued job restarts [30]
#
# Facts / design notes:
#  * Packages: slurm-wlm slurmdbd munge mariadb-server (apt, --no-install-recommends, only when a
#    binary is missing; `apt-get update` only if the install fails). A policy-rc.d that forbids
#    service starts is put in place during the install when none exists, so apt starts nothing.
#  * No cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
#    select/cons_tres + CR_Core (memory is NOT a consumable resource; RealMemory is still set from
#    `slurmd -C` so `--mem`/`--mem-per-cpu` requests up to the machine's memory are accepted --
#    with the default RealMemory=1 any --mem request would be rejected).
#  * Every daemon runs in the foreground under setsid, detached from the caller's stdio, and its
#    PID is recorded in $DIR/pids/; `stop` only signals those PIDs (after checking the process
#    name and that its command line or environment mentions $DIR). munged uses its own key and
#    socket in $DIR: AuthInfo=socket=... in slurm.conf/slurmdbd.conf, and AccountingStoragePass=
#    <socket> in slurm.conf (connections to slurmdbd -- sacct, sacctmgr, slurmctld -- ignore
#    AuthInfo and would use /run/munge otherwise). mariadbd gets its own datadir and TCP port.
#  * Clients need SLURM_CONF (printed by start/status); sbatch passes it on to the jobs.
#  * Accounting: slurmdbd + a private MariaDB (run as the mysql user; its pid/log/socket live
#    inside its datadir, mariadbd dies silently otherwise). Without it `sacct` fails and
#    submitit cannot learn the state of a cancelled/killed job (job.result() hangs).
#  * Readiness: `sinfo` may show the node idle before slurmd re-registered after a restart, so
#    `start` waits for SlurmdStartTime >= our start time and a usable node state, then runs
#    a test `srun` and waits until that job shows up COMPLETED in `sacct -j` (a fresh accounting
#    DB takes a few seconds to record its first job).
#  * Time limits/requeue: JobRequeue=1, KillWait=30, OverTimeLimit=0 (SIGTERM at the limit,
#    SIGKILL 30 s later; submitit's --signal=USR2@90 style signals work; `scontrol requeue` works).
#    A requeued job only becomes eligible cred_expire+1 s later (SLURM default 120 s; 30 s here).
#  * slurmdbd.conf and slurm.conf are regenerated at every start (CPU/memory read at start);
#    job and accounting state persist in $DIR across stop/start. `rm -rf $DIR` after stop resets.
set -euo pipefail
umask 022
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

DIR="${SHOTLAB_SLURM_DIR:-/tmp/shotlab-slurm}"
PARTITION="${SHOTLAB_SLURM_PARTITION:-local}"
CLUSTER="${SHOTLAB_SLURM_CLUSTER:-shotlab}"
PORT_BASE="${SHOTLAB_SLURM_PORT_BASE:-6817}"
TIMEOUT="${SHOTLAB_SLURM_TIMEOUT:-90}"
CRED_EXPIRE="${SHOTLAB_SLURM_CRED_EXPIRE:-30}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
DB_NAME="shotlab_slurm_acct_db"
DB_USER="slurm"
DB_PASS="shotlab-local"

ETC="$DIR/etc"
LOG="$DIR/log"
PIDS="$DIR/pids"
RUN="$DIR/run"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCK="$MUNGE_DIR/munge.socket"
DB_DIR="$DIR/mariadb"          # datadir; owned by mysql; also holds its socket, pid and error log
DB_SOCK="$DB_DIR/mysqld.sock"
export SLURM_CONF="$ETC/slurm.conf"

DAEMONS_START=(munged mariadbd slurmdbd slurmctld slurmd)
DAEMONS_STOP=(slurmd slurmctld slurmdbd mariadbd munged)
STOPPED_PIDS=()

say() { echo "[slurm_local] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- pid bookkeeping
pid_of() { [[ -f "$PIDS/$1" ]] && cat "$PIDS/$1" 2>/dev/null || true; }

# alive NAME: the recorded PID exists, has the expected name, and its command line mentions $DIR.
alive() {
  local name=$1 pid
  pid=$(pid_of "$name")
  [[ -n "$pid" && -d /proc/$pid ]] || return 1
  [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] || return 1
  # ours: the command line or the environment (SLURM_CONF) names our state folder
  local info
  info=$({ tr '\0' '\n' </proc/"$pid"/cmdline; tr '\0' '\n' </proc/"$pid"/environ; } 2>/dev/null || true)
  [[ $info == *"$DIR/"* ]]
}

# launch NAME CMD...: run CMD in the foreground in its own session, detached from our stdio.
launch() {
  local name=$1; shift
  (
    # close every inherited fd > 2 so callers waiting on a pipe (CI, subprocess) are not held up
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [[ $fd =~ ^[0-9]+$ && $fd -gt 2 ]] && eval "exec $fd>&-" 2>/dev/null || true
    done
    exec setsid "$@" </dev/null >>"$LOG/$name.out" 2>&1
  ) &
  echo $! >"$PIDS/$name"
}

# wait_for DESC CMD...: poll CMD until it succeeds or $TIMEOUT seconds pass.
wait_for() {
  local desc=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then say "timed out waiting for $desc"; return 1; fi
    sleep 0.5
  done
}

fail_start() {
  say "ERROR: $*"
  local f
  for f in "$LOG"/*.log "$LOG"/*.out "$DB_DIR/mariadbd.err"; do
    [[ -s "$f" ]] || continue
    say "---- tail of $f"; tail -n 15 "$f" >&2 || true
  done
  say "stopping what was started"
  do_stop || true
  exit 1
}

# ---------------------------------------------------------------- install
need_install() {
  local b
  for b in slurmctld slurmd slurmdbd sbatch sacct sacctmgr srun scontrol munged mungekey munge \
           unmunge mariadbd mariadb-install-db mariadb mariadb-admin; do
    command -v "$b" >/dev/null 2>&1 || return 0
  done
  getent passwd mysql >/dev/null || return 0
  return 1
}

do_install() {
  need_install || return 0
  [[ $(id -u) -eq 0 ]] || die "packages missing and not root; run as root"
  local t0=$SECONDS policy=/usr/sbin/policy-rc.d ours_policy=0 pkgs=(slurm-wlm slurmdbd munge mariadb-server)
  say "installing ${pkgs[*]} (log: $LOG/apt.log)"
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null >>"$LOG/apt.log" 2>&1 || rc=$?
  if ((rc != 0)); then
    say "apt-get install failed; running apt-get update and retrying"
    rc=0
    { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; } \
      </dev/null >>"$LOG/apt.log" 2>&1 || rc=$?
  fi
  ((ours_policy)) && rm -f "$policy"
  ((rc == 0)) || { tail -n 20 "$LOG/apt.log" >&2; die "apt-get install failed (see $LOG/apt.log)"; }
  need_install && die "packages installed but binaries still missing"
  say "installed in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- config
write_configs() {
  local host cpu_line realmem topo
  host=$(hostname -s)
  cpu_line=$(slurmd -C 2>/dev/null | head -n1) || true
  [[ $cpu_line == NodeName=* ]] || die "slurmd -C failed: $cpu_line"
  # keep the hardware fields (CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore, RealMemory)
  topo=$(tr ' ' '\n' <<<"$cpu_line" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  realmem=$(tr ' ' '\n' <<<"$cpu_line" | sed -n 's/^RealMemory=//p')
  [[ -n $realmem ]] || realmem=1
  NODE=$host

  cat >"$ETC/slurm.conf.new" <<EOF
# generated by scripts/slurm_local.sh -- regenerated at every start
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCK,cred_expire=$CRED_EXPIRE
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
LaunchType=launch/slurm
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
JobRequeue=1
KillWait=30
OverTimeLimit=0
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=60
MessageTimeout=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# munge socket used for connections to slurmdbd (sacct/sacctmgr/slurmctld); AuthInfo does not cover them
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host ${topo}RealMemory=$realmem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv -f "$ETC/slurm.conf.new" "$ETC/slurm.conf"

  (umask 077; cat >"$ETC/slurmdbd.conf.new" <<EOF
# generated by scripts/slurm_local.sh -- regenerated at every start
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
  )
  chmod 600 "$ETC/slurmdbd.conf.new"
  mv -f "$ETC/slurmdbd.conf.new" "$ETC/slurmdbd.conf"
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# ---------------------------------------------------------------- daemons
munge_ok() { munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK"; }
db_ok() { mariadb-admin --no-defaults --socket="$DB_SOCK" -uroot ping; }
sql() { mariadb --no-defaults --socket="$DB_SOCK" -uroot -N -B -e "$1"; }
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
job_in_sacct() { [[ $(sacct -n -X -P -j "$1" -o State 2>>"$LOG/check.log") == COMPLETED* ]]; }
ctld_ok() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }

node_ready() { # slurmd registered after $1 (epoch) and the node is usable
  local line st t
  line=$(scontrol show node "$NODE" -o 2>/dev/null) || return 1
  st=$(sed -n 's/.* State=\([^ ]*\).*/\1/p' <<<"$line")
  t=$(sed -n 's/.* SlurmdStartTime=\([^ ]*\).*/\1/p' <<<"$line")
  [[ -n $t && $t != None ]] || return 1
  (($(date -d "$t" +%s) >= $1)) || return 1
  [[ $st =~ (IDLE|MIXED|ALLOCATED) && ! $st =~ (NOT_RESPONDING|DOWN|DRAIN|FAIL|UNKNOWN|\*) ]]
}

start_munged() {
  if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
    (umask 077; mungekey --create --keyfile="$MUNGE_DIR/munge.key" 2>/dev/null \
      || dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none)
  fi
  chmod 600 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  launch munged "$(command -v munged)" -F --force --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
    --seed-file="$MUNGE_DIR/munged.seed" --pid-file="$MUNGE_DIR/munged.pid" --log-file="$LOG/munged.log"
  wait_for munged munge_ok || fail_start "munged did not come up"
}

start_mariadbd() {
  chown mysql:mysql "$DB_DIR"; chmod 750 "$DB_DIR"
  if [[ ! -d "$DB_DIR/mysql" ]]; then
    say "initialising MariaDB datadir $DB_DIR"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
      --auth-root-authentication-method=socket >>"$LOG/mariadb-install-db.log" 2>&1 \
      || fail_start "mariadb-install-db failed (see $LOG/mariadb-install-db.log)"
  fi
  rm -f "$DB_SOCK" "$DB_DIR/mariadbd.pid"
  launch mariadbd "$(command -v mariadbd)" --no-defaults --user=mysql --datadir="$DB_DIR" \
    --socket="$DB_SOCK" --pid-file="$DB_DIR/mariadbd.pid" --log-error="$DB_DIR/mariadbd.err" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    --max-allowed-packet=16M --performance-schema=OFF
  wait_for mariadbd db_ok || fail_start "mariadbd did not come up (see $DB_DIR/mariadbd.err)"
  sql "CREATE DATABASE IF NOT EXISTS $DB_NAME;
       CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
       CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
       GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
       GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" >>"$LOG/mariadb-setup.log" 2>&1 \
    || fail_start "creating the accounting database/user failed"
}

start_slurmdbd() {
  launch slurmdbd "$(command -v slurmdbd)" -D
  wait_for slurmdbd dbd_ok || fail_start "slurmdbd did not come up"
  if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >>"$LOG/sacctmgr.log" 2>&1 || fail_start "sacctmgr add cluster failed"
  fi
}

start_slurmctld() {
  launch slurmctld "$(command -v slurmctld)" -D -f "$SLURM_CONF"
  wait_for slurmctld ctld_ok || fail_start "slurmctld did not come up"
}

start_slurmd() {
  local t0
  t0=$(date +%s)
  launch slurmd "$(command -v slurmd)" -D -f "$SLURM_CONF" -N "$NODE"
  local deadline=$((SECONDS + TIMEOUT)) resumed=0 st
  until node_ready "$t0"; do
    alive slurmd || fail_start "slurmd exited"
    st=$(scontrol show node "$NODE" -o 2>/dev/null | sed -n 's/.* State=\([^ ]*\).*/\1/p')
    if ((!resumed)) && [[ $st =~ (DOWN|DRAIN) && ! $st =~ NOT_RESPONDING ]]; then
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; resumed=1
    fi
    ((SECONDS < deadline)) || fail_start "node $NODE not ready (state: $st)"
    sleep 0.5
  done
}

all_up() { local d; for d in "${DAEMONS_START[@]}"; do alive "$d" || return 1; done; }

print_env() { echo "export SLURM_CONF=$SLURM_CONF"; }

do_start() {
  mkdir -p "$DIR" "$ETC" "$LOG" "$PIDS" "$RUN" "$MUNGE_DIR" "$DB_DIR" "$DIR/spool/ctld" "$DIR/spool/d"
  chmod 755 "$DIR" "$MUNGE_DIR"
  if all_up && ctld_ok >/dev/null 2>&1; then
    say "already running (state in $DIR)"; print_env; return 0
  fi
  local t0=$SECONDS d
  for d in "${DAEMONS_START[@]}"; do
    if alive "$d"; then say "partially running; stopping leftovers first"; do_stop; break; fi
  done
  do_install
  local p
  for p in "$CTLD_PORT" "$SLURMD_PORT" "$DBD_PORT" "$DB_PORT"; do
    port_busy "$p" && die "port $p is already in use (another SLURM/MariaDB?); set SHOTLAB_SLURM_PORT_BASE"
  done
  write_configs
  say "starting munged";    start_munged
  say "starting mariadbd";  start_mariadbd
  say "starting slurmdbd";  start_slurmdbd
  say "starting slurmctld"; start_slurmctld
  say "starting slurmd";    start_slurmd
  say "checking srun and sacct"
  local jid
  jid=$(timeout 60 srun -N1 -n1 -t 1 -J slurm_local_check printenv SLURM_JOB_ID 2>>"$LOG/check.log") \
    || fail_start "test srun failed (see $LOG/check.log)"
  # the job must reach the accounting DB (the first record after a fresh start takes a few seconds)
  wait_for "job $jid in sacct" job_in_sacct "$jid" || fail_start "sacct does not show job $jid (see $LOG/check.log)"
  say "ready in $((SECONDS - t0))s: node $NODE, partition $PARTITION (default), cluster $CLUSTER, state in $DIR"
  print_env
}

# gone PID: the process has exited (a zombie waiting to be reaped counts as gone)
gone() {
  local st
  st=$(cat /proc/"$1"/stat 2>/dev/null) || return 0
  st=${st##*) }
  [[ ${st%% *} == Z ]]
}

# stop_group NAME...: SIGTERM the recorded daemons together, wait (SIGKILL after 30 s).
stop_group() {
  local name pid pids=() names=() t0=$SECONDS
  for name in "$@"; do
    pid=$(pid_of "$name")
    if [[ -n $pid ]] && alive "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name($pid)")
    fi
  done
  local i left
  for ((i = 0; i < 300; i++)); do  # 30 s
    left=0
    for pid in "${pids[@]}"; do gone "$pid" || left=1; done
    ((left)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if ! gone "$pid"; then
      say "pid $pid ignored SIGTERM for 30s; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do gone "$pid" && break; sleep 0.1; done
    fi
  done
  STOPPED_PIDS+=("${pids[@]}")
  ((${#names[@]})) && say "stopped ${names[*]} in $((SECONDS - t0))s"
  for name in "$@"; do rm -f "$PIDS/$name"; done
}

do_stop() {
  local t0=$SECONDS d any=0
  for d in "${DAEMONS_STOP[@]}"; do [[ -n $(pid_of "$d") ]] && any=1; done
  if ((!any)); then say "not running"; return 0; fi
  if alive slurmctld && [[ -f $SLURM_CONF ]]; then
    local jobs
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      local deadline=$((SECONDS + 40))
      while [[ -n $(timeout 10 squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.5; done
    fi
  fi
  # slurmctld flushes accounting to slurmdbd, which flushes to MariaDB: stop in that order
  stop_group slurmd slurmctld
  stop_group slurmdbd
  stop_group mariadbd munged
  # the exited daemons were re-parented to init; give it a moment to reap them so that a
  # `pgrep` right after `stop` does not list <defunct> entries (never fails if it does not)
  local i left pid
  for ((i = 0; i < 50; i++)); do
    left=0
    for pid in "${STOPPED_PIDS[@]}"; do [[ -d /proc/$pid ]] && left=1; done
    ((left)) || break
    sleep 0.1
  done
  say "stopped in $((SECONDS - t0))s"
}

do_status() {
  local d rc=0 pid
  for d in "${DAEMONS_START[@]}"; do
    pid=$(pid_of "$d")
    if alive "$d"; then say "$d: up (pid $pid)"; else say "$d: down"; rc=1; fi
  done
  if ((rc == 0)); then
    if ctld_ok >/dev/null 2>&1; then say "slurmctld responds; state in $DIR"; else say "slurmctld not responding"; rc=1; fi
  fi
  print_env
  return $rc
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  restart) do_stop; do_start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
