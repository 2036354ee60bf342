#!/usr/bin/env bash
# Make sure Debian's podman can `podman kube play` the rendered Kubernetes YAML with our images
# (tests/kubernetes/test_podman.py). Idempotent: a rerun with everything in place only checks.
#
#   - no podman                        -> apt-get install podman catatonit (catatonit: its pause binary)
#   - containers.conf sets no ulimits  -> default_ulimits nofile/nproc: podman otherwise raises them
#                                         to the hard limit, which these VMs refuse ("error setting
#                                         rlimit type 7: operation not permitted")
#   - an image missing or older in podman's own store than in Docker's
#                                      -> podman pull docker-daemon:IMAGE (a copy, seconds)
#
# Prints one line per action; fails with one clear line. Root only (installs packages).
set -euo pipefail

IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(modelctl/llamacpp:server)
CONF=/etc/containers/containers.conf

say() { echo "ensure-podman: $*"; }
die() { echo "ensure-podman: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, writes $CONF)"

if command -v podman >/dev/null 2>&1; then
    say "podman present ($(podman --version))"
else
    say "installing podman and catatonit from Debian (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends podman catatonit >/dev/null \
        || die "apt-get install podman catatonit failed"
    say "installed $(podman --version)"
fi

if grep -qs '^ *default_ulimits' "$CONF"; then
    say "$CONF sets default_ulimits"
elif grep -qs '^\[containers\]' "$CONF"; then
    die "$CONF has a [containers] table without default_ulimits; add: default_ulimits = [\"nofile=8192:8192\", \"nproc=4096:4096\"]"
else
    mkdir -p "$(dirname "$CONF")"
    printf '[containers]\ndefault_ulimits = ["nofile=8192:8192", "nproc=4096:4096"]\n' >>"$CONF"
    say "wrote default_ulimits to $CONF"
fi

for image in "${IMAGES[@]}"; do
    docker_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) \
        || die "image $image is not in the Docker engine; run \`make images\`"
    podman_id=$(podman image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    if [ "sha256:${podman_id#sha256:}" = "$docker_id" ]; then
        say "$image in podman's store (${docker_id:7:12})"
    else
        podman pull -q "docker-daemon:$image" >/dev/null || die "podman pull docker-daemon:$image failed"
        say "copied $image from Docker (${docker_id:7:12})"
    fi
done
