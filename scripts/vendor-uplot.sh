#!/usr/bin/env bash
# Vendor uPlot (the console's one JavaScript library, for its charts) from the npm registry into
# controller/api/static/vendor/uplot/: the page works offline and nothing is fetched from a CDN.
#
#   scripts/vendor-uplot.sh            the version pinned below
#   scripts/vendor-uplot.sh 1.6.33     another one (then commit the files and this script's pin)
#
# Copies dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE out of `npm pack uplot@VERSION`,
# and writes README.md there naming the version and the tarball's integrity hash.
set -euo pipefail

VERSION=${1:-1.6.32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/controller/api/static/vendor/uplot

say() { echo "vendor-uplot: $*"; }
die() { echo "vendor-uplot: ERROR: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm is needed (apt-get install -y --no-install-recommends npm)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "npm pack uplot@$VERSION (from the npm registry)"
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null) || die "npm pack uplot@$VERSION failed"
tarball=$(ls "$work"/uplot-*.tgz)
tar -xzf "$tarball" -C "$work"
integrity="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"

mkdir -p "$DEST"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$DEST/"
cat >"$DEST/README.md" <<MD
uPlot $VERSION (MIT, see LICENSE), from the npm registry: \`npm pack uplot@$VERSION\`
(integrity $integrity). Files: dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE.
Re-vendor with \`scripts/vendor-uplot.sh [VERSION]\`.
MD
say "copied uPlot $VERSION into ${DEST#"$ROOT"/}"
