#!/usr/bin/env bash
# Runs the whole fleet on this machine and puts a real scan through it.
#
# Installs what is missing (Redis and nmap from Debian, the Mongo-wire test server from PyPI unless
# MONGODB_URI points at a real MongoDB), builds, starts Redis, the database, the API, two workers and the
# scheduler on loopback, signs in, scans a local listener with nmap through the API, runs a canary
# cloud scan over 3 regions × 2 tools, and prints the runs and their findings. The fleet then keeps
# running until Ctrl-C (or exits at once with --once).
#
# Usage: scripts/demo.sh [--once]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ONCE=false
[ "${1:-}" = "--once" ] && ONCE=true

PIDS=()
# Stop the fleet, then the servers, then wait for the fleet only (the Mongo-wire server is a child too:
# waiting for every child before stopping it would never return).
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_started
  wait "${PIDS[@]}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools
log "building (the first build takes several minutes)"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

REDIS_PORT=$(free_port)
log "starting Redis on 127.0.0.1:$REDIS_PORT (append-only file on)"
start_redis "$REDIS_PORT"
if [ -z "${MONGODB_URI:-}" ]; then
  MONGO_PORT=$(free_port)
  log "starting the Mongo-wire test server on 127.0.0.1:$MONGO_PORT (set MONGODB_URI to use a real MongoDB)"
  start_mongo_wire "$MONGO_PORT"
  export MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
fi
API_PORT=$(free_port)
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export SECRET_KEY=${SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')}
export CLOUD_ENCRYPTION_KEY=${CLOUD_ENCRYPTION_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}
export DEFAULT_ADMIN_EMAIL=${DEFAULT_ADMIN_EMAIL:-admin@cspm.local}
export DEFAULT_ADMIN_PASSWORD=${DEFAULT_ADMIN_PASSWORD:-$(python3 -c 'import secrets; print("Aa1!" + secrets.token_urlsafe(12))')}
# The demo scans a listener on this machine: loopback targets are refused unless allowed.
export CSPM_ALLOW_LOOPBACK_SCAN_TARGETS=true
export CSPM_LOG_FORMAT=json
export CSPM_DB_PREFIX=${CSPM_DB_PREFIX:-demo_}
export CSPM_QUEUE_NAMESPACE=${CSPM_QUEUE_NAMESPACE:-demo:}
LOGS="$CSPM_STATE/logs"

log "starting the API on 127.0.0.1:$API_PORT, two workers and the scheduler (logs in $LOGS)"
CSPM_API_BIND="127.0.0.1:$API_PORT" "$BIN/cspm-api" >"$LOGS/api.log" 2>&1 & PIDS+=($!)
for i in 1 2; do
  CSPM_WORKER_NAME="worker$i" CSPM_WORKER_BIND=127.0.0.1:0 CSPM_WORKER_OUTPUT_DIR="$CSPM_STATE/output/worker$i" \
    "$BIN/cspm-worker" >"$LOGS/worker$i.log" 2>&1 & PIDS+=($!)
done
CSPM_SCHEDULER_BIND=127.0.0.1:0 "$BIN/cspm-scheduler" >"$LOGS/scheduler.log" 2>&1 & PIDS+=($!)

API="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do curl -fsS "$API/readyz" >/dev/null 2>&1 && break; sleep 0.3; done
curl -fsS "$API/readyz" >/dev/null || { echo "the API did not become ready; see $LOGS/api.log" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
pretty() { python3 -m json.tool; }
call() { # method path [body]
  curl -sS -X "$1" "$API$2" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' ${3:+-d "$3"}
}

log "signing in as $DEFAULT_ADMIN_EMAIL"
TOKEN=""
for _ in $(seq 1 50); do
  TOKEN=$(curl -sS -X POST "$API/api/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$DEFAULT_ADMIN_EMAIL\",\"password\":\"$DEFAULT_ADMIN_PASSWORD\"}" | json '.get("access_token","")' 2>/dev/null || true)
  [ -n "$TOKEN" ] && break
  sleep 0.3
done
[ -n "$TOKEN" ] || { echo "sign-in failed; see $LOGS/api.log" >&2; exit 1; }

TARGET_PORT=$(free_port)
log "opening a local HTTP listener on 127.0.0.1:$TARGET_PORT to scan"
python3 -m http.server "$TARGET_PORT" --bind 127.0.0.1 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5

log "network discovery of 127.0.0.1 (ports $TARGET_PORT and $((TARGET_PORT + 1))) with nmap, through the API"
SCAN=$(call POST /api/native-scans/network-discovery \
  "{\"target\":\"127.0.0.1\",\"ports\":\"$TARGET_PORT,$((TARGET_PORT + 1))\",\"scan_type\":\"service_detection\"}")
echo "$SCAN" | pretty
SCAN_ID=$(echo "$SCAN" | json '["scan_id"]')
for _ in $(seq 1 120); do
  STATUS=$(call GET "/api/native-scans/results/$SCAN_ID" | json '["status"]')
  case "$STATUS" in completed|failed|partial|cancelled) break ;; esac
  sleep 1
done
log "the network scan ended: $STATUS; its record and findings:"
call GET "/api/native-scans/results/$SCAN_ID" | pretty

log "connecting an AWS account and running a canary scan over 3 regions × 2 tools (6 sub-jobs)"
ACCOUNT=$(call POST /api/cloud-accounts '{"provider":"aws","account_id":"123456789012","account_name":"demo","regions":["us-east-1","eu-west-1","eu-central-1"],"credentials":{"access_key_id":"AKIADEMODEMODEMO","secret_access_key":"demo-secret-not-real"}}' | json '["id"]')
RUN=$(call POST /api/cloud-scans/initiate "{\"account_id\":\"$ACCOUNT\",\"tools\":[\"canary:a\",\"canary:b\"],\"canary\":{\"duration_ms\":1500,\"findings\":2}}")
echo "$RUN" | pretty
RUN_ID=$(echo "$RUN" | json '["run_id"]')
for _ in $(seq 1 120); do
  STATUS=$(call GET "/api/cloud-scans/$RUN_ID/status" | json '["status"]')
  case "$STATUS" in completed|failed|partial|cancelled) break ;; esac
  sleep 1
done
log "the cloud scan ended: $STATUS; per sub-job:"
call GET "/api/cloud-scans/$RUN_ID/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("run %s: %s, progress %s%%" % (s["run_id"], s["status"], s["progress"]["overall"]))
for j in s["sub_jobs"]:
    print("  %-14s %-9s %-10s attempts=%s findings=%s" % (j["region"], j["tool"], j["status"], j["attempts"], j["findings_count"]))
'
log "summary"
call GET "/api/cloud-scans/$RUN_ID/summary" | pretty

if $ONCE; then exit 0; fi
cat <<EOF

The fleet is running. API: $API   (sign in as $DEFAULT_ADMIN_EMAIL / $DEFAULT_ADMIN_PASSWORD)
  curl -s $API/metrics
  curl -s -H "Authorization: Bearer \$TOKEN" $API/api/cloud-scans
Logs: $LOGS. Press Ctrl-C to stop everything.
EOF
wait "${PIDS[@]}"
