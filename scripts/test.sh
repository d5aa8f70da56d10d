#!/usr/bin/env bash
# `npm test`: build, lint, install what the tests need, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
npx biome check src test bench packages
bash scripts/system-deps.sh
# The interop tests drive the real OpenClaw CLI (Node 24 + openclaw from npm, cached in .cache/).
if [ -f scripts/openclaw-cache.sh ]; then
  eval "$(bash scripts/openclaw-cache.sh | grep -E '^(NODE24|OPENCLAW)=')"
  export CLAWGATE_OPENCLAW_NODE="$NODE24" CLAWGATE_OPENCLAW_CLI="$OPENCLAW"
fi
# A hung test fails after 10 minutes instead of holding CI until its own time limit.
node --test --test-concurrency=2 --test-timeout=600000 dist/test/*.test.js dist/test/security/*.test.js
