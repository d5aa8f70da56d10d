#!/usr/bin/env bash
# `npm test`: build, lint, install what the tests need, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds the packages, the gateway and the single-file gateway build `clawgate gateway run` uses
# (the tests spawn the shipped artifact).
npm run build --silent
npm run lint --silent
bash scripts/system-deps.sh
# The interop tests drive the real OpenClaw CLI (Node 24 + openclaw from npm, cached in .cache/).
if [ -f scripts/openclaw-cache.sh ]; then
  eval "$(bash scripts/openclaw-cache.sh | grep -E '^(NODE24|OPENCLAW)=')"
  export CLAWGATE_OPENCLAW_NODE="$NODE24" CLAWGATE_OPENCLAW_CLI="$OPENCLAW"
fi
# In CI a test that cannot run here (no root for a network namespace, no nginx, no
# systemd-analyze) fails instead of skipping: a green CI run has tested everything.
if [ "${CI:-}" = true ]; then export CLAWGATE_TEST_STRICT=1; fi
# A hung test fails after 10 minutes instead of holding CI until its own time limit;
# --test-force-exit ends the run even if a failed test left a handle (socket, child) open.
# The exit guard fails a test file whose process ends with code 0 before all of its tests ran
# (the runner would otherwise count only what the file reported, and pass).
node --test --test-force-exit --test-concurrency=2 --test-timeout=600000 --import ./dist/test/helpers/exit-guard.js dist/test/*.test.js dist/test/security/*.test.js
