#!/usr/bin/env bash
# Benchmarks the findings path on this machine, from a release build:
#  1. parse + normalise + fingerprint: `cspm-bench parse --tool prowler` (the worker's own parser and
#     identity; with `--render`, also each finding's OCSF event, serialised as `cspm-worker normalize`
#     does) over the 200,000-finding file of the Celery baseline (generated deterministically by its
#     gen_findings.py, checked against its sha256), pinned to one core; findings/s, MB/s and peak RSS,
#     best and median of three runs after a warm-up;
#  2. persistence: `cspm-bench persist` (the worker's batched write path) against the Mongo-wire server
#     (or MONGODB_URI): findings/s and database round trips per finding, and the server's CPU seconds.
#
# Usage: scripts/bench-findings.sh [PERSIST_COUNT]   (default 20000)
# Results: one JSON line per phase on stdout, and $CSPM_STATE/bench/findings-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CSPM_STATE=${CSPM_STATE:-$(pwd)/.cspm/bench}
. scripts/lib.sh
trap stop_started EXIT
COUNT=${1:-20000}
ensure_tools
log "release build"
cargo build --release --locked -p cspm-worker -p cspm-bench
BIN="$CARGO_TARGET_DIR/release"
OUT="$CSPM_STATE/bench"; mkdir -p "$OUT"

BASELINE=""
for d in ../shared/bench/celery-baseline /work/shared/bench/celery-baseline; do
  [ -d "$d" ] && BASELINE=$(cd "$d" && pwd) && break
done
[ -n "$BASELINE" ] || { echo "error: the Celery baseline folder (shared/bench/celery-baseline) was not found" >&2; exit 1; }
DATA="$OUT/findings_200k.json"
if [ ! -f "$DATA" ]; then
  log "generating the 200,000-finding file"
  python3 "$BASELINE/gen_findings.py" --n 200000 --seed 42 --out "$DATA" >/dev/null
fi
want=$(awk '{print $1}' "$BASELINE/findings_200k.json.sha256")
got=$(sha256sum "$DATA" | awk '{print $1}')
[ "$want" = "$got" ] || { echo "error: $DATA does not match the baseline's sha256" >&2; exit 1; }

# One warm-up run (page cache), then three measured runs of each phase, pinned to one core.
parse_phase() { # extra cspm-bench parse arguments...
  taskset -c 0 "$BIN/cspm-bench" parse --tool prowler "$@" "$DATA" >/dev/null
  for _ in 1 2 3; do taskset -c 0 "$BIN/cspm-bench" parse --tool prowler "$@" "$DATA"; sleep 0.5; done | python3 -c "
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
rates = sorted(r['findings_per_s'] for r in rows)
print(json.dumps({'phase': rows[0]['phase'], 'findings': rows[0]['findings'], 'bytes': rows[0]['bytes'],
  'findings_per_s_best': rates[-1], 'findings_per_s_median': statistics.median(rates),
  'mb_per_s_best': max(r['mb_per_s'] for r in rows), 'peak_rss_mib': max(r['peak_rss_mib'] for r in rows)}))
"
}
log "parse + normalise + fingerprint, one core"
parse_phase | tee "$OUT/findings-parse.json"
log "... and OCSF render + serialise"
parse_phase --render | tee -a "$OUT/findings-parse.json"

if [ -z "${MONGODB_URI:-}" ]; then
  MONGO_PORT=$(free_port); start_mongo_wire "$MONGO_PORT"; MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
  MONGO_PID=$(ss -ltnp "sport = :$MONGO_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
fi
log "persistence: $COUNT findings through the worker's write path"
ticks() { [ -n "${MONGO_PID:-}" ] && awk '{print $14 + $15}' "/proc/$MONGO_PID/stat" || echo 0; }
before=$(ticks)
"$BIN/cspm-bench" --mongodb-uri "$MONGODB_URI" --db-prefix "benchfindings_$$_" persist --count "$COUNT" \
  | tee "$OUT/findings-persist.json"
after=$(ticks)
echo "{\"phase\":\"persist_server_cpu\",\"server_cpu_seconds\":$(python3 -c "print(round(($after - $before) / $(getconf CLK_TCK), 2))")}" \
  | tee -a "$OUT/findings-persist.json"
