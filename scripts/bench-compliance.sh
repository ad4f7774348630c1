#!/usr/bin/env bash
# Benchmarks one compliance sync on this machine, from a release build: `cspm-bench compliance` imports
# the operator's SCF catalog from the fixtures (the 1,451-control JSON catalog, titles from the YAML one,
# the crosswalks and Prowler's check files), stores N synthetic findings of one team through the
# worker's write path, and times the sync, with its peak RSS, against the Mongo-wire server (or
# MONGODB_URI); then runs the same sync again in a fresh process and reads the server's CPU seconds
# during it from /proc.
#
# Usage: scripts/bench-compliance.sh [FINDINGS]   (default 100000; needs CSPM_FIXTURES_DIR or ../shared/fixtures)
# Results: one JSON line per phase on stdout, and $CSPM_STATE/bench/compliance.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CSPM_STATE=${CSPM_STATE:-$(pwd)/.cspm/bench}
. scripts/lib.sh
trap stop_started EXIT
COUNT=${1:-100000}
FIXTURES=${CSPM_FIXTURES_DIR:-$(cd ../shared/fixtures 2>/dev/null && pwd || echo /work/shared/fixtures)}
ensure_tools
log "release build"
cargo build --release --locked -p cspm-bench
BIN="$CARGO_TARGET_DIR/release"
OUT="$CSPM_STATE/bench"; mkdir -p "$OUT"
if [ -z "${MONGODB_URI:-}" ]; then
  MONGO_PORT=$(free_port); start_mongo_wire "$MONGO_PORT"; MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
  MONGO_PID=$(ss -ltnp "sport = :$MONGO_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
fi
ticks() { [ -n "${MONGO_PID:-}" ] && awk '{print $14 + $15}' "/proc/$MONGO_PID/stat" || echo 0; }
log "compliance: import the fixture catalog, store $COUNT findings, sync"
PREFIX="benchcompliance_$$_"
"$BIN/cspm-bench" --mongodb-uri "$MONGODB_URI" --db-prefix "$PREFIX" compliance --findings "$COUNT" \
  --fixtures "$FIXTURES" | tee "$OUT/compliance.json"
TEAM=$(grep -o '"team":"[^"]*"' "$OUT/compliance.json" | cut -d'"' -f4)
# The same sync again in a fresh process: its peak RSS is the sync's alone (the first process still
# holds what the import and the finding generation allocated).
log "compliance: the sync alone, fresh process"
before=$(ticks)
"$BIN/cspm-bench" --mongodb-uri "$MONGODB_URI" --db-prefix "$PREFIX" compliance --sync-only "$TEAM" \
  | tee -a "$OUT/compliance.json"
after=$(ticks)
echo "{\"phase\":\"compliance_sync_server_cpu\",\"server_cpu_seconds\":$(python3 -c "print(round(($after - $before) / $(getconf CLK_TCK), 2))")}" \
  | tee -a "$OUT/compliance.json"
