#!/usr/bin/env bash
# Benchmarks the findings path on this machine, from a release build:
#  1. parse + normalise + fingerprint: `cspm-worker normalize --tool prowler` (the worker's own parser,
#     identity and OCSF rendering, writing NDJSON to /dev/null) over the 200,000-finding file of the
#     Celery baseline (generated deterministically by its gen_findings.py, checked against its sha256),
#     pinned to one core; findings/s, MB/s and peak RSS, best and median of three runs;
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
BYTES=$(stat -c %s "$DATA")

log "parse + normalise + fingerprint, one core, three runs"
results=()
for i in 1 2 3; do
  taskset -c 0 /usr/bin/time -f '%e %M' -o "$OUT/time.$i" "$BIN/cspm-worker" normalize --tool prowler "$DATA" \
    > >(wc -l > "$OUT/lines.$i")
  sleep 0.5
  read -r secs rss < "$OUT/time.$i"
  results+=("$secs $rss $(cat "$OUT/lines.$i")")
done
printf '%s\n' "${results[@]}" | python3 -c "
import json, statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
secs = sorted(r[0] for r in rows); rss = max(r[1] for r in rows); events = int(rows[0][2])
best, med = secs[0], statistics.median(secs)
print(json.dumps({'phase': 'parse_normalise', 'findings': events, 'bytes': $BYTES,
  'best_seconds': best, 'median_seconds': med,
  'findings_per_s_best': round(events / best), 'findings_per_s_median': round(events / med),
  'mb_per_s_best': round($BYTES / best / 1e6, 1), 'peak_rss_mib': round(rss / 1024, 1)}))
" | tee "$OUT/findings-parse.json"

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
