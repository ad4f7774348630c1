#!/usr/bin/env bash
# Benchmarks the fleet on this machine: end-to-end throughput of canary SubJobs with two workers, and
# creation-to-claim latency at a paced 100 SubJobs/s (in runs of 10 SubJobs, and one run per SubJob). Starts its own Redis, Mongo-wire server (or uses
# MONGODB_URI), API, two workers and scheduler from a release build, and reports CPU seconds per process
# (to show which part of the cost is the database server) and the workers' resident memory; last, the
# answer times of failed sign-ins for an unknown address and for a wrong password (they must match).
# Before the fleet starts, the two parts it cannot do without are measured alone, as upper bounds: the
# queue (apalis-redis as the workers configure it, a handler that does nothing) and the database's
# SubJob bookkeeping (insert, claim with a lease, finish).
#
# Usage: scripts/bench.sh [SUBJOBS] [LATENCY_COUNT]     (defaults: 5000 1000)
#        FLOORS=0 scripts/bench.sh ...                  (skip the queue and bookkeeping floors)
# Results: one JSON line per phase on stdout, and $CSPM_STATE/bench/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CSPM_STATE=${CSPM_STATE:-$(pwd)/.cspm/bench}
export -n CSPM_STATE # the script's own directory: the fleet refuses CSPM_ settings it does not know
. scripts/lib.sh
SUBJOBS=${1:-5000}
LATENCY_COUNT=${2:-1000}
PIDS=()
# Stop the fleet, then the servers, then wait for the fleet only (the Mongo-wire server is a child too:
# waiting for every child before stopping it would never return).
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_started; wait "${PIDS[@]}" 2>/dev/null || true; }
trap cleanup EXIT

ensure_tools
log "release build"
cargo build --release --locked -p cspm-api -p cspm-worker -p cspm-scheduler -p cspm-bench
BIN="$CARGO_TARGET_DIR/release"
OUT="$CSPM_STATE/bench"; mkdir -p "$OUT"

REDIS_PORT=$(free_port); start_redis "$REDIS_PORT"
if [ -z "${MONGODB_URI:-}" ]; then
  MONGO_PORT=$(free_port); start_mongo_wire "$MONGO_PORT"; export MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
fi
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pid_of_port() { ss -ltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
REDIS_PID=$(pid_of_port "$REDIS_PORT")
MONGO_PID=$([ -n "${MONGO_PORT:-}" ] && pid_of_port "$MONGO_PORT" || echo "")
declare -A PROC=([redis]=$REDIS_PID)
[ -n "$MONGO_PID" ] && PROC[mongo-wire]=$MONGO_PID
measure() { # name, command...
  local name=$1; shift
  declare -A before
  for p in "${!PROC[@]}"; do before[$p]=$(cpu_ticks "${PROC[$p]}"); done
  local result; result=$("$@")
  local hz; hz=$(getconf CLK_TCK)
  local cpu="{"
  for p in "${!PROC[@]}"; do
    cpu+="\"$p\":$(python3 -c "print(round(($(cpu_ticks "${PROC[$p]}") - ${before[$p]}) / $hz, 2))"),"
  done
  cpu="${cpu%,}}"
  echo "$result" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['cpu_seconds']=json.loads('$cpu'); print(json.dumps(d))" | tee "$OUT/$name.json"
}

if [ "${FLOORS:-1}" != 0 ]; then
  log "floor: the queue alone, $((SUBJOBS * 4)) messages, two workers of concurrency ${CONCURRENCY:-16}, then 1000 at 100/s"
  measure floor_queue "$BIN/cspm-bench" queue --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --messages $((SUBJOBS * 4)) --concurrency "${CONCURRENCY:-16}" --paced 1000 --rate 100
  log "floor: the database's SubJob bookkeeping alone, $((SUBJOBS * 2)) SubJobs"
  measure floor_bookkeeping "$BIN/cspm-bench" --mongodb-uri "$MONGODB_URI" --db-prefix floor_ bookkeeping \
    --subjobs $((SUBJOBS * 2))
fi

API_PORT=$(free_port)
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CSPM_DB_PREFIX=bench_ CSPM_QUEUE_NAMESPACE=bench:
export SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
export CLOUD_ENCRYPTION_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export DEFAULT_ADMIN_EMAIL=admin@bench.local DEFAULT_ADMIN_PASSWORD='Bench!Passw0rd-1'
export CSPM_LOG_FORMAT=json RUST_LOG=warn
export CSPM_MAX_SUBJOBS_PER_RUN=100000
# The sign-in timing phase makes 62 failed sign-ins from one address: no lock, no rate limit in its way.
export CSPM_LOGIN_MAX_FAILURES=100 CSPM_LOGIN_RATE_PER_MINUTE=100000

CSPM_API_BIND="127.0.0.1:$API_PORT" "$BIN/cspm-api" >"$OUT/api.log" 2>&1 & PIDS+=($!); API_PID=$!
W=()
for i in 1 2; do
  CSPM_WORKER_NAME="bench$i" CSPM_WORKER_BIND=127.0.0.1:0 CSPM_WORKER_CLOUD_CONCURRENCY=${CONCURRENCY:-16} \
    CSPM_WORKER_OUTPUT_DIR="$CSPM_STATE/output/$i" "$BIN/cspm-worker" >"$OUT/worker$i.log" 2>&1 & PIDS+=($!); W+=($!)
done
CSPM_SCHEDULER_BIND=127.0.0.1:0 "$BIN/cspm-scheduler" >"$OUT/scheduler.log" 2>&1 & PIDS+=($!); SCHED_PID=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.3; done
sleep 2

PROC+=([api]=$API_PID [worker1]=${W[0]} [worker2]=${W[1]} [scheduler]=$SCHED_PID)
echo "{\"phase\":\"idle\",\"worker_rss_kib\":[$(rss_kib "${W[0]}"),$(rss_kib "${W[1]}")]}" | tee "$OUT/idle.json"

bench() { "$BIN/cspm-bench" --api "http://127.0.0.1:$API_PORT" --email "$DEFAULT_ADMIN_EMAIL" \
  --password "$DEFAULT_ADMIN_PASSWORD" --mongodb-uri "$MONGODB_URI" --db-prefix "$CSPM_DB_PREFIX" "$@"; }

log "throughput: $SUBJOBS canary SubJobs, two workers"
measure throughput bench throughput --subjobs "$SUBJOBS" --runs 10
log "latency: $LATENCY_COUNT SubJobs at 100/s, in runs of 10"
measure latency bench latency --rate 100 --count "$LATENCY_COUNT" --per-run 10
log "latency: $LATENCY_COUNT SubJobs at 100/s, each its own run (creation and roll-up per SubJob)"
measure latency_runs bench latency --rate 100 --count "$LATENCY_COUNT" --per-run 1
echo "{\"phase\":\"after\",\"worker_rss_kib\":[$(rss_kib "${W[0]}"),$(rss_kib "${W[1]}")]}" | tee "$OUT/after.json"
log "sign-in: unknown address vs wrong password, 30 of each, interleaved"
bench sign-in --count 30 | tee "$OUT/sign_in.json"
