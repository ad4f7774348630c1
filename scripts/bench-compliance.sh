#!/usr/bin/env bash
# Benchmarks one compliance sync on this machine, from a release build: `cspm-bench compliance` imports
# the operator's SCF catalog from the fixtures (the 1,451-control JSON catalog, titles from the YAML one,
# the crosswalks and Prowler's check files), stores N synthetic findings of one team through the
# worker's write path, and times the sync, with the process's peak RSS during it, against the Mongo-wire
# server (or MONGODB_URI); the server's CPU seconds during the sync are read from /proc.
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
log "compliance sync: $COUNT findings against the fixture catalog"
: > "$OUT/compliance.json"
"$BIN/cspm-bench" --mongodb-uri "$MONGODB_URI" --db-prefix "benchcompliance_$$_" compliance \
  --findings "$COUNT" --fixtures "$FIXTURES" | while read -r line; do
    echo "$line" | tee -a "$OUT/compliance.json"
    # The sync starts after the findings are stored: mark the server's CPU there.
    case "$line" in *compliance_findings*) ticks > "$OUT/ticks.before" ;; esac
  done
after=$(ticks); before=$(cat "$OUT/ticks.before" 2>/dev/null || echo 0)
echo "{\"phase\":\"compliance_sync_server_cpu\",\"server_cpu_seconds\":$(python3 -c "print(round(($after - $before) / $(getconf CLK_TCK), 2))")}" \
  | tee -a "$OUT/compliance.json"
