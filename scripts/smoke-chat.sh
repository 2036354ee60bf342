#!/usr/bin/env bash
# Wait until the gateway serves a model, then print one chat completion answered through it.
#   scripts/smoke-chat.sh [BASE_URL] [MODEL]     (defaults: http://localhost:8080, smollm2)
set -euo pipefail
BASE=${1:-http://localhost:${MODELCTL_PORT:-8080}}
MODEL=${2:-smollm2}
DEADLINE_S=${MODELCTL_WAIT_S:-300}

start=$(date +%s)
until curl -fsS "$BASE/readyz" >/dev/null 2>&1; do
    if (( $(date +%s) - start > DEADLINE_S )); then
        echo "smoke-chat: no ready replica behind $BASE after ${DEADLINE_S}s." >&2
        echo "smoke-chat: look at: docker compose logs controller" >&2
        exit 1
    fi
    sleep 1
done
echo "smoke-chat: $BASE ready after $(( $(date +%s) - start ))s; asking $MODEL:"
curl -fsS "$BASE/v1/chat/completions" -H 'Content-Type: application/json' -d @- <<JSON \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps(r, indent=2)); print("\nanswer:", r["choices"][0]["message"]["content"])'
{"model": "$MODEL", "max_tokens": 48,
 "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
JSON
