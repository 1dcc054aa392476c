#!/usr/bin/env bash
# Builds the image with no registry at all, runs a miner from it and checks its /health.
#
#   sudo deploy/docker/smoke.sh                      # base image made here with debootstrap
#   BASE_IMAGE=mirror.example/python:3.11-slim deploy/docker/smoke.sh
#
# 1. the base: BASE_IMAGE when given; otherwise a minimal Debian (SUITE, default bookworm) with python3
#    and python3-venv from DEBIAN_MIRROR, made by debootstrap (root) and imported with `docker import`;
# 2. an offline wheelhouse: the project and its dependencies as wheels, plus the build backend, made on
#    this host into deploy/docker/wheelhouse/ by a python3 of exactly the base's version (PYTHON, or the
#    first of python3, /usr/bin/python3, python3.X that matches): dependency markers such as
#    python_full_version are decided by the interpreter that resolves them;
# 3. `docker build` of deploy/docker/Dockerfile on that base with --network none (pip --no-index inside),
#    with the default user and with --build-arg UID=0;
# 4. the key-file mapping: a miner whose 0600 hotkey belongs to another uid stops with one clear line;
#    run as the key file's owner, and as an arbitrary uid that owns a copy, it answers /health.
#
# Needs a running Docker daemon (containers use --network host, so `dockerd --bridge=none` is enough)
# and, without BASE_IMAGE, debootstrap. Nothing leaves 127.0.0.1. Slow (minutes): not part of the tests.
# KEEP=1 keeps the wheelhouse and the images for a second run.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=${IMAGE:-inference-subnet:smoke}
PORT=${PORT:-18091}
KEEP=${KEEP:-0}
WHEELHOUSE=$REPO/deploy/docker/wheelhouse
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

step() { printf '\n== %s\n' "$*"; }
die() { printf 'smoke: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d)
CONTAINERS=()
cleanup() {
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
    if [ "$KEEP" != 1 ]; then
        find "$WHEELHOUSE" -mindepth 1 ! -name README.md -delete
        docker rmi "$IMAGE" "$IMAGE-root" >/dev/null 2>&1 || true
        docker image prune -f --filter label=inference-subnet.stage=build >/dev/null 2>&1 || true
        [ -z "${MADE_BASE:-}" ] || docker rmi "$MADE_BASE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

docker info >/dev/null 2>&1 || die "no Docker daemon answers (start one: dockerd --bridge=none --iptables=false &)"

step "base image"
if [ -z "${BASE_IMAGE:-}" ]; then
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (or name a base: BASE_IMAGE=...)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    BASE_IMAGE=isn-smoke-base:$SUITE
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$WORK/rootfs" "$DEBIAN_MIRROR" \
            > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
        rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
        tar -C "$WORK/rootfs" -c . | docker import --change "ENV $PATH_ENV" - "$BASE_IMAGE" >/dev/null
        rm -rf "$WORK/rootfs"
        MADE_BASE=$BASE_IMAGE
    fi
fi
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "base image $BASE_IMAGE is not in the local image store"
VERSION='import platform; print(platform.python_version())'
base_py=$(docker run --rm --network none "$BASE_IMAGE" python3 -c "$VERSION") \
    || die "base image $BASE_IMAGE has no python3"
if [ -z "${PYTHON:-}" ]; then
    for candidate in python3 /usr/bin/python3 "python${base_py%.*}"; do
        if [ "$("$candidate" -c "$VERSION" 2>/dev/null)" = "$base_py" ]; then PYTHON=$candidate; break; fi
    done
fi
[ -n "${PYTHON:-}" ] || die "no python $base_py on this host to make the base's wheels: name one with PYTHON=..."
host_py=$("$PYTHON" -c "$VERSION")
[ "$host_py" = "$base_py" ] || die "PYTHON=$PYTHON is python $host_py; the base's python3 is $base_py"
echo "base $BASE_IMAGE: python $base_py; wheels made by $PYTHON"

step "offline wheelhouse"
mapfile -t backend < <("$PYTHON" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$REPO/pyproject.toml")
"$PYTHON" -m pip wheel -q --wheel-dir "$WHEELHOUSE" "$REPO"
"$PYTHON" -m pip download -q --dest "$WHEELHOUSE" "${backend[@]}"
echo "$(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"

step "docker build (base $BASE_IMAGE, no index)"
docker build -q --force-rm --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$REPO/deploy/docker/Dockerfile" -t "$IMAGE" "$REPO"
docker run --rm --network none "$IMAGE" config show --help >/dev/null
echo "default user: $(docker image inspect -f '{{.Config.User}}' "$IMAGE")"

step "docker build --build-arg UID=0 --build-arg GID=0 (root operators)"
docker build -q --force-rm --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg UID=0 --build-arg GID=0 \
    -f "$REPO/deploy/docker/Dockerfile" -t "$IMAGE-root" "$REPO"
echo "default user: $(docker image inspect -f '{{.Config.User}}' "$IMAGE-root"), runs as uid" \
    "$(docker run --rm --network none --entrypoint python3 "$IMAGE-root" -c 'import os; print(os.getuid())')"

step "wallet: a 0600 hotkey owned by root"
mkdir -p "$WORK/wallets"
docker run --rm --network none --user 0:0 -v "$WORK/wallets:/wallets" "$IMAGE" \
    wallet create --name smoke --hotkey default --path /wallets >/dev/null
stat -c '%a %u:%g %n' "$WORK/wallets/smoke/hotkeys/default"

miner() {  # miner NAME USER WALLETS: start a miner container in the background
    CONTAINERS+=("$1")
    docker run -d --name "$1" --network host --user "$2" -v "$3:/wallets:ro" "$IMAGE" \
        miner --wallet-name smoke --host 127.0.0.1 --port "$PORT" --network ws://127.0.0.1:1 >/dev/null
}

health() {  # health NAME: wait for the miner's /health (60 s at most), print it, stop the container
    local body=""
    for _ in $(seq 60); do
        if body=$(docker exec "$1" python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2).read().decode())" 2>/dev/null); then
            echo "GET /health -> $body"
            docker rm -f "$1" >/dev/null
            return 0
        fi
        [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || { docker logs "$1"; die "$1 exited"; }
        sleep 1
    done
    docker logs "$1"
    die "$1: no /health answer within 60 s"
}

step "default user (uid 10001) with root's key file: one clear line, exit 2"
set +e
out=$(docker run --rm --network host -v "$WORK/wallets:/wallets:ro" "$IMAGE" \
    miner --wallet-name smoke --host 127.0.0.1 --port "$PORT" --network ws://127.0.0.1:1 2>&1)
rc=$?
set -e
echo "exit $rc: $out"
[ "$rc" = 2 ] || die "expected exit 2, got $rc"
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && ! grep -q Traceback <<<"$out" || die "expected one line, no traceback"

owner=$(stat -c '%u:%g' "$WORK/wallets/smoke/hotkeys/default")
step "run as the key file's owner (--user $owner)"
miner isn-smoke-owner "$owner" "$WORK/wallets"
health isn-smoke-owner

step "run as an arbitrary uid that owns its copy of the keys (--user 4242:4242, no passwd entry)"
cp -a "$WORK/wallets" "$WORK/wallets-4242"
chown -R 4242:4242 "$WORK/wallets-4242"
miner isn-smoke-4242 4242:4242 "$WORK/wallets-4242"
health isn-smoke-4242

step "ok"
