#!/usr/bin/env bash
# Runs one fuzz target for a while, seeded from the sample reports.
#
#   fuzz/run.sh <prowler|trivy|zap|nmap|wapiti> [seconds] [extra libFuzzer flags...]
#
# The corpus grows in $CSPM_FUZZ_CORPUS/<target> (default /var/tmp/cspm-fuzz-corpus): it is seeded from
# the fixture folders (copied, never edited) and keeps what libFuzzer adds between runs. Crashes,
# timeouts and OOMs land in fuzz/artifacts/<target>/. The build uses its own target directory, so it
# never disturbs other builds. The machine's one toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the
# -Z flags that cargo fuzz passes (sanitizer, coverage instrumentation).
set -euo pipefail

target=${1:?usage: fuzz/run.sh <prowler|trivy|zap|nmap|wapiti> [seconds] [libFuzzer flags...]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
fixtures=${CSPM_FIXTURES_DIR:-$repo/../shared/fixtures}
[ -d "$fixtures" ] || fixtures=/work/shared/fixtures
corpus_root=${CSPM_FUZZ_CORPUS:-/var/tmp/cspm-fuzz-corpus}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/cspm-fuzz-target}
export RUSTC_BOOTSTRAP=1

case $target in
  prowler) seeds=("$fixtures/prowler/examples") ;;
  trivy) seeds=("$fixtures/trivy/golden" "$fixtures/trivy/defectdojo" "$repo/worker/testdata/trivy") ;;
  zap) seeds=("$fixtures/zap/zap-extensions" "$fixtures/zap/bcgov") ;;
  nmap) seeds=("$fixtures/nmap/generated" "$fixtures/nmap/defectdojo") ;;
  wapiti) seeds=("$fixtures/wapiti" "$repo/worker/testdata/wapiti") ;;
  *) echo "unknown target $target (prowler, trivy, zap, nmap, wapiti)" >&2; exit 2 ;;
esac

corpus=$corpus_root/$target
mkdir -p "$corpus" "$here/artifacts/$target"
for dir in "${seeds[@]}"; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    case $f in *.json | *.xml) ;; *) continue ;; esac
    [ -f "$f" ] && cp -n "$f" "$corpus/seed-$(basename "$dir")-$(basename "$f")"
  done
done
# Earlier findings (regression inputs) seed the corpus too.
for f in "$repo"/worker/testdata/fuzz/"$target"-*.bin; do
  [ -f "$f" ] && cp -n "$f" "$corpus/"
done

cd "$here"
exec cargo fuzz run -O "$target" "$corpus" -- \
  -dict="$here/dict/$target.dict" \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
  -print_final_stats=1 "$@"
