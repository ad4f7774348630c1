#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, the compose file, unit tests, and the
# integration and end-to-end tests against real Redis, the Mongo-wire server, an S3 test server (moto),
# real scanners and the real Docker engine (servers started here, on loopback, and stopped at the end;
# container images built here by scripts/images.sh). Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
trap stop_started EXIT

ensure_tools
log "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "compose file"
SECRET_KEY=$(printf 'x%.0s' {1..40}) CLOUD_ENCRYPTION_KEY=$(printf 'ab%.0s' {1..32}) \
  PROWLER_HOST_OUTPUT_DIR=/tmp/cspm-output docker-compose config -q

log "building"
cargo build --workspace --bins --tests --locked

# Scanner and worker images for the Docker runner's tests, built here without a registry; reused while
# their recipes do not change (the worker image is remade from the binary just built, in seconds).
log "container images"
scripts/images.sh base nmap trivy wapiti prowler worker

REDIS_PORT=$(free_port); MONGO_PORT=$(free_port); S3_PORT=$(free_port)
log "starting Redis on :$REDIS_PORT, the Mongo-wire server on :$MONGO_PORT and the S3 test server on :$S3_PORT"
start_redis "$REDIS_PORT"
start_mongo_wire "$MONGO_PORT"
start_moto "$S3_PORT"
export CSPM_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export CSPM_TEST_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
export CSPM_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export CSPM_BIN_DIR="$CARGO_TARGET_DIR/debug"
if [ -z "${CSPM_FIXTURES_DIR:-}" ]; then
  for d in ../shared/fixtures /work/shared/fixtures; do
    [ -d "$d" ] && export CSPM_FIXTURES_DIR=$(cd "$d" && pwd) && break
  done
fi

log "tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
