#!/usr/bin/env bash
# Stop the dockerd that scripts/ensure-docker.sh started, and only that one.
#
# ensure-docker.sh writes the PID of a dockerd it started to $MODELCTL_DOCKERD_PIDFILE
# (/var/run/modelctl-dockerd.pid). No pidfile, a stale one, or a PID that is not a dockerd:
# nothing is stopped. An engine someone else started is never touched.
set -euo pipefail

PIDFILE=${MODELCTL_DOCKERD_PIDFILE:-/var/run/modelctl-dockerd.pid}
DEADLINE_S=${MODELCTL_DOCKERD_STOP_DEADLINE_S:-30}

say() { echo "stop-docker: $*"; }
die() { echo "stop-docker: ERROR: $*" >&2; exit 1; }

if [ ! -f "$PIDFILE" ]; then
    say "no $PIDFILE: dockerd was not started by ensure-docker.sh; nothing to stop"
    exit 0
fi
pid=$(cat "$PIDFILE")
if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    say "pid '$pid' from $PIDFILE is not running; removing the stale pidfile"
    rm -f "$PIDFILE"
    exit 0
fi
comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
if [ "$comm" != dockerd ]; then
    say "pid $pid is '$comm', not dockerd (PID reused?); removing the stale pidfile, stopping nothing"
    rm -f "$PIDFILE"
    exit 0
fi

say "stopping dockerd pid $pid (SIGTERM)"
kill -TERM "$pid"
deadline=$((SECONDS + DEADLINE_S))
while kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "dockerd pid $pid still running ${DEADLINE_S}s after SIGTERM"
    sleep 0.2
done
rm -f "$PIDFILE"
say "dockerd pid $pid stopped"
