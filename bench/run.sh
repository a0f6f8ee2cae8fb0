#!/usr/bin/env bash
# Turnout's benchmark suite: the proxy against nginx, HAProxy and Caddy (one worker thread each)
# in front of the same backend, loaded by wrk in one run; domain switch latency; resident memory
# with 10 and 1,000 domains; failed requests and p99 while each proxy's owner restarts under load
# (nginx reload, HAProxy reload with -x, turnout serve --upgrade, kill -9 of turnout serve and a
# new start). Everything runs on 127.0.0.1 and is cleaned up on exit.
#
#   bench/run.sh                 run everything; write bench/results/latest.{json,md}
#   bench/run.sh --update-docs   the same, then put the new tables into docs/BENCHMARKS.md
#   BENCH_ONLY=restarts bench/run.sh   only the restarts section (daemon, backend, restarts,
#                                report), about 2 minutes; writes bench/results/restarts.{json,md}
#   BENCH_ONLY=push bench/run.sh   only the push section: `git push` of the example app to the
#                                time its new commit answers; writes bench/results/push.{json,md}
#                                (a full run writes them too)
#   BENCH_ONLY=wake bench/run.sh       only the wake latency section (daemon, the example app in a
#                                test environment that sleeps after 1 s, BENCH_WAKES timed wakes);
#                                writes bench/results/wake.{json,md} (a full run does too)
#   BENCH_ONLY=data-sqlite bench/run.sh   only the SQLite clone section: a ~1 GiB WAL database,
#                                `cp` of it idle against Turnout's copy (crates/data's
#                                sqlite_copy example) while a writer process commits, 3 runs
#                                each, on this disk and, as root with a loop device, on an XFS
#                                image (reflinks); writes bench/results/data-sqlite.{json,md}
#                                (BENCH_SQLITE_MB sets the size; not part of a full run)
#   BENCH_ONLY=backup-sqlite bench/run.sh   only the SQLite backup section: snapshots and a
#                                restore of a ~1 GiB database beside cp, and a day of minute-level
#                                snapshots' storage cost (BENCH_BACKUP_MINUTES, 1440); writes
#                                bench/results/backup-sqlite.{json,md} (not part of a full run)
#   BENCH_ONLY=backup-pg bench/run.sh  only the PostgreSQL backup section: Turnout's base backups
#                                and restore of the ~2 GB pgbench database beside pg_basebackup
#                                and pg_dump/pg_restore; writes bench/results/backup-pg.{json,md}
#   BENCH_ONLY=data-pg bench/run.sh    only the PostgreSQL copy section (not part of a full run):
#                                a ~2 GB pgbench database in a Turnout cluster, copied by
#                                Turnout's clone (pgbench clients writing), pg_dump | pg_restore
#                                and CREATE DATABASE ... TEMPLATE; about 8 minutes; writes
#                                bench/results/data-pg.{json,md} (BENCH_PG_SCALE (135) is
#                                pgbench's scale, BENCH_PG_REPS (2) the runs of each method)
#   BENCH_ONLY=egress bench/run.sh  only the egress section (not part of a full run): Turnout's
#                                egress proxy beside tinyproxy and no proxy, plain HTTP with wrk
#                                and CONNECT tunnels, about 2 minutes; writes
#                                bench/results/egress.{json,md} (BENCH_EGRESS_ROUNDS (3),
#                                BENCH_EGRESS_DURATION (4s), BENCH_EGRESS_TUNNELS (1000))
#   BENCH_ONLY=mail bench/run.sh    only the mail section (not part of a full run): Turnout's
#                                mail catcher beside MailDev (npm) and Postfix's smtp-sink, 2 KiB
#                                messages on 1 and 8 connections and the latency of 2 KiB and
#                                1 MiB ones, about 2 minutes; writes bench/results/mail.{json,md}
#                                (BENCH_MAIL_ROUNDS (3), BENCH_MAIL_DURATION (3s),
#                                BENCH_MAIL_LATENCY (300), BENCH_MAIL_BIG (40))
#   BENCH_ONLY=tls bench/run.sh     only the HTTPS section (not part of a full run): Turnout's
#                                HTTPS listener beside nginx's, the same ECDSA P-256 certificate,
#                                one worker each: new TLS connections (full handshakes) and
#                                requests on kept connections per second, about 75 seconds;
#                                writes bench/results/tls.{json,md} and raw-tls/
#                                (BENCH_TLS_ROUNDS (3), BENCH_TLS_DURATION (5s),
#                                BENCH_TLS_CONNECTIONS (50))
#   BENCH_ONLY=dashboard bench/run.sh  only the dashboard section (not part of a full run): the
#                                server time of each dashboard page with 200 environments
#                                (bench/dashboard.py), about a minute; writes
#                                bench/results/dashboard.{json,md} (BENCH_DASHBOARD_ENVS (200),
#                                BENCH_DASHBOARD_ROUNDS (30))
#   BENCH_ONLY=scale bench/run.sh   only the scale section (not part of a full run): a small app
#                                (3 environments, 4 domains) and a large one (500 environments,
#                                most asleep, 10,000 domains), each on a daemon of its own: the
#                                server time of the API calls behind `env list`, `pipeline show`
#                                and `jobs` and of the dashboard's pages, the daemon's memory, and
#                                its start-up after SIGTERM and after SIGINT (bench/scale.py),
#                                about 10 minutes; writes bench/results/scale.{json,md}
#                                (BENCH_SCALE_ENVS (500), BENCH_SCALE_DOMAINS (10000),
#                                BENCH_SCALE_ROUNDS (200), BENCH_SCALE_DEPLOYS (8) at once)
#
# Knobs (environment): BENCH_DURATION (6s), BENCH_ROUNDS (5), BENCH_CONNECTIONS (32),
# BENCH_SWITCHES (100), BENCH_DOMAINS (1000), BENCH_KEEP=1 keeps the work directory,
# BENCH_CALIBRATE_NS=1 starts the second daemon of section 4b with --shared-network too (its row
# then measures the two-daemon set-up, not the namespace; results are not for the docs),
# BENCH_NO_BUILD=1 uses target/release/turnout as it is, BENCH_TURNOUT=PATH measures that binary
# (BENCH_COMMIT=SHA says which commit it was built from), BENCH_ONLY=restarts runs only what the
# restarts section needs, BENCH_RESTARTS (10) restarts per row, BENCH_RESTART_SPACING_MS (1000)
# between two restarts (wrk runs for (BENCH_RESTARTS + 2) spacings, the first restart one spacing
# in), BENCH_RESTART_STEADY=0 skips the steady-state run of each restarts row, BENCH_PUSHES (5)
# pushes timed by the push section, BENCH_WAKES (10) wakes of a sleeping environment.
# See docs/BENCHMARKS.md for what each figure means.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DURATION=${BENCH_DURATION:-6s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=1
SWITCHES=${BENCH_SWITCHES:-100}
DOMAINS=${BENCH_DOMAINS:-1000}
ONLY=${BENCH_ONLY:-}
RESTARTS=${BENCH_RESTARTS:-10}
SPACING_MS=${BENCH_RESTART_SPACING_MS:-1000}
RESTART_STEADY=${BENCH_RESTART_STEADY:-1}
PUSHES=${BENCH_PUSHES:-5}
WAKES=${BENCH_WAKES:-10}
UPDATE_DOCS=0
# put_doc_section NAME FILE: replace what docs/BENCHMARKS.md holds between its
# <!-- NAME:begin --> and <!-- NAME:end --> markers with FILE (--update-docs).
put_doc_section() {
  python3 - "$ROOT/docs/BENCHMARKS.md" "$1" "$2" <<'EOF'
import sys
doc_path, name, md_path = sys.argv[1:4]
doc, md = open(doc_path).read(), open(md_path).read()
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
if begin not in doc or end not in doc:
    sys.exit(f"error: {doc_path} has no {begin} ... {end} markers")
head, rest = doc.split(begin, 1)
open(doc_path, "w").write(f"{head}{begin}\n{md}{end}{rest.split(end, 1)[1]}")
print(f"updated {doc_path}", file=sys.stderr)
EOF
}
for arg in "$@"; do
  case "$arg" in
    --update-docs) UPDATE_DOCS=1 ;;
    -h | --help) sed -n '2,80p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in
  '' | restarts | push | wake | data-sqlite | data-pg | backup-sqlite | backup-pg | egress | mail | tls | dashboard | scale) ;;
  *) echo "error: BENCH_ONLY=$ONLY: the sections that run alone are 'restarts', 'push', 'wake', 'data-sqlite', 'data-pg', 'backup-sqlite', 'backup-pg', 'egress', 'mail', 'tls', 'dashboard' and 'scale'" >&2; exit 2 ;;
esac
for knob in RESTARTS SPACING_MS PUSHES WAKES; do
  [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "error: ${knob} must be a positive integer" >&2; exit 2; }
done
export PATH="$PATH:/usr/sbin:/sbin"
PY="python3 $BENCH_DIR/bench.py"
HOST=prod.bench.localhost
started_at=$SECONDS

log() { printf '\n== %s\n' "$*" >&2; }

# --- 1. tools --------------------------------------------------------------------------------
missing=()
TOOLS=(nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk git:git)
[[ $ONLY == restarts ]] && TOOLS=(nginx:nginx haproxy:haproxy wrk:wrk git:git)
[[ $ONLY == push || $ONLY == wake ]] && TOOLS=(git:git)
[[ $ONLY == data-sqlite ]] && TOOLS=(python3:python3)
[[ $ONLY == data-pg || $ONLY == backup-pg ]] && TOOLS=(pgbench:postgresql)
[[ $ONLY == backup-sqlite ]] && TOOLS=(python3:python3)
[[ $ONLY == egress ]] && TOOLS=(tinyproxy:tinyproxy wrk:wrk nginx:nginx git:git)
[[ $ONLY == mail ]] && TOOLS=(node:nodejs npm:npm smtp-sink:postfix git:git)
[[ $ONLY == tls ]] && TOOLS=(nginx:nginx wrk:wrk openssl:openssl cc:gcc git:git)
[[ $ONLY == dashboard || $ONLY == scale ]] && TOOLS=(git:git python3:python3)
for pair in "${TOOLS[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The mail section stops Postfix's service if its install started it (smtp-sink is all it needs).
MAIL_INSTALLED_POSTFIX=0
[[ " ${missing[*]} " == *" postfix "* ]] && MAIL_INSTALLED_POSTFIX=1

if [[ $ONLY == data-pg || $ONLY == backup-pg ]]; then
  PG_SCALE=${BENCH_PG_SCALE:-135} PG_REPS=${BENCH_PG_REPS:-2}
  for knob in PG_SCALE PG_REPS; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_${knob} must be a positive integer" >&2; exit 2; }
  done
  log "building the pg_clone and pg_backup_bench examples (release): Turnout's own code"
  (cd "$ROOT" && cargo build --release --quiet -p turnout-data --example pg_clone --example pg_backup_bench)
  PG_CLONE="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/pg_clone"
  PG_BACKUP="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/pg_backup_bench"
  TURNOUT=/bin/false # no daemon in this section
elif [[ -n ${BENCH_TURNOUT:-} ]]; then
  TURNOUT=$(realpath "$BENCH_TURNOUT")
else
  if [[ ${BENCH_NO_BUILD:-0} != 1 && $ONLY != data-sqlite && $ONLY != backup-sqlite ]]; then
    log "building turnout (release)"
    (cd "$ROOT" && cargo build --release --quiet)
  fi
  TURNOUT="${CARGO_TARGET_DIR:-$ROOT/target}/release/turnout"
fi

# --- 2. work directory and cleanup -----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/turnout-bench.XXXXXX")
PIDS=()        # peers, stopped first
TURNOUT_PID=
# The restarts section's processes (section 7): their pids change with every restart.
WRK_PID= R_NGINX_PID= R_HAPROXY_PID= R_PID=
PUSH_PID= # the push section's daemon
EGRESS_PID= # the egress section's daemon
MAIL_PID= # the mail section's daemon
TLS_PID= # the HTTPS section's daemon
XFS_MNT=  # the data-sqlite section's XFS loop mount
PGBENCH_PID= PG_BASE= # the data-pg section's clients and clusters

alive() { # pid: whether it runs (a zombie does not)
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*')' }
  [[ ${stat:0:1} != Z ]]
}

# seconds_since T0: the seconds since T0 (date +%s.%N), three decimals.
seconds_since() { python3 -c "import sys; print(f'{$(date +%s.%N) - float(sys.argv[1]):.3f}')" "$1"; }

stop_pid() { # pid [signal]: the signal (SIGTERM), wait up to 15 s, then SIGKILL
  local pid=$1 sig=${2:-TERM} i
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  [[ -n $WRK_PID ]] && { kill -KILL "$WRK_PID"; wait "$WRK_PID"; } 2>/dev/null
  for pid in "${PIDS[@]}" $R_NGINX_PID $R_HAPROXY_PID; do stop_pid "$pid"; done
  # SIGINT is a daemon's full stop: its instances (the backend nginx processes) and its data
  # plane stop before it exits (SIGTERM would stop the daemon alone).
  [[ -n $R_PID ]] && stop_pid "$R_PID" INT
  [[ -n $TURNOUT_PID ]] && stop_pid "$TURNOUT_PID" INT
  [[ -n ${NS_PID:-} ]] && stop_pid "$NS_PID" INT
  [[ -n $PUSH_PID ]] && stop_pid "$PUSH_PID" INT
  [[ -n $EGRESS_PID ]] && stop_pid "$EGRESS_PID" INT
  [[ -n $MAIL_PID ]] && stop_pid "$MAIL_PID" INT
  [[ -n $TLS_PID ]] && stop_pid "$TLS_PID" INT
  [[ -n $XFS_MNT ]] && umount "$XFS_MNT"
  [[ -n $PGBENCH_PID ]] && stop_pid "$PGBENCH_PID" INT
  # The data-pg section's clusters (their servers detach): an immediate shutdown of each.
  if [[ -n $PG_BASE ]]; then
    for pidfile in "$PG_BASE"/pg/*/postmaster.pid; do
      [[ -f $pidfile ]] && kill -QUIT "$(head -n1 "$pidfile")"
    done
  fi
  $PY reap "$WORK"
  if [[ ${BENCH_KEEP:-0} == 1 || $status -ne 0 ]]; then
    echo "work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_NGINX P_HAPROXY P_CADDY P_NGINX_NAMES <<<"$($PY ports 4)"
# The restarts section's nginx, HAProxy, and its daemon's API and proxy: fixed ports, so the
# daemon started after a kill -9 listens where the killed one did.
read -r P_R_NGINX P_R_HAPROXY P_R_API P_R_HTTP <<<"$($PY ports 4)"

# --- SQLite clone under writes against cp (BENCH_ONLY=data-sqlite) ---------------------------
# One database (two tables and a total that every commit changes together, so a copy of more
# than one commit shows), made once per filesystem. Per run: `cp` of the idle database (WAL
# checkpointed), then Turnout's copy_to and its backup-API fallback, each while a second process
# commits as fast as it can; every copy is checked to be one commit. On an XFS image (root and a
# loop device needed; xfsprogs installed if missing) the same again: copy_file_range reflinks.
data_sqlite_section() {
  local mb=${BENCH_SQLITE_MB:-1024} dir=$WORK/sqlite copier results=$BENCH_DIR/results
  local runs=("$WORK/sqlite-disk.json") machine load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  log "building the sqlite_copy example (release)"
  (cd "$ROOT" && cargo build --release --quiet -p turnout-data --example sqlite_copy)
  copier="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/sqlite_copy"
  mkdir -p "$dir" "$results"
  local fs
  fs=$(findmnt -n -o FSTYPE --target "$dir" 2>/dev/null || stat -f -c %T "$dir")
  log "making a ${mb} MiB SQLite database on $fs"
  python3 "$BENCH_DIR/data_sqlite.py" make "$dir/db.sqlite" "$mb"
  python3 "$BENCH_DIR/data_sqlite.py" run "$dir/db.sqlite" "$copier" 3 "$fs (this disk)" "${runs[0]}"
  rm -rf "$dir"
  XFS_NOTE="not measured"
  if [[ $(id -u) -ne 0 ]]; then
    XFS_NOTE="not measured: a loop mount needs root"
  else
    command -v mkfs.xfs >/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null
    } || true
    truncate -s $((mb * 4 + 1024))M "$WORK/xfs.img"
    mkdir -p "$WORK/xfs"
    if command -v mkfs.xfs >/dev/null && mkfs.xfs -q -m reflink=1 "$WORK/xfs.img" &&
      mount -o loop "$WORK/xfs.img" "$WORK/xfs"; then
      XFS_MNT=$WORK/xfs
      log "making a ${mb} MiB SQLite database on an XFS loop mount"
      python3 "$BENCH_DIR/data_sqlite.py" make "$XFS_MNT/db.sqlite" "$mb"
      runs+=("$WORK/sqlite-xfs.json")
      python3 "$BENCH_DIR/data_sqlite.py" run "$XFS_MNT/db.sqlite" "$copier" 3 \
        "xfs (loop image, reflink=1)" "${runs[1]}"
      umount "$XFS_MNT"
      XFS_MNT=
      XFS_NOTE="measured"
    else
      XFS_NOTE="not measured: mkfs.xfs or the loop mount failed here"
    fi
    rm -f "$WORK/xfs.img"
  fi
  python3 "$BENCH_DIR/data_sqlite.py" report "${runs[@]}" "$results/data-sqlite.md"
  machine="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB"
  {
    echo "XFS: $XFS_NOTE."
    echo
    echo "$machine, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD), load average $load at the start."
  } >>"$results/data-sqlite.md"
  if ((UPDATE_DOCS)); then
    put_doc_section data-sqlite "$results/data-sqlite.md"
  fi
  python3 -c 'import json, sys; json.dump([json.load(open(p)) for p in sys.argv[2:]], open(sys.argv[1], "w"), indent=1)' \
    "$results/data-sqlite.json" "${runs[@]}"
  cat "$results/data-sqlite.md" >&2
}
if [[ $ONLY == data-sqlite ]]; then
  data_sqlite_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/data-sqlite.json and data-sqlite.md" >&2
  exit 0
fi

# --- SQLite backups (run by BENCH_ONLY=backup-sqlite alone) ---------------------------------
# A ~1 GiB database shaped like an app's (bench/backup_sqlite.py: rows of text that compress as
# real rows do), then, with crates/data's sqlite_backup_bench example (the daemon's own code):
# a first snapshot into an empty repository against `cp` (and `cp` + `sync`, as durable as the
# snapshot), a second snapshot after 0.1 % of the pages changed (what page-level deduplication
# saves), a restore against `cp` back; then a day of minute-level snapshots under the
# exponential schedule with 0.1 % of the pages changed per minute, and what the repository
# costs on disk at the end beside the database's size (target: at most 1.5x).
backup_sqlite_section() {
  local mb=${BENCH_SQLITE_MB:-1024} minutes=${BENCH_BACKUP_MINUTES:-1440} dir=$WORK/backup-sqlite
  local tool results=$BENCH_DIR/results t0 load
  [[ $minutes =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_BACKUP_MINUTES must be a positive integer" >&2; exit 2; }
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  log "building the sqlite_backup_bench example (release)"
  (cd "$ROOT" && cargo build --release --quiet -p turnout-data --example sqlite_backup_bench)
  tool="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/sqlite_backup_bench"
  mkdir -p "$dir" "$results"
  log "making a ${mb} MiB SQLite database"
  python3 "$BENCH_DIR/backup_sqlite.py" make "$dir/db.sqlite" "$mb"
  sync
  local out=$dir/figures.tsv
  : >"$out"
  log "cp, cp + sync"
  t0=$(date +%s.%N); cp "$dir/db.sqlite" "$dir/cp.sqlite"
  printf 'cp\t%s\n' "$(seconds_since "$t0")" >>"$out"
  rm -f "$dir/cp.sqlite"; sync
  t0=$(date +%s.%N); cp "$dir/db.sqlite" "$dir/cp.sqlite"; sync "$dir/cp.sqlite"
  printf 'cp-sync\t%s\n' "$(seconds_since "$t0")" >>"$out"
  rm -f "$dir/cp.sqlite"
  log "Turnout: first snapshot, then a second after 0.1 % of the pages changed"
  printf 'snapshot-1\t%s\n' "$("$tool" snapshot "$dir/db.sqlite" "$dir/repo" first)" >>"$out"
  "$tool" day "$dir/db.sqlite" "$dir/scratch-repo" 1 1 >/dev/null # one minute of changes
  rm -rf "$dir/scratch-repo"
  printf 'snapshot-2\t%s\n' "$("$tool" snapshot "$dir/db.sqlite" "$dir/repo" second)" >>"$out"
  log "Turnout: restore of the first snapshot"
  printf 'restore\t%s\n' "$("$tool" restore "$dir/repo" first "$dir/restored.sqlite")" >>"$out"
  rm -rf "$dir/repo" "$dir/restored.sqlite" "$dir/restored.storage"
  log "a day ($minutes minutes) of snapshots, 0.1 % of the pages changed per minute"
  printf 'day\t%s\n' "$("$tool" day "$dir/db.sqlite" "$dir/day-repo" "$minutes" 1)" >>"$out"
  python3 - "$out" "$results/backup-sqlite.json" "$results/backup-sqlite.md" <<'PYEOF'
import json, os, platform, sys
tsv, out_json, out_md = sys.argv[1:4]
rows = {}
for line in open(tsv):
    key, value = line.rstrip("\n").split("\t", 1)
    rows[key] = json.loads(value) if value.startswith("{") else {"seconds": float(value)}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows["machine"] = f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"
json.dump(rows, open(out_json, "w"), indent=1)
s = lambda k: rows[k]["seconds"]
mib = lambda b: f"{b / 2**20:,.1f}"
s1, s2, day = rows["snapshot-1"], rows["snapshot-2"], rows["day"]
lines = [f"Database: {mib(s1['logical_bytes'])} MiB of text rows ({rows['machine']}).", "",
         "| Operation | Time (s) | Stored (MiB) | Against |", "|---|---:|---:|---|",
         f"| Turnout snapshot, first (pages hashed, compressed, stored) | {s('snapshot-1'):.2f} | {mib(s1['stored_bytes'])} | {s('snapshot-1') / s('cp'):.2f}× `cp`, {s('snapshot-1') / s('cp-sync'):.2f}× `cp` + `sync` |",
         f"| Turnout snapshot, second (0.1 % of the pages changed) | {s('snapshot-2'):.2f} | {mib(s2['stored_bytes'])} | {s2['new_chunks']:,} new chunks of {s2['chunks']:,} |",
         f"| Turnout restore (every chunk checked) | {s('restore'):.2f} | — | {s('restore') / s('cp'):.2f}× `cp`, {s('restore') / s('cp-sync'):.2f}× `cp` + `sync` |",
         f"| `cp` | {s('cp'):.2f} | {mib(s1['logical_bytes'])} | — |",
         f"| `cp` + `sync` | {s('cp-sync'):.2f} | {mib(s1['logical_bytes'])} | — |",
         "", f"A day of minute-level snapshots ({day['minutes']} minutes, {day['pages_changed_per_minute']:,} of "
         f"{day['pages']:,} pages changed per minute, the exponential schedule's retention): the "
         f"repository holds {day['snapshots_kept']} snapshots in {mib(day['repo_disk_bytes'])} MiB on disk, "
         f"**{day['ratio']:.2f}×** the database's {mib(day['db_bytes'])} MiB (target: at most 1.5×)."]
open(out_md, "w").write("\n".join(lines) + "\n")
PYEOF
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD), load average $load at the start." >>"$results/backup-sqlite.md"
  rm -rf "$dir"
  ((UPDATE_DOCS)) && put_doc_section backup-sqlite "$results/backup-sqlite.md"
  cat "$results/backup-sqlite.md" >&2
}
if [[ $ONLY == backup-sqlite ]]; then
  backup_sqlite_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/backup-sqlite.json and backup-sqlite.md" >&2
  exit 0
fi
# --- push to live (run by BENCH_ONLY=push alone, and at the end of a full run) ----------------
# A daemon of its own; the example app (examples/hello) from a repository of its own, its
# environment hello/qa deploying on push; each run commits a new message.txt, and the time runs
# from the start of `git push` to the new message answering at qa.hello.localhost through the
# proxy (push, receive-pack, the deploy job: fetch, checkout, build, launch, health, go-live).
push_section() {
  log "push to live: $PUSHES pushes of the example app"
  local home=$WORK/home-push repo=$WORK/push-repo flags=() api proxy token
  [[ $(id -u) -eq 0 ]] || flags=(--single-user)
  TURNOUT_LOG=warn "$TURNOUT" --json serve --home "$home" --api-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 "${flags[@]}" >"$WORK/serve-push.out" 2>"$WORK/serve-push.log" &
  PUSH_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -s $WORK/serve-push.out ]] && break
    kill -0 "$PUSH_PID" 2>/dev/null || { cat "$WORK/serve-push.log" >&2; exit 1; }
    sleep 0.1
  done
  head -n1 "$WORK/serve-push.out" >"$WORK/serve-push.json"
  api=$($PY field "$WORK/serve-push.json" api)
  proxy=$($PY field "$WORK/serve-push.json" http)
  token=$(<"$home/admin.token")
  mkdir -p "$repo"
  cp -r "$ROOT/examples/hello/." "$repo/"
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -q -m "example app"
  TURNOUT_TOKEN=$token "$TURNOUT" --api "$api" app create hello --repo "$repo" >/dev/null
  TURNOUT_TOKEN=$token "$TURNOUT" --api "$api" env create hello/qa --branch main --tier test \
    --deploy-on push >/dev/null
  # The first push deploys too (the first build, a cold start): it is not timed.
  git -C "$repo" push -q "http://bench:$token@${api#http://}/git/hello.git" main 2>"$WORK/push-first.log" || {
    cat "$WORK/push-first.log" >&2; exit 1; }
  $PY wait "$proxy" qa.hello.localhost "" 120
  mkdir -p "$BENCH_DIR/results"
  $PY push "$repo" "http://bench:$token@${api#http://}/git/hello.git" "$proxy" qa.hello.localhost \
    "$PUSHES" "$BENCH_DIR/results/push.json" "$BENCH_DIR/results/push.md"
  stop_pid "$PUSH_PID" INT
  PUSH_PID=
  cat "$BENCH_DIR/results/push.md" >&2
}
if [[ $ONLY == push ]]; then
  push_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/push.json and push.md" >&2
  exit 0
fi

# --- PostgreSQL copies (run by BENCH_ONLY=data-pg alone) -------------------------------------
# A Turnout cluster (`pg_clone init`, the same code as the daemon's) holding pgbench's tables at
# scale PG_SCALE (~15 MB each: 135 is ~2 GB), pgbench clients writing to it (4 clients, 200
# transactions/s in all) while it is copied PG_REPS times by each method:
# - turnout: `pg_clone clone` (Cluster::clone_from: a file copy of the live cluster between
#   pg_backup_start and pg_backup_stop into a new one, then roles, passwords, subscriptions fixed
#   and the copy started), clients writing;
# - dump-restore: `pg_dump -Fc | pg_restore` into a fresh database of the same cluster, clients
#   writing (pg_dump takes a snapshot and blocks no writer either);
# - template: CREATE DATABASE ... TEMPLATE (default strategy, WAL_LOG in 15) and
#   STRATEGY FILE_COPY, with the clients stopped: it refuses a source anyone is connected to.
# Whether any pgbench client errored or was disconnected during Turnout's clones: pgbench's own
# error lines, and the same backend pids in pg_stat_activity before and after each clone.
# pg_bench_cluster TOOL: a Turnout cluster `src` made by TOOL's `init` (pg_clone or
# pg_backup_bench: the daemon's own code) under $WORK/pg, loaded with pgbench's tables at scale
# PG_SCALE; sets PG_BIN, PG_PORT, PG_SOCK, PG_SIZE and the helpers below.
pg_bench_cluster() {
  local tool=$1 t0
  local base=$WORK/pg
  chmod 711 "$WORK"
  mkdir -p "$base"
  export TURNOUT_BENCH_SUPER_PASSWORD="bench-super-$RANDOM$RANDOM"
  export TURNOUT_BENCH_APP_PASSWORD="bench-app-$RANDOM$RANDOM"
  read -r PG_PORT PG_COPY_PORT <<<"$($PY ports 2)"
  PG_BASE=$base
  "$tool" init "$base" src "$PG_PORT"
  PG_BIN=$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")")
  PG_SOCK=$base/pgsock/src
  log "loading pgbench data (scale $PG_SCALE)"
  t0=$(date +%s.%N)
  pg_app "$PG_BIN/pgbench" -i -q -s "$PG_SCALE" -I dtGvp -h 127.0.0.1 -p "$PG_PORT" -U src src \
    >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; exit 1; }
  PG_SIZE=$(psql_su -c "SELECT pg_database_size('src')")
  echo "loaded $((PG_SIZE >> 20)) MiB in $(python3 -c "print(round($(date +%s.%N) - $t0))") s" >&2
}
pg_app() { PGPASSWORD="$TURNOUT_BENCH_APP_PASSWORD" "$@"; }
pg_su() { PGPASSWORD="$TURNOUT_BENCH_SUPER_PASSWORD" "$@"; }
psql_su() { pg_su "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U turnout -d postgres -At "$@"; }
# pgbench clients writing to src (4 clients, 200 transactions/s in all) until stopped.
start_writers() {
  local i
  pg_app "$PG_BIN/pgbench" -n -c 4 -j 2 -R 200 -T 36000 -P 5 -h 127.0.0.1 -p "$PG_PORT" -U src src \
    >"$WORK/pgbench-run.log" 2>&1 &
  PGBENCH_PID=$!
  for ((i = 0; i < 100; i++)); do
    [[ $(psql_su -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = 'src'") == 4 ]] && return
    sleep 0.1
  done
  echo "error: pgbench clients did not connect" >&2; cat "$WORK/pgbench-run.log" >&2; exit 1
}
backend_pids() { psql_su -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = 'src'"; }

data_pg_section() {
  log "PostgreSQL copies: pgbench scale $PG_SCALE, $PG_REPS runs of each method"
  local base=$WORK/pg t0 out i pids_before pids_after errors=0
  pg_bench_cluster "$PG_CLONE"
  local port=$PG_PORT copy_port=$PG_COPY_PORT bin=$PG_BIN sock=$PG_SOCK size=$PG_SIZE
  local su=(env PGPASSWORD="$TURNOUT_BENCH_SUPER_PASSWORD")

  local results=$WORK/data-pg.tsv
  : >"$results"
  start_writers
  for ((i = 1; i <= PG_REPS; i++)); do
    log "turnout clone $i/$PG_REPS (pgbench writing)"
    pids_before=$(backend_pids)
    local lines_before
    lines_before=$(grep -c -E 'error|abort' "$WORK/pgbench-run.log" || true)
    out=$("$PG_CLONE" clone "$base" src "$port" "copy$i" "$copy_port")
    pids_after=$(backend_pids)
    local new_errors
    new_errors=$(( $(grep -c -E 'error|abort' "$WORK/pgbench-run.log" || true) - lines_before ))
    alive "$PGBENCH_PID" || new_errors=$((new_errors + 1))
    [[ $pids_before == "$pids_after" ]] || new_errors=$((new_errors + 1))
    errors=$((errors + new_errors))
    echo "turnout clone: $out s (client errors or disconnects: $new_errors)" >&2
    printf 'turnout\t%s\n' "$out" >>"$results"
    "$PG_CLONE" remove "$base" "copy$i" "$copy_port"
  done
  for ((i = 1; i <= PG_REPS; i++)); do
    log "pg_dump -Fc | pg_restore $i/$PG_REPS (pgbench writing)"
    psql_su -c "CREATE DATABASE restore$i"
    t0=$(date +%s.%N)
    "${su[@]}" "$bin/pg_dump" -Fc -h "$sock" -p "$port" -U turnout src \
      | "${su[@]}" "$bin/pg_restore" -h "$sock" -p "$port" -U turnout -d "restore$i"
    t1=$(date +%s.%N)
    out=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    echo "dump | restore: $out s" >&2
    printf 'dump-restore\t%s\n' "$out" >>"$results"
    psql_su -c "DROP DATABASE restore$i"
  done
  stop_pid "$PGBENCH_PID" INT
  PGBENCH_PID=
  grep -E 'error|abort' "$WORK/pgbench-run.log" >&2 || true
  for strategy in default file_copy; do
    for ((i = 1; i <= PG_REPS; i++)); do
      log "CREATE DATABASE ... TEMPLATE ($strategy) $i/$PG_REPS (clients stopped)"
      local with=""
      [[ $strategy == file_copy ]] && with=" STRATEGY FILE_COPY"
      t0=$(date +%s.%N)
      psql_su -c "CREATE DATABASE tmpl$i TEMPLATE src$with"
      t1=$(date +%s.%N)
      out=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
      echo "template ($strategy): $out s" >&2
      printf 'template-%s\t%s\n' "$strategy" "$out" >>"$results"
      psql_su -c "DROP DATABASE tmpl$i"
    done
  done
  "$PG_CLONE" remove "$base" src "$port"
  PG_BASE=
  mkdir -p "$BENCH_DIR/results"
  python3 - "$results" "$size" "$PG_SCALE" "$errors" "$("$bin/postgres" --version)" \
    "$BENCH_DIR/results/data-pg.json" "$BENCH_DIR/results/data-pg.md" <<'PYEOF'
import json, platform, statistics, sys, os
tsv, size, scale, errors, version, out_json, out_md = sys.argv[1:8]
runs = {}
for line in open(tsv):
    method, secs = line.split("\t")
    runs.setdefault(method, []).append(float(secs))
med = {m: statistics.median(v) for m, v in runs.items()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
summary = {"database_bytes": int(size), "pgbench_scale": int(scale), "runs": runs, "median_s": med,
           "client_errors_during_turnout_clone": int(errors), "postgres": version.strip(),
           "machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"}
json.dump(summary, open(out_json, "w"), indent=1)
names = {"turnout": "Turnout clone (file copy under pg_backup_start, clients writing)",
         "dump-restore": "pg_dump -Fc \\| pg_restore (clients writing)",
         "template-default": "CREATE DATABASE … TEMPLATE (WAL_LOG, clients stopped)",
         "template-file_copy": "CREATE DATABASE … TEMPLATE STRATEGY FILE_COPY (clients stopped)"}
lines = [f"Database: {int(size) / 2**30:.2f} GiB (pgbench scale {scale}), {summary['postgres']}, "
         f"{summary['machine']}.", "",
         "| Method | Median (s) | Runs (s) | Turnout is faster by |", "|---|---:|---:|---:|"]
for m in ["turnout", "dump-restore", "template-default", "template-file_copy"]:
    if m in med:
        ratio = "—" if m == "turnout" else f"{med[m] / med['turnout']:.1f}×"
        lines.append(f"| {names[m]} | {med[m]:.1f} | {', '.join(f'{x:.1f}' for x in runs[m])} | {ratio} |")
lines += ["", f"pgbench clients that errored or were disconnected during Turnout's clones: {errors} "
          "(4 clients, 200 transactions/s, the same backends before and after each clone)."]
open(out_md, "w").write("\n".join(lines) + "\n")
PYEOF
  cat "$BENCH_DIR/results/data-pg.md" >&2
}
if [[ $ONLY == data-pg ]]; then
  data_pg_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/data-pg.json and data-pg.md" >&2
  exit 0
fi
# --- PostgreSQL backups (run by BENCH_ONLY=backup-pg alone) ---------------------------------
# The same ~2 GB pgbench database in a Turnout cluster that archives its WAL, pgbench clients
# writing while it is backed up by each method, one run each:
# - turnout: `pg_backup_bench snapshot` (Cluster::snapshot_into: the live cluster's files read
#   between pg_backup_start and pg_backup_stop into the repository as 8 KiB chunks, blake3 and
#   zstd; then the WAL flushed and ingested), a first (full) and a second (deduplicated) one;
# - pg_basebackup -Fp -X stream -c fast (a plain copy of the files and the WAL it needs);
# - pg_dump -Fc (a logical dump, compressed).
# Restores with the clients stopped: Turnout's `restore` (a new cluster from the first snapshot,
# recovered to the end of the backup, made safe and started) against pg_restore -j 2 of the dump
# into a fresh database (and the cluster restarted once from the base backup copy: cp -a of
# pg_basebackup's output and pg_ctl start, PostgreSQL's own restore of a physical backup).
backup_pg_section() {
  log "PostgreSQL backups: pgbench scale $PG_SCALE"
  local base=$WORK/pg repo=$WORK/repo results=$WORK/backup-pg.tsv t0 out
  pg_bench_cluster "$PG_BACKUP"
  : >"$results"
  start_writers
  for i in 1 2; do
    log "turnout snapshot $i (pgbench writing)"
    out=$("$PG_BACKUP" snapshot "$base" src "$PG_PORT" "$repo" "b$i")
    printf 'turnout-snapshot-%s\t%s\t%s\n' "$i" "$out" "$(du -sb "$repo" | cut -f1)" >>"$results"
  done
  log "pg_basebackup (pgbench writing)"
  t0=$(date +%s.%N)
  pg_su "$PG_BIN/pg_basebackup" -D "$WORK/basebackup" -Fp -X stream -c fast -h "$PG_SOCK" -p "$PG_PORT" -U turnout
  printf 'pg_basebackup\t%s\t%s\n' "$(seconds_since "$t0")" "$(du -sb "$WORK/basebackup" | cut -f1)" >>"$results"
  log "pg_dump -Fc (pgbench writing)"
  t0=$(date +%s.%N)
  pg_su "$PG_BIN/pg_dump" -Fc -h "$PG_SOCK" -p "$PG_PORT" -U turnout -f "$WORK/src.dump" src
  printf 'pg_dump\t%s\t%s\n' "$(seconds_since "$t0")" "$(stat -c %s "$WORK/src.dump")" >>"$results"
  stop_pid "$PGBENCH_PID" INT
  PGBENCH_PID=
  log "turnout restore of snapshot 1"
  out=$("$PG_BACKUP" restore "$base" src "$PG_PORT" "$repo" b1 copy "$PG_COPY_PORT")
  printf 'turnout-restore\t%s\t\n' "$out" >>"$results"
  "$PG_BACKUP" remove "$base" copy "$PG_COPY_PORT"
  log "pg_restore -j 2 into a fresh database"
  psql_su -c "CREATE DATABASE restored"
  t0=$(date +%s.%N)
  pg_su "$PG_BIN/pg_restore" -j 2 -h "$PG_SOCK" -p "$PG_PORT" -U turnout -d restored "$WORK/src.dump"
  printf 'pg_restore\t%s\t\n' "$(seconds_since "$t0")" >>"$results"
  psql_su -c "DROP DATABASE restored"
  "$PG_BACKUP" remove "$base" src "$PG_PORT"
  PG_BASE=
  mkdir -p "$BENCH_DIR/results"
  python3 - "$results" "$PG_SIZE" "$PG_SCALE" "$("$PG_BIN/postgres" --version)" \
    "$BENCH_DIR/results/backup-pg.json" "$BENCH_DIR/results/backup-pg.md" <<'PYEOF'
import json, os, platform, sys
tsv, size, scale, version, out_json, out_md = sys.argv[1:7]
rows = {}
for line in open(tsv):
    method, secs, stored = line.rstrip("\n").split("\t")
    rows[method] = {"s": float(secs), "bytes": int(stored) if stored else None}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
machine = f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"
json.dump({"database_bytes": int(size), "pgbench_scale": int(scale), "postgres": version.strip(),
           "machine": machine, "runs": rows}, open(out_json, "w"), indent=1)
mib = lambda b: "—" if b is None else f"{b / 2**20:,.0f}"
t = lambda m: rows[m]["s"]
snap2_bytes = rows["turnout-snapshot-2"]["bytes"] - rows["turnout-snapshot-1"]["bytes"]
lines = [f"Database: {int(size) / 2**30:.2f} GiB (pgbench scale {scale}), {version.strip()}, {machine}.", "",
         "| Backup (pgbench writing) | Time (s) | On disk (MiB) | Turnout is faster by |", "|---|---:|---:|---:|",
         f"| Turnout snapshot, first (base backup into the repository, WAL ingested) | {t('turnout-snapshot-1'):.1f} | {mib(rows['turnout-snapshot-1']['bytes'])} | — |",
         f"| Turnout snapshot, second (deduplicated against the first) | {t('turnout-snapshot-2'):.1f} | +{mib(snap2_bytes)} | — |",
         f"| pg_basebackup -Fp -X stream | {t('pg_basebackup'):.1f} | {mib(rows['pg_basebackup']['bytes'])} | {t('pg_basebackup') / t('turnout-snapshot-1'):.2f}× |",
         f"| pg_dump -Fc | {t('pg_dump'):.1f} | {mib(rows['pg_dump']['bytes'])} | {t('pg_dump') / t('turnout-snapshot-1'):.2f}× |",
         "", "| Restore (clients stopped) | Time (s) | Turnout is faster by |", "|---|---:|---:|",
         f"| Turnout restore (files and WAL from the repository, recovery, made safe, started) | {t('turnout-restore'):.1f} | — |",
         f"| pg_restore -j 2 of the pg_dump -Fc file | {t('pg_restore'):.1f} | {t('pg_restore') / t('turnout-restore'):.2f}× |"]
open(out_md, "w").write("\n".join(lines) + "\n")
PYEOF
  {
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD)."
  } >>"$BENCH_DIR/results/backup-pg.md"
  ((UPDATE_DOCS)) && put_doc_section backup-pg "$BENCH_DIR/results/backup-pg.md"
  cat "$BENCH_DIR/results/backup-pg.md" >&2
}
if [[ $ONLY == backup-pg ]]; then
  backup_pg_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/backup-pg.json and backup-pg.md" >&2
  exit 0
fi

# --- the egress proxy against tinyproxy and no proxy (run by BENCH_ONLY=egress alone) --------
# A daemon of its own (as section 3's: --shared-network, so the backend is on this host's
# loopback), the benchmark backend (bench/backend) as bench/prod, and the probe app
# (bench/egress) as probe/staging, whose instance answers the HTTP_PROXY Turnout gave it: the
# proxy URL with that environment's own user (probe.staging) and password. staging's policy:
# deny, with the backend's exact address on the allow-list (a loopback address passes only so).
# tinyproxy on free ports with Basic authentication too (BasicAuth), twice: its log at Info (as
# Debian ships it: a few lines per request, each fsync'ed), and at Warning (no line per request);
# Turnout logs every request (batched into its store, as shipped). Then,
# interleaved, wrk through each target to the backend (absolute-form requests,
# bench/wrk_proxy.lua), with kept connections and with Connection: close; and CONNECT tunnels
# timed one at a time by bench/egress.py. Not part of a full run.
egress_section() {
  local rounds=${BENCH_EGRESS_ROUNDS:-3} duration=${BENCH_EGRESS_DURATION:-4s}
  local iterations=${BENCH_EGRESS_TUNNELS:-1000} home=$WORK/home-egress flags=() api proxy token
  local egress_py="python3 $BENCH_DIR/egress.py" repo=$WORK/egress-repos load i
  [[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_EGRESS_ROUNDS must be a positive integer" >&2; exit 2; }
  [[ $iterations =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_EGRESS_TUNNELS must be a positive integer" >&2; exit 2; }
  [[ $duration =~ ^[1-9][0-9]*s$ ]] || { echo "error: BENCH_EGRESS_DURATION must be seconds, e.g. 5s" >&2; exit 2; }
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  [[ $(id -u) -eq 0 ]] || flags=(--single-user)
  log "egress: starting turnout serve"
  TURNOUT_LOG=warn "$TURNOUT" --json serve --home "$home" --api-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --shared-network --proxy-workers 1 "${flags[@]}" \
    >"$WORK/serve-egress.out" 2>"$WORK/serve-egress.log" &
  EGRESS_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -s $WORK/serve-egress.out ]] && break
    kill -0 "$EGRESS_PID" 2>/dev/null || { cat "$WORK/serve-egress.log" >&2; exit 1; }
    sleep 0.1
  done
  head -n1 "$WORK/serve-egress.out" >"$WORK/serve-egress.json"
  api=$($PY field "$WORK/serve-egress.json" api)
  proxy=$($PY field "$WORK/serve-egress.json" http)
  token=$(<"$home/admin.token")
  TE() { TURNOUT_TOKEN=$token "$TURNOUT" --api "$api" "$@"; }
  local app
  for app in bench probe; do
    mkdir -p "$repo/$app"
    if [[ $app == bench ]]; then
      cp "$BENCH_DIR/backend/turnout.toml" "$BENCH_DIR/backend/backend.conf.in" "$repo/$app/"
    else
      cp "$BENCH_DIR/egress/turnout.toml" "$BENCH_DIR/egress/probe.py" "$repo/$app/"
    fi
    git -C "$repo/$app" init -q -b main
    git -C "$repo/$app" add -A
    git -C "$repo/$app" -c user.name=bench -c user.email=bench@localhost commit -q -m "$app"
    TE app create "$app" --repo "$repo/$app" >/dev/null
  done
  log "egress: deploying bench/prod (the backend) and probe/staging (the probe app)"
  TE env create bench/prod --branch main --tier production >/dev/null
  TE deploy bench/prod >"$WORK/deploy-egress-bench.log" 2>&1 || { cat "$WORK/deploy-egress-bench.log" >&2; exit 1; }
  TE --json env show bench/prod >"$WORK/env-egress-bench.json"
  local backend_port backend_pids origin
  backend_port=$($PY field "$WORK/env-egress-bench.json" instance.port)
  backend_pids=$($PY pids "$($PY field "$WORK/env-egress-bench.json" instance.pid)")
  origin=http://127.0.0.1:$backend_port
  TE env create probe/staging --branch main --tier staging >/dev/null
  TE egress policy probe --tier staging --mode deny --allow-host "127.0.0.1:$backend_port" >/dev/null
  TE deploy probe/staging >"$WORK/deploy-egress-probe.log" 2>&1 || { cat "$WORK/deploy-egress-probe.log" >&2; exit 1; }
  $PY wait "$proxy" staging.probe.localhost up 30
  local turnout_url
  turnout_url=$($egress_py proxy-url "$proxy" staging.probe.localhost)
  echo "probe/staging's HTTP_PROXY: http://probe.staging:…@${turnout_url##*@}" >&2

  # Two tinyproxy processes: as Debian ships it (LogLevel Info: a few lines per request, each
  # written and fsync'ed), and with only warnings logged (no line per request).
  log "egress: starting tinyproxy (LogLevel Info, and LogLevel Warning)"
  local tp_password name level port
  local -A url=([direct]=-) cpu=([direct]=)
  tp_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  for name in tinyproxy tinyproxy-quiet; do
    level=Info
    [[ $name == tinyproxy-quiet ]] && level=Warning
    local tp=$WORK/$name
    mkdir -p "$tp"
    port=$($PY ports 1)
    cat >"$tp/tinyproxy.conf" <<EOF
# Written by bench/run.sh (egress section): tinyproxy on 127.0.0.1 with Basic authentication,
# its log at $level in a file, no Via header (Turnout adds none).
Port $port
Listen 127.0.0.1
Timeout 600
MaxClients 1024
Allow 127.0.0.1
BasicAuth bench $tp_password
DisableViaHeader Yes
LogFile "$tp/tinyproxy.log"
LogLevel $level
PidFile "$tp/tinyproxy.pid"
EOF
    tinyproxy -d -c "$tp/tinyproxy.conf" >"$tp/stdout.log" 2>&1 &
    cpu[$name]=$!
    PIDS+=("${cpu[$name]}")
    for ((i = 0; i < 100; i++)); do
      python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
        "$port" 2>/dev/null && break
      alive "${cpu[$name]}" || { cat "$tp/stdout.log" >&2; exit 1; }
      sleep 0.05
    done
    url[$name]=http://bench:$tp_password@127.0.0.1:$port
  done
  url[turnout]=$turnout_url
  cpu[turnout]=$EGRESS_PID

  local target mode round targets=(turnout tinyproxy tinyproxy-quiet direct)
  for target in "${targets[@]}"; do
    $egress_py check "$target" "${url[$target]}" "$origin" "hello from prod"
  done

  : >"$WORK/egress-wrk.jsonl"
  for mode in keep-alive close; do
    log "egress: plain HTTP ($mode), warm-up 1 s per target"
    for target in "${targets[@]}"; do
      $egress_py wrk "$target" "$mode" "${url[$target]}" "$origin" "$CONNECTIONS" 1s \
        "$BENCH_DIR/wrk_proxy.lua" - "${cpu[$target]}" "${backend_pids// /,}"
    done
    for ((round = 1; round <= rounds; round++)); do
      log "egress: plain HTTP ($mode), round $round of $rounds: wrk -t1 -c$CONNECTIONS -d$duration per target"
      for target in "${targets[@]}"; do
        $egress_py wrk "$target" "$mode" "${url[$target]}" "$origin" "$CONNECTIONS" "$duration" \
          "$BENCH_DIR/wrk_proxy.lua" "$WORK/egress-wrk.jsonl" "${cpu[$target]}" "${backend_pids// /,}"
      done
    done
  done
  log "egress: CONNECT tunnels, $iterations per target"
  $egress_py tunnels "$iterations" "$WORK/egress-tunnels.json" "$origin" \
    "turnout=${url[turnout]}" "tinyproxy=${url[tinyproxy]}" \
    "tinyproxy-quiet=${url[tinyproxy-quiet]}" "direct=-"

  # Turnout's log of the run: how many records it holds, and how many it dropped (the writer
  # says so at warn level when its queue was full).
  sleep 1 # the last batch
  local logged dropped
  logged=$(TE --json egress log probe/staging --limit 10000 |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d["entries"]))')
  dropped=$(python3 -c '
import re, sys
print(sum(int(n) for n in re.findall(r"dropped\D{0,3}(\d+)", open(sys.argv[1]).read())))' \
    "$WORK/serve-egress.log")
  mkdir -p "$BENCH_DIR/results"
  python3 "$BENCH_DIR/egress.py" meta "$WORK/egress-meta.json" "$TURNOUT" "$ROOT" "$rounds" \
    "$duration" "$iterations" "$CONNECTIONS" "$load" "$logged" "$dropped"
  $egress_py report "$WORK" "$BENCH_DIR/results/egress.json" "$BENCH_DIR/results/egress.md"
  stop_pid "${cpu[tinyproxy]}"
  stop_pid "${cpu[tinyproxy-quiet]}"
  PIDS=("${PIDS[@]:0:${#PIDS[@]}-2}") # the two tinyproxy processes, stopped
  stop_pid "$EGRESS_PID" INT
  EGRESS_PID=
  if ((UPDATE_DOCS)); then
    put_doc_section egress "$BENCH_DIR/results/egress.md"
  fi
  cat "$BENCH_DIR/results/egress.md" >&2
}
if [[ $ONLY == egress ]]; then
  egress_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/egress.json and egress.md" >&2
  exit 0
fi

# --- the mail catcher against MailDev and smtp-sink (run by BENCH_ONLY=mail alone) ------------
# A daemon of its own (home WORK/home-mail, as the egress section's) with the probe app
# (bench/egress) as probe/staging, whose instance answers the SMTP_URL Turnout gave it: the
# catcher's port with that environment's own user (probe.staging) and password. Beside it on
# free ports: MailDev (npm; installed into WORK/maildev when no `maildev` is on PATH) twice, as
# it starts by default (messages in memory) and with --mail-directory (a file per message,
# kept across restarts as Turnout's are), and Postfix's smtp-sink (accepts and discards: the
# ceiling for the SMTP conversation). bench/mail.py loads each in turn, interleaved: 2 KiB
# messages on 1 and 8 connections, then the latency of 2 KiB and 1 MiB messages on one; then
# checks what each target holds against what it was sent. Not part of a full run.
mail_section() {
  local rounds=${BENCH_MAIL_ROUNDS:-3} duration=${BENCH_MAIL_DURATION:-3s}
  local small=${BENCH_MAIL_LATENCY:-300} big=${BENCH_MAIL_BIG:-40}
  local home=$WORK/home-mail flags=() api proxy token load i
  local mail_py="python3 $BENCH_DIR/mail.py" repo=$WORK/mail-repo
  for knob in rounds small big; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_MAIL_ROUNDS, BENCH_MAIL_LATENCY and BENCH_MAIL_BIG must be positive integers" >&2; exit 2; }
  done
  [[ $duration =~ ^[1-9][0-9]*s$ ]] || { echo "error: BENCH_MAIL_DURATION must be seconds, e.g. 3s" >&2; exit 2; }
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  # Postfix itself: installed above only for smtp-sink; it must not run as this host's MTA.
  local postfix_note="Postfix was installed already; its service was left as it was."
  if ((MAIL_INSTALLED_POSTFIX)); then
    postfix_note="Postfix was installed by this run for smtp-sink; its service was not running after the install."
    if postfix status >/dev/null 2>&1; then
      log "mail: stopping the postfix service the install started (smtp-sink is all this needs)"
      postfix stop >/dev/null 2>&1 || service postfix stop >/dev/null 2>&1 || true
      postfix_note="Postfix was installed by this run for smtp-sink; the install started its service, which this run stopped."
    fi
  fi

  local maildev_bin maildev_version
  if maildev_bin=$(command -v maildev); then
    :
  else
    log "mail: installing MailDev (npm install --prefix WORK/maildev maildev)"
    mkdir -p "$WORK/maildev"
    # From /: npm takes an argument naming a directory that exists in its working directory
    # as that local package.
    (cd / && npm install --prefix "$WORK/maildev" --no-audit --no-fund --loglevel=error maildev \
      >"$WORK/npm-maildev.log" 2>&1) || { cat "$WORK/npm-maildev.log" >&2; exit 1; }
    maildev_bin=$WORK/maildev/node_modules/.bin/maildev
  fi
  maildev_version=$("$maildev_bin" --version 2>/dev/null | head -n1)

  [[ $(id -u) -eq 0 ]] || flags=(--single-user)
  log "mail: starting turnout serve"
  TURNOUT_LOG=warn "$TURNOUT" --json serve --home "$home" --api-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --smtp-listen 127.0.0.1:0 --shared-network --proxy-workers 1 \
    "${flags[@]}" >"$WORK/serve-mail.out" 2>"$WORK/serve-mail.log" &
  MAIL_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -s $WORK/serve-mail.out ]] && break
    kill -0 "$MAIL_PID" 2>/dev/null || { cat "$WORK/serve-mail.log" >&2; exit 1; }
    sleep 0.1
  done
  head -n1 "$WORK/serve-mail.out" >"$WORK/serve-mail.json"
  api=$($PY field "$WORK/serve-mail.json" api)
  proxy=$($PY field "$WORK/serve-mail.json" http)
  token=$(<"$home/admin.token")
  TM() { TURNOUT_TOKEN=$token "$TURNOUT" --api "$api" "$@"; }
  mkdir -p "$repo"
  cp "$BENCH_DIR/egress/turnout.toml" "$BENCH_DIR/egress/probe.py" "$repo/"
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -q -m probe
  TM app create probe --repo "$repo" >/dev/null
  log "mail: deploying probe/staging (the probe app)"
  TM env create probe/staging --branch main --tier staging >/dev/null
  TM deploy probe/staging >"$WORK/deploy-mail-probe.log" 2>&1 || { cat "$WORK/deploy-mail-probe.log" >&2; exit 1; }
  $PY wait "$proxy" staging.probe.localhost up 30
  local turnout_url
  turnout_url=$($mail_py smtp-url "$proxy" staging.probe.localhost)
  echo "probe/staging's SMTP_URL: smtp://probe.staging:…@${turnout_url##*@}" >&2

  log "mail: starting MailDev (in memory, and with --mail-directory) and smtp-sink"
  local name port web
  local -A url=([turnout]=$turnout_url) cpu=([turnout]=$MAIL_PID) webport=()
  for name in maildev maildev-disk; do
    read -r port web <<<"$($PY ports 2)"
    local extra=()
    [[ $name == maildev-disk ]] && { mkdir -p "$WORK/maildev-mail"; extra=(--mail-directory "$WORK/maildev-mail"); }
    "$maildev_bin" --smtp "$port" --ip 127.0.0.1 --web "$web" --web-ip 127.0.0.1 --silent \
      "${extra[@]}" >"$WORK/$name.log" 2>&1 &
    cpu[$name]=$!
    PIDS+=("${cpu[$name]}")
    url[$name]=smtp://127.0.0.1:$port
    webport[$name]=$web
  done
  port=$($PY ports 1)
  local sink_user=()
  [[ $(id -u) -eq 0 ]] && sink_user=(-u nobody) # smtp-sink refuses to keep root's privileges
  smtp-sink "${sink_user[@]}" "127.0.0.1:$port" 256 >"$WORK/smtp-sink.log" 2>&1 &
  cpu[smtp-sink]=$!
  PIDS+=("${cpu[smtp-sink]}")
  url[smtp-sink]=smtp://127.0.0.1:$port
  local target targets=(turnout maildev maildev-disk smtp-sink)
  for target in "${targets[@]}"; do
    $mail_py wait "${url[$target]##*:}" 30
    $mail_py check "$WORK" "$target" "${url[$target]}"
  done

  : >"$WORK/mail-load.jsonl"
  local conns round k n=${#targets[@]}
  log "mail: warm-up, 1 s per target"
  for target in "${targets[@]}"; do
    $mail_py load "$WORK" "$target" "${url[$target]}" 1 1s 2048 - "${cpu[$target]}"
  done
  for conns in 1 8; do
    for ((round = 1; round <= rounds; round++)); do
      log "mail: 2 KiB messages, $conns connection(s), round $round of $rounds: $duration per target"
      for ((k = 0; k < n; k++)); do # the first target changes with each round
        target=${targets[$(((k + round - 1) % n))]}
        $mail_py load "$WORK" "$target" "${url[$target]}" "$conns" "$duration" 2048 \
          "$WORK/mail-load.jsonl" "${cpu[$target]}"
      done
    done
  done
  local all=()
  for target in "${targets[@]}"; do all+=("$target=${url[$target]}"); done
  log "mail: latency, one connection per target: $small messages of 2 KiB, then $big of 1 MiB"
  $mail_py latency "$WORK" "$WORK/mail-latency.json" 2048 "$small" "${all[@]}"
  $mail_py latency "$WORK" "$WORK/mail-latency.json" 1048576 "$big" "${all[@]}"

  log "mail: what each target holds"
  TM --json mail list probe/staging >"$WORK/mail-turnout-list.json"
  : >"$WORK/mail-verify.jsonl"
  $mail_py verify "$WORK" turnout "$WORK/mail-turnout-list.json"
  $mail_py verify "$WORK" maildev "${webport[maildev]}"
  $mail_py verify "$WORK" maildev-disk "${webport[maildev-disk]}"
  $mail_py verify "$WORK" smtp-sink -
  mkdir -p "$BENCH_DIR/results"
  $mail_py meta "$WORK/mail-meta.json" "$TURNOUT" "$ROOT" "$rounds" "$duration" "$load" \
    "$maildev_version" "$postfix_note"
  $mail_py report "$WORK" "$BENCH_DIR/results/mail.json" "$BENCH_DIR/results/mail.md"
  for target in maildev maildev-disk smtp-sink; do stop_pid "${cpu[$target]}"; done
  PIDS=("${PIDS[@]:0:${#PIDS[@]}-3}") # MailDev twice and smtp-sink, stopped
  stop_pid "$MAIL_PID" INT
  MAIL_PID=
  if ((UPDATE_DOCS)); then
    put_doc_section mail "$BENCH_DIR/results/mail.md"
  fi
  cat "$BENCH_DIR/results/mail.md" >&2
}
if [[ $ONLY == mail ]]; then
  mail_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/mail.json and mail.md" >&2
  exit 0
fi

# --- HTTPS against nginx (run by BENCH_ONLY=tls alone) ---------------------------------------
# A daemon of its own (home WORK/home-tls, as the egress section's, with --https-listen and
# --proxy-workers 1) with the benchmark backend (bench/backend) as bench/prod, bench.test bound
# to it and served with a certificate this run makes (bench/tls.py certs: a throwaway CA and an
# ECDSA P-256 leaf); nginx (bench/peers/nginx-tls.conf.in, one worker) with the same chain and
# key in front of the same backend instance. wrk connects to 127.0.0.1 with bench.test as SNI
# and Host (bench/wrk_tls.lua), with bench/wrk_fresh_tls.c preloaded so that every connection is
# a full handshake (checked against nginx's log). Interleaved rounds: `Connection: close` (a
# handshake per request), then kept connections. Not part of a full run.
tls_section() {
  local rounds=${BENCH_TLS_ROUNDS:-3} duration=${BENCH_TLS_DURATION:-5s}
  local conns=${BENCH_TLS_CONNECTIONS:-50} home=$WORK/home-tls dir=$WORK/tls flags=()
  local tls_py="python3 $BENCH_DIR/tls.py" repo=$WORK/tls-repo results=$BENCH_DIR/results
  local api https token load i
  [[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_TLS_ROUNDS must be a positive integer" >&2; exit 2; }
  [[ $conns =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_TLS_CONNECTIONS must be a positive integer" >&2; exit 2; }
  [[ $duration =~ ^[1-9][0-9]*s$ ]] || { echo "error: BENCH_TLS_DURATION must be seconds, e.g. 5s" >&2; exit 2; }
  "$TURNOUT" serve --help | grep -q -- '--https-listen' || {
    echo "error: this turnout has no \`serve --https-listen\`: nothing to measure" >&2; exit 1; }
  "$TURNOUT" cert add --help >/dev/null 2>&1 || {
    echo "error: this turnout has no \`turnout cert add\`: it cannot be given the certificate" >&2; exit 1; }
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  mkdir -p "$dir"
  log "tls: a throwaway CA and an ECDSA P-256 certificate for bench.test; bench/wrk_fresh_tls.c"
  $tls_py certs "$dir/certs"
  local certs=$dir/certs fresh=$dir/wrk_fresh_tls.so
  cc -shared -fPIC -O2 -Wall -o "$fresh" "$BENCH_DIR/wrk_fresh_tls.c" -ldl

  [[ $(id -u) -eq 0 ]] || flags=(--single-user)
  log "tls: starting turnout serve (--https-listen 127.0.0.1:0 --proxy-workers 1)"
  TURNOUT_LOG=warn "$TURNOUT" --json serve --home "$home" --api-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --shared-network --proxy-workers 1 \
    "${flags[@]}" >"$WORK/serve-tls.out" 2>"$WORK/serve-tls.log" &
  TLS_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -s $WORK/serve-tls.out && -s $home/serve.json ]] && break
    kill -0 "$TLS_PID" 2>/dev/null || { cat "$WORK/serve-tls.log" >&2; exit 1; }
    sleep 0.1
  done
  api=$($PY field "$home/serve.json" api)
  https=$($PY field "$home/serve.json" https)
  token=$(<"$home/admin.token")
  TT() { TURNOUT_TOKEN=$token "$TURNOUT" --api "$api" "$@"; }
  mkdir -p "$repo"
  cp "$BENCH_DIR/backend/turnout.toml" "$BENCH_DIR/backend/backend.conf.in" "$repo/"
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -q -m "benchmark backend"
  log "tls: deploying bench/prod (the backend); bench.test bound to it with the certificate"
  TT app create bench --repo "$repo" >/dev/null
  TT env create bench/prod --branch main --tier production >/dev/null
  TT deploy bench/prod >"$WORK/deploy-tls.log" 2>&1 || { cat "$WORK/deploy-tls.log" >&2; exit 1; }
  TT --json env show bench/prod >"$WORK/env-tls.json"
  local backend_port backend_pids
  backend_port=$($PY field "$WORK/env-tls.json" instance.port)
  backend_pids=$($PY pids "$($PY field "$WORK/env-tls.json" instance.pid)")
  TT domain add bench.test bench/prod >/dev/null
  TT cert add bench.test --cert "$certs/chain.pem" --key "$certs/key.pem" >"$WORK/cert-add.log" 2>&1 ||
    { cat "$WORK/cert-add.log" >&2; exit 1; }

  log "tls: starting nginx (worker_processes 1) with the same certificate and key"
  local nginx_port check_port nginx_pid
  read -r nginx_port check_port <<<"$($PY ports 2)"
  mkdir -p "$dir/nginx"
  cp "$certs/chain.pem" "$certs/key.pem" "$dir/nginx/"
  sed -e "s|@LISTEN_PORT@|$nginx_port|g" -e "s|@CHECK_PORT@|$check_port|g" \
    -e "s|@BACKEND_PORT@|$backend_port|g" -e "s|@DIR@|$dir/nginx|g" \
    "$BENCH_DIR/peers/nginx-tls.conf.in" >"$dir/nginx/nginx.conf"
  nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" \
    2>>"$dir/nginx/error.log" &
  nginx_pid=$!
  PIDS+=("$nginx_pid")

  local -A url=([turnout]="https://bench.test:${https##*:}" [nginx]="https://bench.test:$nginx_port")
  local target
  for target in turnout nginx; do # the certificate may reach the data plane a moment later
    for ((i = 0; i < 100; i++)); do
      $tls_py check "$target" "${url[$target]}/" "$certs/ca.pem" "hello from prod" 2>"$dir/check.err" && break
      ((i < 99)) || { cat "$dir/check.err" >&2; exit 1; }
      sleep 0.1
    done
  done
  local -A cpu=([turnout]="$TLS_PID $($PY pgrep "$home" __dataplane)" [nginx]="$($PY pids "$nginx_pid")")
  echo "turnout: serve pid $TLS_PID, proxy process(es) ${cpu[turnout]#"$TLS_PID"}; nginx: ${cpu[nginx]}" >&2

  log "tls: what each server negotiates (openssl s_client)"
  : >"$WORK/tls-negotiated.jsonl"
  for target in turnout nginx; do
    $tls_py negotiated "$target" "${url[$target]}/" "$certs/ca.pem" "$WORK/tls-negotiated.jsonl"
  done
  log "tls: does wrk resume sessions? 2 s of Connection: close to nginx's logging server, as is and with bench/wrk_fresh_tls.c"
  local check_log=$dir/nginx/tls-check.log
  rm -f "$WORK/tls-wrk-check.json"
  : >"$check_log"
  WRK_CONNECT=127.0.0.1 WRK_CLOSE=1 wrk -t1 -c"$conns" -d2s -s "$BENCH_DIR/wrk_tls.lua" \
    "https://bench.test:$check_port/" >/dev/null
  $tls_py resumed "$check_log" "$WORK/tls-wrk-check.json" as-is
  : >"$check_log"
  LD_PRELOAD=$fresh WRK_CONNECT=127.0.0.1 WRK_CLOSE=1 wrk -t1 -c"$conns" -d2s \
    -s "$BENCH_DIR/wrk_tls.lua" "https://bench.test:$check_port/" >/dev/null
  $tls_py resumed "$check_log" "$WORK/tls-wrk-check.json" fresh

  : >"$WORK/tls-wrk.jsonl"
  local mode round k targets=(turnout nginx)
  for mode in close keep-alive; do
    log "tls: $mode, warm-up 1 s per server"
    for target in "${targets[@]}"; do
      $tls_py wrk "$target" "$mode" "${url[$target]}" "$conns" 1s "$BENCH_DIR/wrk_tls.lua" \
        "$fresh" - "${cpu[$target]// /,}" "${backend_pids// /,}"
    done
    for ((round = 1; round <= rounds; round++)); do
      log "tls: $mode, round $round of $rounds: wrk -t1 -c$conns -d$duration per server"
      for ((k = 0; k < 2; k++)); do # the first server changes with each round
        target=${targets[$(((k + round - 1) % 2))]}
        $tls_py wrk "$target" "$mode" "${url[$target]}" "$conns" "$duration" \
          "$BENCH_DIR/wrk_tls.lua" "$fresh" "$WORK/tls-wrk.jsonl" "${cpu[$target]// /,}" \
          "${backend_pids// /,}"
      done
    done
  done
  grep -q . "$dir/nginx/error.log" && { echo "nginx's error log:" >&2; tail -n 5 "$dir/nginx/error.log" >&2; }

  mkdir -p "$results"
  $tls_py meta "$WORK/tls-meta.json" "$TURNOUT" "$ROOT" "$rounds" "$duration" "$conns" "$load" \
    "$WORK/tls-wrk-check.json"
  $tls_py report "$WORK" "$results/tls.json" "$results/tls.md"
  # The raw figures (per run, wrk's own output) from which `bench/tls.py report` renders the
  # tables again.
  rm -rf "$results/raw-tls"
  mkdir -p "$results/raw-tls"
  cp "$WORK"/tls-*.json "$WORK"/tls-*.jsonl "$WORK"/tls-wrk-*.txt "$results/raw-tls/"
  stop_pid "$nginx_pid"
  unset 'PIDS[-1]'
  stop_pid "$TLS_PID" INT
  TLS_PID=
  ((UPDATE_DOCS)) && put_doc_section tls "$results/tls.md"
  cat "$results/tls.md" >&2
}
if [[ $ONLY == tls ]]; then
  tls_section
  echo "done in $((SECONDS - started_at)) s; results in bench/results/tls.json, tls.md and raw-tls/" >&2
  exit 0
fi

# --- the dashboard's pages with 200 environments (run by BENCH_ONLY=dashboard alone) ----------
if [[ $ONLY == dashboard ]]; then
  log "dashboard: page server times with ${BENCH_DASHBOARD_ENVS:-200} environments"
  mkdir -p "$BENCH_DIR/results"
  python3 "$BENCH_DIR/dashboard.py" "$TURNOUT" "$BENCH_DIR/results/dashboard.json" \
    "$BENCH_DIR/results/dashboard.md" "${BENCH_DASHBOARD_ENVS:-200}" "${BENCH_DASHBOARD_ROUNDS:-30}" >&2
  ((UPDATE_DOCS)) && put_doc_section dashboard "$BENCH_DIR/results/dashboard.md"
  echo "done in $((SECONDS - started_at)) s; results in bench/results/dashboard.json and dashboard.md" >&2
  exit 0
fi

# --- 500 environments, most asleep, and 10,000 domains (run by BENCH_ONLY=scale alone) --------
if [[ $ONLY == scale ]]; then
  SCALE_ENVS=${BENCH_SCALE_ENVS:-500} SCALE_DOMAINS=${BENCH_SCALE_DOMAINS:-10000}
  SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-200} SCALE_DEPLOYS=${BENCH_SCALE_DEPLOYS:-8}
  for knob in SCALE_ENVS SCALE_DOMAINS SCALE_ROUNDS SCALE_DEPLOYS; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_${knob} must be a positive integer" >&2; exit 2; }
  done
  ((SCALE_ENVS >= 10)) || { echo "error: BENCH_SCALE_ENVS must be at least 10" >&2; exit 2; }
  log "scale: $SCALE_ENVS environments and $SCALE_DOMAINS domains beside 3 and 4"
  mkdir -p "$BENCH_DIR/results"
  BENCH_KEEP=${BENCH_KEEP:-0} python3 "$BENCH_DIR/scale.py" "$TURNOUT" \
    "$BENCH_DIR/results/scale.json" "$BENCH_DIR/results/scale.md" "$SCALE_ENVS" \
    "$SCALE_DOMAINS" "$SCALE_ROUNDS" "$SCALE_DEPLOYS" >&2
  ((UPDATE_DOCS)) && put_doc_section scale "$BENCH_DIR/results/scale.md"
  echo "done in $((SECONDS - started_at)) s; results in bench/results/scale.json and scale.md" >&2
  exit 0
fi

# --- 3. the daemon and the backend app -------------------------------------------------------
log "starting turnout serve"
SERVE_FLAGS=()
# The peers and the direct target reach the backend on the host's loopback, so this daemon keeps
# its environments there; a second daemon (section 4b) measures the proxy into a namespace.
SHARED_NETWORK=0
if "$TURNOUT" serve --help | grep -q -- '--shared-network'; then
  SERVE_FLAGS+=(--shared-network)
  SHARED_NETWORK=1
fi
if "$TURNOUT" serve --help | grep -q -- '--proxy-workers'; then
  SERVE_FLAGS+=(--proxy-workers 1)
  TURNOUT_WORKERS="\`turnout serve --proxy-workers 1\` (the proxy on one thread of its own)"
  SERVE_ENV=()
else
  # No proxy thread setting in this build: run the whole daemon on one tokio worker thread.
  TURNOUT_WORKERS="TOKIO_WORKER_THREADS=1 (the whole daemon on one tokio worker thread; this build has no --proxy-workers)"
  SERVE_ENV=(TOKIO_WORKER_THREADS=1)
fi
SERVE_ARGS=(serve --home "$WORK/home" --api-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 "${SERVE_FLAGS[@]}")
env "${SERVE_ENV[@]}" TURNOUT_LOG=warn "$TURNOUT" --json "${SERVE_ARGS[@]}" \
  >"$WORK/serve.out" 2>"$WORK/serve.log" &
TURNOUT_PID=$!
for ((i = 0; i < 300; i++)); do
  [[ -s $WORK/serve.out ]] && break
  kill -0 "$TURNOUT_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
head -n1 "$WORK/serve.out" >"$WORK/serve.json"
# The daemon's processes: `turnout serve`, and the proxy's own process where it has one
# (`turnout __dataplane`, its child): CPU time and memory are read from both.
DAEMON_PIDS="$TURNOUT_PID $($PY pgrep "$WORK/home" __dataplane)"
API=$($PY field "$WORK/serve.json" api)
PROXY=$($PY field "$WORK/serve.json" http)
# Builds with access control write the owner's API token into the home; the CLI and bench.py
# send it (as Authorization: Bearer) from TURNOUT_TOKEN.
if [[ -s $WORK/home/admin.token ]]; then
  TURNOUT_TOKEN=$(<"$WORK/home/admin.token")
  export TURNOUT_TOKEN
fi
T() { "$TURNOUT" --api "$API" "$@"; }
echo "API $API, proxy $PROXY, pid $TURNOUT_PID" >&2

ENVS=(prod blue green)
[[ $ONLY == restarts ]] && ENVS=(prod) # blue and green are for the switch only
[[ $ONLY == wake ]] && ENVS=() # the wake section deploys the example app alone
# --- 3b. wake latency: a request to a sleeping environment of the example app, to its answer --
wake_latency() {
  log "wake latency: $WAKES wakes of hello/test (examples/hello, sleeps after 1 s idle)"
  local repo=$WORK/hello-repo
  cp -r "$ROOT/examples/hello" "$repo"
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -q -m "example app"
  T app create hello --repo "$repo" >/dev/null
  T env create hello/test --branch main --tier test >/dev/null
  T deploy hello/test >"$WORK/deploy-hello.log" 2>&1 || { cat "$WORK/deploy-hello.log" >&2; exit 1; }
  T env update hello/test --sleep-after 1s >/dev/null
  mkdir -p "$BENCH_DIR/results"
  $PY wake "$API" "$PROXY" hello/test "$WAKES" "$BENCH_DIR/results/wake.json" \
    "$BENCH_DIR/results/wake.md"
  T env update hello/test --sleep-after never >/dev/null
  if ((UPDATE_DOCS)); then
    put_doc_section wake "$BENCH_DIR/results/wake.md"
  fi
}
if [[ $ONLY == wake ]]; then
  wake_latency
  echo "done in $((SECONDS - started_at)) s; results in bench/results/wake.json and wake.md" >&2
  exit 0
fi

log "creating the backend app (nginx, run by turnout) and deploying ${ENVS[*]/#/bench/}"
REPO=$WORK/repo
mkdir -p "$REPO"
cp "$BENCH_DIR/backend/turnout.toml" "$BENCH_DIR/backend/backend.conf.in" "$REPO/"
git -C "$REPO" init -q -b main
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -q -m "benchmark backend"
T app create bench --repo "$REPO" >/dev/null
for env in "${ENVS[@]}"; do
  T env create "bench/$env" --branch main --tier production >/dev/null
  T deploy "bench/$env" >"$WORK/deploy-$env.log" 2>&1 || { cat "$WORK/deploy-$env.log" >&2; exit 1; }
done
T --json env show bench/prod >"$WORK/env-prod.json"
BACKEND_PORT=$($PY field "$WORK/env-prod.json" instance.port)
BACKEND_PID=$($PY field "$WORK/env-prod.json" instance.pid)
BACKEND="http://127.0.0.1:$BACKEND_PORT"
echo "backend (bench/prod) on port $BACKEND_PORT, pid $BACKEND_PID" >&2

render() { # template out: substitute the ports and the directory
  sed -e "s|@LISTEN_PORT@|$3|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@DIR@|$(dirname "$2")|g" \
    "$1" >"$2"
}
notes=()

# Sections 4 to 6 (throughput, switches, memory) do not run with BENCH_ONLY=restarts; they are
# left unindented inside this `if`.
if [[ $ONLY != restarts ]]; then

# --- 4. the peers, in front of the same backend ----------------------------------------------
log "starting nginx, haproxy and caddy (one worker thread each)"
mkdir -p "$WORK/nginx" "$WORK/haproxy" "$WORK/caddy"
render "$BENCH_DIR/peers/nginx.conf.in" "$WORK/nginx/nginx.conf" "$P_NGINX"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" 2>>"$WORK/nginx/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
render "$BENCH_DIR/peers/haproxy.cfg.in" "$WORK/haproxy/haproxy.cfg" "$P_HAPROXY"
haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
render "$BENCH_DIR/peers/Caddyfile.in" "$WORK/caddy/Caddyfile" "$P_CADDY"
env GOMAXPROCS=1 HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy" \
  caddy run --adapter caddyfile --config "$WORK/caddy/Caddyfile" >"$WORK/caddy/caddy.log" 2>&1 &
CADDY_PID=$!
PIDS+=("$CADDY_PID")

declare -A URL=(
  [turnout]=$PROXY [nginx]=http://127.0.0.1:$P_NGINX [haproxy]=http://127.0.0.1:$P_HAPROXY
  [caddy]=http://127.0.0.1:$P_CADDY [direct]=$BACKEND
)
for target in direct turnout nginx haproxy caddy; do
  $PY wait "${URL[$target]}" "$HOST" "hello from prod" 20
done
echo "all five targets answer 'hello from prod' for Host: $HOST" >&2

# Which processes each target's CPU time is read from, and its backend's.
declare -A CPU_PIDS=(
  [turnout]=$DAEMON_PIDS [nginx]="$($PY pids "$NGINX_PID")" [haproxy]=$HAPROXY_PID
  [caddy]=$CADDY_PID [direct]="$($PY pids "$BACKEND_PID")"
)
declare -A BACKEND_PIDS=(
  [turnout]=${CPU_PIDS[direct]} [nginx]=${CPU_PIDS[direct]} [haproxy]=${CPU_PIDS[direct]}
  [caddy]=${CPU_PIDS[direct]} [direct]=
)
TARGETS=(turnout nginx haproxy caddy direct)

# --- 4b. the cost of network namespaces: a second daemon whose bench/prod runs in one --------
if ((SHARED_NETWORK)) && [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null && command -v pasta >/dev/null; then
  log "starting a second turnout serve whose environments have network namespaces"
  NS_ARGS=()
  [[ ${BENCH_CALIBRATE_NS:-0} == 1 ]] && NS_ARGS=(--shared-network)
  "$TURNOUT" --json serve --home "$WORK/home-ns" --api-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --proxy-workers 1 "${NS_ARGS[@]}" >"$WORK/serve-ns.out" 2>"$WORK/serve-ns.log" &
  NS_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ -s $WORK/serve-ns.out ]] && break
    kill -0 "$NS_PID" 2>/dev/null || { cat "$WORK/serve-ns.log" >&2; exit 1; }
    sleep 0.1
  done
  head -n1 "$WORK/serve-ns.out" >"$WORK/serve-ns.json"
  NS_API=$($PY field "$WORK/serve-ns.json" api)
  TNS() { TURNOUT_TOKEN=$(<"$WORK/home-ns/admin.token") "$TURNOUT" --api "$NS_API" "$@"; }
  TNS app create bench --repo "$REPO" >/dev/null
  TNS env create bench/prod --branch main --tier production >/dev/null
  TNS deploy bench/prod >"$WORK/deploy-ns.log" 2>&1 || { cat "$WORK/deploy-ns.log" >&2; exit 1; }
  TNS --json env show bench/prod >"$WORK/env-ns.json"
  if [[ ${BENCH_CALIBRATE_NS:-0} != 1 ]]; then
    [[ $($PY field "$WORK/env-ns.json" isolation.network) == turnout-* ]] || {
      echo "error: the second daemon's bench/prod has no network namespace" >&2; exit 1; }
  fi
  URL[turnout-ns]=$($PY field "$WORK/serve-ns.json" http)
  $PY wait "${URL[turnout-ns]}" "$HOST" "hello from prod" 20
  CPU_PIDS[turnout-ns]="$NS_PID $($PY pgrep "$WORK/home-ns" __dataplane)"
  BACKEND_PIDS[turnout-ns]="$($PY pids "$($PY field "$WORK/env-ns.json" instance.pid)")"
  TARGETS=(turnout turnout-ns nginx haproxy caddy direct)
fi

# --- 5. switch latency and memory (need the domain API) --------------------------------------
# A new instance of bench/blue (`turnout restart`, the deploy's launch, health check and go-live
# without its build) REDEPLOYS times, each timed to the new instance serving: with the domains
# bound to bench/blue following its route, its cost must not grow with them.
restart_times() { # out.json
  local out=$1 started times=()
  for ((i = 0; i < ${BENCH_REDEPLOYS:-10}; i++)); do
    started=$(date +%s%N)
    T restart bench/blue >/dev/null
    times+=($((($(date +%s%N) - started) / 1000)))
  done
  python3 -c 'import json, sys; json.dump([int(t) for t in sys.argv[2:]], open(sys.argv[1], "w"))' \
    "$out" "${times[@]}"
}
MEM_IDLE=$($PY rss $DAEMON_PIDS)
HAVE_DOMAINS=0
if "$TURNOUT" domain --help >/dev/null 2>&1; then HAVE_DOMAINS=1; fi
if [[ ${BENCH_CALIBRATE_NS:-0} == 1 ]]; then
  notes+=("Calibration run (BENCH_CALIBRATE_NS=1): the second daemon's instance was on the host's network too, so its row measures the two-daemon set-up, not a namespace.")
fi
if ((HAVE_DOMAINS)); then
  log "switch latency: $SWITCHES switches of switch.bench.test between bench/blue and bench/green"
  T domain add switch.bench.test bench/blue >/dev/null
  $PY wait "$PROXY" switch.bench.test "hello from blue" 10
  $PY switch "$API" "$PROXY" switch.bench.test bench blue green "$SWITCHES" "$WORK/switch_few.json"
  FEW_ROUTES=4
  log "restarts of bench/blue with no domain bound to it"
  restart_times "$WORK/redeploy_few.json"

  log "memory: 10 domains"
  $PY domains "$API" 1 10 bench/blue
  $PY probe "$PROXY" 1 10 "hello from blue"
  MEM_10=$($PY rss $DAEMON_PIDS)
  log "memory: $DOMAINS domains"
  $PY domains "$API" 11 "$DOMAINS" bench/blue
  $PY probe "$PROXY" 1 "$DOMAINS" "hello from blue"
  MEM_MANY=$($PY rss $DAEMON_PIDS)

  log "switch latency again, with $DOMAINS more domains in the route table"
  $PY switch "$API" "$PROXY" switch.bench.test bench blue green "$SWITCHES" "$WORK/switch_many.json"
  MANY_ROUTES=$((DOMAINS + 4))
  log "restarts of bench/blue with $DOMAINS domains bound to it"
  restart_times "$WORK/redeploy_many.json"
else
  notes+=("this build has no domain API (\`turnout domain\`): switch latency and memory with domains were not measured.")
  FEW_ROUTES=0 MANY_ROUTES=0 MEM_10=null MEM_MANY=null
fi

log "memory: nginx with 10 and $DOMAINS server blocks"
nginx_mem() { # n: sets NGINX_RSS to the VmRSS (KiB) of master + worker
  local dir=$WORK/nginx-names-$1 pid
  $PY nginx-names "$dir" "$P_NGINX_NAMES" "$BACKEND_PORT" "$1"
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
  pid=$!
  PIDS+=("$pid")
  $PY wait "http://127.0.0.1:$P_NGINX_NAMES" d0001.bench.test "hello from prod" 20
  $PY wait "http://127.0.0.1:$P_NGINX_NAMES" "$(printf 'd%04d.bench.test' "$1")" "hello from prod" 20
  NGINX_RSS=$($PY rss $($PY pids "$pid"))
  stop_pid "$pid"
  unset 'PIDS[-1]'
}
nginx_mem 10
NGINX_MEM_10=$NGINX_RSS
nginx_mem "$DOMAINS"
NGINX_MEM_MANY=$NGINX_RSS

# --- 6. throughput and latency ---------------------------------------------------------------
: >"$WORK/runs.jsonl"
run_wrk() { # target duration record(0|1)
  local backend_pids=${BACKEND_PIDS[$1]}
  $PY wrk "$1" "${URL[$1]}" "$HOST" "$CONNECTIONS" "$2" "$BENCH_DIR/wrk_json.lua" \
    "$( (($3)) && echo "$WORK/runs.jsonl" || echo -)" "${CPU_PIDS[$1]// /,}" "${backend_pids// /,}"
}
log "warm-up: 2 s per target"
for target in "${TARGETS[@]}"; do run_wrk "$target" 2s 0; done
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round of $ROUNDS: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency per target"
  for target in "${TARGETS[@]}"; do run_wrk "$target" "$DURATION" 1; done
done
MEM_AFTER=$($PY rss $DAEMON_PIDS)
notes+=("Turnout's resident memory is the whole daemon (API, store, supervisor and proxy), not the proxy alone.")

else # BENCH_ONLY=restarts
  HAVE_DOMAINS=0 FEW_ROUTES=0 MANY_ROUTES=0 MEM_IDLE=null MEM_10=null MEM_MANY=null MEM_AFTER=null
  NGINX_MEM_10=null NGINX_MEM_MANY=null
fi # sections 4 to 6

# --- 7. restarts under load ------------------------------------------------------------------
# wrk -t1 -c$CONNECTIONS keeps GETting through one target while the process that owns its proxy
# restarts $RESTARTS times, one every $SPACING_MS ms; the same target without restarts first
# (steady state). nginx and HAProxy of their own here, in front of bench/prod's instance; a
# daemon of its own with a home of its own for Turnout's rows, so the main daemon is not touched.
RDIR=$WORK/restarts
mkdir -p "$RDIR"
: >"$WORK/restarts.jsonl"
RDUR=$(((SPACING_MS * (RESTARTS + 2) + 999) / 1000)) # seconds of each wrk run

now_us() { # the wall clock in microseconds, into NOW
  NOW=${EPOCHREALTIME//[.,]/}
}

R_WRK=(wrk -t1 -c"$CONNECTIONS" -d"${RDUR}s" --latency -s "$BENCH_DIR/wrk_json.lua" -H "Host: $HOST")

restart_row() { # row url restart-function: steady state, then the load with the restarts
  local row=$1 url=$2 action=$3 i t0 due started marks=(- -)
  $PY wait "$url" "$HOST" "hello from prod" 20
  if [[ $RESTART_STEADY == 1 ]]; then
    log "$row: steady state, wrk -t1 -c$CONNECTIONS -d${RDUR}s"
    marks=("$($PY cpu-mark "$WORK" $$)")
    "${R_WRK[@]}" "$url/" >"$RDIR/$row-steady.txt" 2>&1
    marks+=("$($PY cpu-mark "$WORK" $$)")
  fi
  log "$row: wrk -t1 -c$CONNECTIONS -d${RDUR}s, $RESTARTS restarts ${SPACING_MS} ms apart"
  : >"$RDIR/$row-times.txt"
  marks+=("$($PY cpu-mark "$WORK" $$)")
  "${R_WRK[@]}" "$url/" >"$RDIR/$row.txt" 2>&1 &
  WRK_PID=$!
  now_us
  t0=$NOW
  for ((i = 1; i <= RESTARTS; i++)); do
    due=$((t0 + i * SPACING_MS * 1000))
    now_us
    if ((due > NOW)); then
      sleep "$(printf '%d.%06d' $(((due - NOW) / 1000000)) $(((due - NOW) % 1000000)))"
    fi
    now_us
    started=$NOW
    "$action"
    now_us
    # when the restart began (ms after wrk's start), how long it took (ms)
    echo "$(((started - t0) / 1000)) $(((NOW - started) / 1000))" >>"$RDIR/$row-times.txt"
  done
  wait "$WRK_PID" || { cat "$RDIR/$row.txt" >&2; exit 1; }
  WRK_PID=
  marks+=("$($PY cpu-mark "$WORK" $$)")
  $PY restarts-record "$row" "$RDIR/$row.txt" \
    "$([[ $RESTART_STEADY == 1 ]] && echo "$RDIR/$row-steady.txt" || echo -)" \
    "$RDIR/$row-times.txt" "${marks[*]}" "$WORK/restarts.jsonl"
}

# nginx: `nginx -s reload`, what `systemctl reload nginx` runs (SIGHUP to the master: new
# workers with the configuration read again, the old ones finish their requests and exit).
R_NGINX_DIR=$WORK/restart-nginx
mkdir -p "$R_NGINX_DIR"
render "$BENCH_DIR/peers/nginx.conf.in" "$R_NGINX_DIR/nginx.conf" "$P_R_NGINX"
nginx -p "$R_NGINX_DIR" -e "$R_NGINX_DIR/error.log" -c "$R_NGINX_DIR/nginx.conf" \
  2>>"$R_NGINX_DIR/error.log" &
R_NGINX_PID=$!
restart_nginx() {
  nginx -p "$R_NGINX_DIR" -e "$R_NGINX_DIR/error.log" -c "$R_NGINX_DIR/nginx.conf" -s reload \
    2>>"$R_NGINX_DIR/error.log"
}
restart_row nginx-reload "http://127.0.0.1:$P_R_NGINX" restart_nginx
stop_pid "$R_NGINX_PID"
R_NGINX_PID=

# HAProxy: a hitless reload. The running process exposes its listeners on its stats socket; the
# new one takes them from there (-x), then tells the old one to finish its connections and exit
# (-sf). No master process: each reload is a new process, as a reload script would start it.
R_HAPROXY_DIR=$WORK/restart-haproxy
mkdir -p "$R_HAPROXY_DIR"
render "$BENCH_DIR/peers/haproxy.cfg.in" "$R_HAPROXY_DIR/haproxy.cfg" "$P_R_HAPROXY"
sed -i "/^global\$/a\\    stats socket $R_HAPROXY_DIR/haproxy.sock mode 600 level admin expose-fd listeners" \
  "$R_HAPROXY_DIR/haproxy.cfg"
haproxy -db -f "$R_HAPROXY_DIR/haproxy.cfg" >>"$R_HAPROXY_DIR/haproxy.log" 2>&1 &
R_HAPROXY_PID=$!
restart_haproxy() {
  local old=$R_HAPROXY_PID i
  haproxy -db -f "$R_HAPROXY_DIR/haproxy.cfg" -x "$R_HAPROXY_DIR/haproxy.sock" -sf "$old" \
    >>"$R_HAPROXY_DIR/haproxy.log" 2>&1 &
  R_HAPROXY_PID=$!
  # Done when the old process has handed over and finished its connections.
  for ((i = 0; i < 1000; i++)); do
    alive "$old" || break
    alive "$R_HAPROXY_PID" || {
      echo "error: the new haproxy exited:" >&2; tail -n 20 "$R_HAPROXY_DIR/haproxy.log" >&2; exit 1; }
    sleep 0.01
  done
  wait "$old" 2>/dev/null || true
}
for ((i = 0; i < 100; i++)); do [[ -S $R_HAPROXY_DIR/haproxy.sock ]] && break; sleep 0.05; done
restart_row haproxy-reload "http://127.0.0.1:$P_R_HAPROXY" restart_haproxy
stop_pid "$R_HAPROXY_PID"
R_HAPROXY_PID=

# Turnout: a daemon of its own (the same flags as the main one, fixed ports), bench/prod
# deployed on it as in section 3.
R_HOME=$WORK/home-restarts
R_ARGS=(serve --home "$R_HOME" --api-listen "127.0.0.1:$P_R_API" --http-listen "127.0.0.1:$P_R_HTTP"
  "${SERVE_FLAGS[@]}")
R_STARTS=0
start_restart_daemon() { # [--upgrade]: start turnout serve on R_HOME, return once it serves
  local out i
  R_STARTS=$((R_STARTS + 1))
  out=$RDIR/serve-$R_STARTS.out
  env "${SERVE_ENV[@]}" TURNOUT_LOG=warn "$TURNOUT" --json "${R_ARGS[@]}" "$@" \
    >"$out" 2>>"$RDIR/serve.log" </dev/null &
  R_PID=$!
  # It prints its addresses once both listeners are bound and the routes are restored.
  for ((i = 0; i < 3000; i++)); do
    [[ -s $out ]] && return 0
    alive "$R_PID" || {
      echo "error: turnout serve $* exited:" >&2; tail -n 20 "$RDIR/serve.log" >&2; exit 1; }
    sleep 0.01
  done
  echo "error: turnout serve $* did not start serving within 30 s" >&2
  exit 1
}
# The `turnout serve` process as the home names it; the one started, unless something else
# (a process of its own for the proxy, say) were to write its pid there.
serve_pid() { # into SERVE_PID
  local info
  info=$(<"$R_HOME/serve.json")
  [[ $info =~ \"pid\":[[:space:]]*([0-9]+) ]] || { echo "error: no pid in $R_HOME/serve.json" >&2; exit 1; }
  SERVE_PID=${BASH_REMATCH[1]}
  [[ $SERVE_PID == "$R_PID" ]] ||
    echo "warning: $R_HOME/serve.json names pid $SERVE_PID, the started turnout serve is $R_PID" >&2
}
restart_upgrade() {
  local old=$R_PID status=0
  start_restart_daemon --upgrade
  # The new daemon serves only once the old one has handed over and exited (the home's lock).
  wait "$old" || status=$?
  ((status == 0)) || { echo "error: the old turnout serve exited with $status" >&2; exit 1; }
}
restart_crash() {
  { # (bash's "Killed" notice for its job goes to /dev/null too)
    kill -KILL "$SERVE_PID"
    while alive "$SERVE_PID"; do sleep 0.01; done
    if [[ $SERVE_PID == "$R_PID" ]]; then wait "$R_PID" || true; fi
  } 2>/dev/null
  start_restart_daemon
  serve_pid
}

log "starting a turnout serve of its own for the restarts (home $R_HOME)"
start_restart_daemon
R_API=http://127.0.0.1:$P_R_API
TR() { TURNOUT_TOKEN=$(<"$R_HOME/admin.token") "$TURNOUT" --api "$R_API" "$@"; }
TR app create bench --repo "$REPO" >/dev/null
TR env create bench/prod --branch main --tier production >/dev/null
TR deploy bench/prod >"$RDIR/deploy.log" 2>&1 || { cat "$RDIR/deploy.log" >&2; exit 1; }
# Which process serves the proxy: `turnout serve` itself, or a `turnout __dataplane` of its own.
DATAPLANE_PIDS=$($PY pgrep "$WORK" __dataplane)
echo "turnout serve pid $R_PID; turnout __dataplane: ${DATAPLANE_PIDS:-none}" >&2
restart_row turnout-upgrade "http://127.0.0.1:$P_R_HTTP" restart_upgrade
serve_pid
restart_row turnout-kill "http://127.0.0.1:$P_R_HTTP" restart_crash
# A full stop: the daemon stops its instances (and its data plane, where it has one) and exits.
log "stopping the restarts' turnout serve (SIGINT)"
stop_pid "$R_PID" INT
R_PID=

[[ -z $ONLY ]] && wake_latency

# --- 8. results -------------------------------------------------------------------------------
if ((HAVE_DOMAINS)); then
  notes+=("During the throughput runs Turnout's route table held $MANY_ROUTES routes (the $DOMAINS domains of the memory test); the load used bench/prod's own host.")
fi
printf '%s\n' "${notes[@]}" >"$WORK/notes.txt"
export M_THREADS=$THREADS M_CONNECTIONS=$CONNECTIONS M_DURATION=$DURATION M_ROUNDS=$ROUNDS \
  M_HOST=$HOST M_TURNOUT_WORKERS=$TURNOUT_WORKERS M_SWITCHES=$SWITCHES M_DOMAINS=$DOMAINS \
  M_FEW_ROUTES=$FEW_ROUTES M_MANY_ROUTES=$MANY_ROUTES M_MEM_IDLE=$MEM_IDLE M_MEM_10=$MEM_10 \
  M_MEM_MANY=$MEM_MANY M_MEM_AFTER=$MEM_AFTER M_NGINX_MEM_10=$NGINX_MEM_10 \
  M_NGINX_MEM_MANY=$NGINX_MEM_MANY M_ONLY=$ONLY M_RESTARTS=$RESTARTS M_SPACING_MS=$SPACING_MS \
  M_RDUR=$RDUR M_DATAPLANE=$DATAPLANE_PIDS
python3 - "$WORK" "$TURNOUT" "$ROOT" "$BENCH_DIR" <<'EOF'
import json, os, subprocess, sys
work, turnout, root, bench_dir = sys.argv[1:5]
sys.path.insert(0, bench_dir)
import bench
def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return ((out.stdout + out.stderr).strip().splitlines() or ["?"])[0]
    except Exception as e:
        return f"unknown ({e})"
env = os.environ
num = lambda k: None if env[k] in ("", "null") else int(env[k])
meta = {
    "machine": bench.machine(),
    "versions": {
        "turnout": first_line([turnout, "--version"]) + " at "
        + (env.get("BENCH_COMMIT") or first_line(["git", "-C", root, "rev-parse", "--short", "HEAD"])
           + (" (with uncommitted changes)" if subprocess.run(
               ["git", "-C", root, "diff", "--quiet", "HEAD", "--", ".", ":!bench", ":!docs"]).returncode
              else "")),
        "nginx": first_line(["nginx", "-v"]).split(": ")[-1],
        "haproxy": "HAProxy " + (first_line(["haproxy", "-v"]).split() + ["?"] * 3)[2],
        "caddy": "Caddy " + first_line(["caddy", "version"]).split()[0],
        "wrk": "wrk " + (first_line(["wrk", "-v"]).split() + ["?"] * 2)[1].split("/")[-1],
    },
    "settings": {k: env[f"M_{k.upper()}"] for k in
                 ["threads", "connections", "duration", "rounds", "host", "turnout_workers",
                  "switches", "domains"]},
    "switch_few_routes": num("M_FEW_ROUTES"), "switch_many_routes": num("M_MANY_ROUTES"),
    "notes": [l for l in open(f"{work}/notes.txt").read().splitlines() if l],
    "only": env["M_ONLY"] or None,
    "restarts": {"restarts": int(env["M_RESTARTS"]), "spacing_ms": int(env["M_SPACING_MS"]),
                 "wrk_seconds": int(env["M_RDUR"]), "connections": int(env["M_CONNECTIONS"]),
                 "dataplane": bool(env["M_DATAPLANE"]),
                 "notes": ["The proxy ran in a `turnout __dataplane` process of its own, which a "
                           "kill -9 of `turnout serve` leaves running." if env["M_DATAPLANE"] else
                           "The proxy ran inside the `turnout serve` process (this build has no "
                           "`turnout __dataplane`): a kill -9 of it takes the proxy down with it."]},
}
json.dump(meta, open(f"{work}/meta.json", "w"), indent=1)
if env["M_ONLY"]:
    sys.exit(0)
mem = {"turnout": {"idle": num("M_MEM_IDLE"), "10": num("M_MEM_10"), "1000": num("M_MEM_MANY"),
                   "after_load": num("M_MEM_AFTER")},
       "nginx": {"10": num("M_NGINX_MEM_10"), "1000": num("M_NGINX_MEM_MANY")},
       "domains": int(env["M_DOMAINS"])}
json.dump(mem, open(f"{work}/memory.json", "w"), indent=1)
EOF

push_section

log "results"
# A full run writes latest.*; BENCH_ONLY=restarts writes restarts.* and leaves the full run's be.
OUT=latest RAW=raw
[[ $ONLY == restarts ]] && OUT=restarts RAW=raw-restarts
mkdir -p "$BENCH_DIR/results"
$PY report "$WORK" "$BENCH_DIR/results/$OUT.json" "$BENCH_DIR/results/$OUT.md"
# The raw measurements, from which `bench.py report bench/results/$RAW ...` renders the tables
# again: per-run figures, and wrk's own output (restarts/: with the restarts' times).
rm -rf "${BENCH_DIR:?}/results/$RAW"
mkdir -p "$BENCH_DIR/results/$RAW/restarts"
cp "$WORK/meta.json" "$WORK/restarts.jsonl" "$BENCH_DIR/results/$RAW/"
cp "$RDIR"/*.txt "$BENCH_DIR/results/$RAW/restarts/"
if [[ $ONLY != restarts ]]; then
  cp "$WORK"/runs-*.txt "$WORK"/*.json "$WORK/runs.jsonl" "$BENCH_DIR/results/$RAW/"
  rm -f "$BENCH_DIR/results/$RAW"/env-*.json "$BENCH_DIR/results/$RAW"/serve*.json
fi

if ((UPDATE_DOCS)); then
  # The main tables (a full run) between the results markers, the restarts table between its own.
  python3 - "$ROOT/docs/BENCHMARKS.md" "$BENCH_DIR/results/$OUT.json" "$BENCH_DIR" <<'EOF'
import json, sys
doc_path, summary_path, bench_dir = sys.argv[1:4]
sys.path.insert(0, bench_dir)
import bench
doc, summary = open(doc_path).read(), json.load(open(summary_path))
def put(doc, name, md):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in doc or end not in doc:
        sys.exit(f"error: {doc_path} has no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{md}{end}{tail}"
if summary["throughput"]:
    doc = put(doc, "results", bench.markdown_main(summary))
if summary.get("restarts"):
    doc = put(doc, "restarts", bench.markdown_restarts(summary, header=True))
open(doc_path, "w").write(doc)
print(f"updated {doc_path}", file=sys.stderr)
EOF
fi
echo "done in $((SECONDS - started_at)) s; results in bench/results/$OUT.json and $OUT.md" >&2
