#!/usr/bin/env bash
# Make sure Debian's chromium is there for the console's browser tests (tests/api/
# test_page_browser.py drive it with Playwright from PyPI, which cannot download its own browsers
# here, so it is pointed at /usr/bin/chromium). Idempotent: a rerun with chromium in place only
# says which one it found.
#
#   - no /usr/bin/chromium -> apt-get install --no-install-recommends chromium (Debian's, ~8 s)
#
# Prints one line per action; fails with one clear line. Root only (installs packages).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

say() { echo "ensure-chromium: $*"; }
die() { echo "ensure-chromium: ERROR: $*" >&2; exit 1; }

version() { "$CHROMIUM" --version 2>/dev/null | head -n1; }

if [ -x "$CHROMIUM" ]; then
    say "chromium present ($(version))"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "$CHROMIUM is missing and installing it needs root: apt-get install chromium"
say "installing chromium from Debian (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || die "apt-get update failed"
apt-get install -y -qq --no-install-recommends chromium >/dev/null || die "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is not there"
say "installed $(version)"
