#!/usr/bin/env bash
# Ensure the Azure Blob Storage emulator the component tier runs on loopback (tests/azure_harness.py):
# Azurite (npm package `azurite`, MIT), installed from the npm registry at one pinned version with its
# lock-free dependency tree, into ${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/frugal}/bin/azurite-<version>.
# It is installed only when missing (a pin change gives a new directory); a warm run takes well under a
# second. The entry point is printed as AZURITE_BLOB=<path> on stdout (everything else goes to stderr)
# and written to <cache>/bin/azurite.env. Needs Node.js (>= 18) and npm.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
AZURITE_VERSION="3.37.0"
NODE="${NODE:-node}"
NPM="${NPM:-npm}"
# -------------------------------------------------------------------------------------------------

CACHE_DIR="${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/frugal}"
BIN_ROOT="$CACHE_DIR/bin"
ENV_FILE="$BIN_ROOT/azurite.env"
OUT="$BIN_ROOT/azurite-$AZURITE_VERSION"
ENTRY="$OUT/node_modules/.bin/azurite-blob"

log() { printf '[azurite-binary] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN_ROOT"
exec 7>"$BIN_ROOT/.azurite.lock"
flock 7   # one installer at a time; others wait, then find it warm

if [[ ! -f "$OUT/.complete" ]]; then
  command -v "$NODE" >/dev/null || die "Node.js '$NODE' not found (Azurite runs on Node)"
  command -v "$NPM" >/dev/null || die "npm '$NPM' not found (it installs Azurite from the npm registry)"
  start=$SECONDS
  rm -rf "$OUT.tmp"
  mkdir -p "$OUT.tmp"
  log "installing azurite@$AZURITE_VERSION from the npm registry"
  # --ignore-scripts: nothing of the package runs at install time; --no-fund/--no-audit: no extra calls.
  "$NPM" install --prefix "$OUT.tmp" --no-save --no-package-lock --ignore-scripts --no-fund --no-audit \
    --loglevel=error "azurite@$AZURITE_VERSION" >&2 || die "npm install azurite@$AZURITE_VERSION failed (see above)"
  got="$("$NODE" -e "console.log(require('$OUT.tmp/node_modules/azurite/package.json').version)")"
  [[ "$got" == "$AZURITE_VERSION" ]] || die "npm installed azurite $got, not $AZURITE_VERSION"
  rm -rf "$OUT"
  mv "$OUT.tmp" "$OUT"
  touch "$OUT/.complete"   # last: its presence marks the directory complete
  log "installed azurite $AZURITE_VERSION in $((SECONDS - start)) s"
fi
[[ -x "$ENTRY" ]] || die "$ENTRY is missing; remove $OUT and rerun"

echo "AZURITE_BLOB=$ENTRY" >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
cat "$ENV_FILE"
