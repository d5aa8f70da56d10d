#!/usr/bin/env bash
# `npm run test:unit`: the fast suites, for the edit-build-test loop. They need no root, no
# network namespace, no browser, no nginx, no PostgreSQL and no OpenClaw download, and finish in
# well under a minute. `npm test` (scripts/test.sh) still runs everything, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
# Chosen by measured time (each well under 15 s on a shared 2-core machine); the slower suites
# that also qualify (fuzz, nodes, pairing, setup-codes, client-cli, cli, cli-help) run in `npm test`.
UNIT=(
  admission cli-verbs client-sdk cron dashboard-link defaults errors-doc exit-guard handshake log-scrub presence ratelimit
  rotation-grace smoke store transport security/edges security/gateway-identity security/strings
)
files=()
for name in "${UNIT[@]}"; do files+=("dist/test/${name}.test.js"); done
node --test --test-force-exit --test-concurrency=2 --test-timeout=120000 --import ./dist/test/helpers/exit-guard.js "${files[@]}"
