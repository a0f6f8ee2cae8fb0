#!/usr/bin/env bash
# Turnout's benchmark suite: the proxy against nginx, HAProxy and Caddy (one worker thread each)
# in front of the same backend, loaded by wrk in one run; domain switch latency; resident memory
# with 10 and 1,000 domains. Everything runs on 127.0.0.1 and is cleaned up on exit.
#
#   bench/run.sh                 run everything; write bench/results/latest.{json,md}
#   bench/run.sh --update-docs   the same, then put the new tables into docs/BENCHMARKS.md
#
# Knobs (environment): BENCH_DURATION (6s), BENCH_ROUNDS (5), BENCH_CONNECTIONS (32),
# BENCH_SWITCHES (100), BENCH_DOMAINS (1000), BENCH_KEEP=1 keeps the work directory,
# BENCH_CALIBRATE_NS=1 starts the second daemon of section 4b with --shared-network too (its row
# then measures the two-daemon set-up, not the namespace; results are not for the docs),
# BENCH_NO_BUILD=1 uses target/release/turnout as it is, BENCH_TURNOUT=PATH measures that binary
# (BENCH_COMMIT=SHA says which commit it was built from).
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
UPDATE_DOCS=0
for arg in "$@"; do
  case "$arg" in
    --update-docs) UPDATE_DOCS=1 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
export PATH="$PATH:/usr/sbin:/sbin"
PY="python3 $BENCH_DIR/bench.py"
HOST=prod.bench.localhost
started_at=$SECONDS

log() { printf '\n== %s\n' "$*" >&2; }

# --- 1. tools --------------------------------------------------------------------------------
missing=()
for pair in nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk git:git; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -n ${BENCH_TURNOUT:-} ]]; then
  TURNOUT=$(realpath "$BENCH_TURNOUT")
else
  if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building turnout (release)"
    (cd "$ROOT" && cargo build --release --quiet)
  fi
  TURNOUT="${CARGO_TARGET_DIR:-$ROOT/target}/release/turnout"
fi

# --- 2. work directory and cleanup -----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/turnout-bench.XXXXXX")
PIDS=()        # peers, stopped first
TURNOUT_PID=

stop_pid() { # pid: SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  # SIGTERM makes the daemon stop its instances (the backend nginx processes) before it exits.
  [[ -n $TURNOUT_PID ]] && stop_pid "$TURNOUT_PID"
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

# --- 3. the daemon and the backend app -------------------------------------------------------
log "starting turnout serve"
SERVE_ARGS=(serve --home "$WORK/home" --api-listen 127.0.0.1:0 --http-listen 127.0.0.1:0)
# The peers and the direct target reach the backend on the host's loopback, so this daemon keeps
# its environments there; a second daemon (section 4b) measures the proxy into a namespace.
SHARED_NETWORK=0
if "$TURNOUT" serve --help | grep -q -- '--shared-network'; then
  SERVE_ARGS+=(--shared-network)
  SHARED_NETWORK=1
fi
if "$TURNOUT" serve --help | grep -q -- '--proxy-workers'; then
  SERVE_ARGS+=(--proxy-workers 1)
  TURNOUT_WORKERS="\`turnout serve --proxy-workers 1\` (the proxy on one thread of its own)"
  SERVE_ENV=()
else
  # No proxy thread setting in this build: run the whole daemon on one tokio worker thread.
  TURNOUT_WORKERS="TOKIO_WORKER_THREADS=1 (the whole daemon on one tokio worker thread; this build has no --proxy-workers)"
  SERVE_ENV=(TOKIO_WORKER_THREADS=1)
fi
env "${SERVE_ENV[@]}" TURNOUT_LOG=warn "$TURNOUT" --json "${SERVE_ARGS[@]}" \
  >"$WORK/serve.out" 2>"$WORK/serve.log" &
TURNOUT_PID=$!
for ((i = 0; i < 300; i++)); do
  [[ -s $WORK/serve.out ]] && break
  kill -0 "$TURNOUT_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.1
done
head -n1 "$WORK/serve.out" >"$WORK/serve.json"
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

log "creating the backend app (nginx, run by turnout) and deploying bench/prod, bench/blue, bench/green"
REPO=$WORK/repo
mkdir -p "$REPO"
cp "$BENCH_DIR/backend/turnout.toml" "$BENCH_DIR/backend/backend.conf.in" "$REPO/"
git -C "$REPO" init -q -b main
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -q -m "benchmark backend"
T app create bench --repo "$REPO" >/dev/null
for env in prod blue green; do
  T env create "bench/$env" --branch main --tier production >/dev/null
  T deploy "bench/$env" >"$WORK/deploy-$env.log" 2>&1 || { cat "$WORK/deploy-$env.log" >&2; exit 1; }
done
T --json env show bench/prod >"$WORK/env-prod.json"
BACKEND_PORT=$($PY field "$WORK/env-prod.json" instance.port)
BACKEND_PID=$($PY field "$WORK/env-prod.json" instance.pid)
BACKEND="http://127.0.0.1:$BACKEND_PORT"
echo "backend (bench/prod) on port $BACKEND_PORT, pid $BACKEND_PID" >&2

# --- 4. the peers, in front of the same backend ----------------------------------------------
render() { # template out: substitute the ports and the directory
  sed -e "s|@LISTEN_PORT@|$3|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@DIR@|$(dirname "$2")|g" \
    "$1" >"$2"
}
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
  [turnout]=$TURNOUT_PID [nginx]="$($PY pids "$NGINX_PID")" [haproxy]=$HAPROXY_PID
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
  PIDS+=("$NS_PID")
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
  CPU_PIDS[turnout-ns]=$NS_PID
  BACKEND_PIDS[turnout-ns]="$($PY pids "$($PY field "$WORK/env-ns.json" instance.pid)")"
  TARGETS=(turnout turnout-ns nginx haproxy caddy direct)
fi

# --- 5. switch latency and memory (need the domain API) --------------------------------------
MEM_IDLE=$($PY rss "$TURNOUT_PID")
HAVE_DOMAINS=0
if "$TURNOUT" domain --help >/dev/null 2>&1; then HAVE_DOMAINS=1; fi
notes=()
if [[ ${BENCH_CALIBRATE_NS:-0} == 1 ]]; then
  notes+=("Calibration run (BENCH_CALIBRATE_NS=1): the second daemon's instance was on the host's network too, so its row measures the two-daemon set-up, not a namespace.")
fi
if ((HAVE_DOMAINS)); then
  log "switch latency: $SWITCHES switches of switch.bench.test between bench/blue and bench/green"
  T domain add switch.bench.test bench/blue >/dev/null
  $PY wait "$PROXY" switch.bench.test "hello from blue" 10
  $PY switch "$API" "$PROXY" switch.bench.test bench blue green "$SWITCHES" "$WORK/switch_few.json"
  FEW_ROUTES=4

  log "memory: 10 domains"
  $PY domains "$API" 1 10 bench/blue
  $PY probe "$PROXY" 1 10 "hello from blue"
  MEM_10=$($PY rss "$TURNOUT_PID")
  log "memory: $DOMAINS domains"
  $PY domains "$API" 11 "$DOMAINS" bench/blue
  $PY probe "$PROXY" 1 "$DOMAINS" "hello from blue"
  MEM_MANY=$($PY rss "$TURNOUT_PID")

  log "switch latency again, with $DOMAINS more domains in the route table"
  $PY switch "$API" "$PROXY" switch.bench.test bench blue green "$SWITCHES" "$WORK/switch_many.json"
  MANY_ROUTES=$((DOMAINS + 4))
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
MEM_AFTER=$($PY rss "$TURNOUT_PID")

# --- 7. results -------------------------------------------------------------------------------
notes+=("Turnout's resident memory is the whole daemon (API, store, supervisor and proxy), not the proxy alone.")
if ((HAVE_DOMAINS)); then
  notes+=("During the throughput runs Turnout's route table held $MANY_ROUTES routes (the $DOMAINS domains of the memory test); the load used bench/prod's own host.")
fi
printf '%s\n' "${notes[@]}" >"$WORK/notes.txt"
export M_THREADS=$THREADS M_CONNECTIONS=$CONNECTIONS M_DURATION=$DURATION M_ROUNDS=$ROUNDS \
  M_HOST=$HOST M_TURNOUT_WORKERS=$TURNOUT_WORKERS M_SWITCHES=$SWITCHES M_DOMAINS=$DOMAINS \
  M_FEW_ROUTES=$FEW_ROUTES M_MANY_ROUTES=$MANY_ROUTES M_MEM_IDLE=$MEM_IDLE M_MEM_10=$MEM_10 \
  M_MEM_MANY=$MEM_MANY M_MEM_AFTER=$MEM_AFTER M_NGINX_MEM_10=$NGINX_MEM_10 \
  M_NGINX_MEM_MANY=$NGINX_MEM_MANY
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
}
json.dump(meta, open(f"{work}/meta.json", "w"), indent=1)
mem = {"turnout": {"idle": num("M_MEM_IDLE"), "10": num("M_MEM_10"), "1000": num("M_MEM_MANY"),
                   "after_load": num("M_MEM_AFTER")},
       "nginx": {"10": num("M_NGINX_MEM_10"), "1000": num("M_NGINX_MEM_MANY")},
       "domains": int(env["M_DOMAINS"])}
json.dump(mem, open(f"{work}/memory.json", "w"), indent=1)
EOF

log "results"
mkdir -p "$BENCH_DIR/results"
$PY report "$WORK" "$BENCH_DIR/results/latest.json" "$BENCH_DIR/results/latest.md"
# The raw measurements, from which `bench.py report bench/results/raw ...` renders the tables again.
rm -rf "$BENCH_DIR/results/raw"
mkdir -p "$BENCH_DIR/results/raw"
cp "$WORK"/runs-*.txt "$WORK"/*.json "$WORK/runs.jsonl" "$BENCH_DIR/results/raw/"
rm -f "$BENCH_DIR"/results/raw/env-*.json "$BENCH_DIR"/results/raw/serve*.json

if ((UPDATE_DOCS)); then
  python3 - "$ROOT/docs/BENCHMARKS.md" "$BENCH_DIR/results/latest.md" <<'EOF'
import sys
doc_path, md_path = sys.argv[1], sys.argv[2]
doc, md = open(doc_path).read(), open(md_path).read()
begin, end = "<!-- results:begin -->", "<!-- results:end -->"
if begin not in doc or end not in doc:
    sys.exit(f"error: {doc_path} has no {begin} ... {end} markers")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc_path, "w").write(f"{head}{begin}\n{md}{end}{tail}")
print(f"updated {doc_path}", file=sys.stderr)
EOF
fi
echo "done in $((SECONDS - started_at)) s; results in bench/results/latest.json and latest.md" >&2
