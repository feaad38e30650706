#!/usr/bin/env bash
# Ensure the real Prometheus server (and promtool) the tests/controlplane tier runs on loopback:
#   prometheus and promtool extracted from Debian's `prometheus` package, pinned to one version,
#   fetched with `apt-get download` (no root, nothing installed) and unpacked with `dpkg-deb -x`.
# Binaries live in ${FRUGAL_CACHE_DIR:-~/.cache/frugal}/bin/prometheus-<version>/ and are fetched only
# when missing (a pin change gives a new directory). A warm run takes well under a second.
# The paths are printed and written to <cache>/bin/prometheus.env (KEY=path lines). This is a file of
# its own: scripts/controlplane-binaries.sh rewrites controlplane.env whole on every run.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"   # Debian 12 (bookworm)
PROMETHEUS_VERSION="2.42.0"                     # what `prometheus --version` must report
# -------------------------------------------------------------------------------------------------

CACHE_DIR="${FRUGAL_CACHE_DIR:-$HOME/.cache/frugal}"
BIN_ROOT="$CACHE_DIR/bin"
ENV_FILE="$BIN_ROOT/prometheus.env"
OUT="$BIN_ROOT/prometheus-$PROMETHEUS_DEB_VERSION"
TMP_DIR=""

log() { printf '[prometheus-binary] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN_ROOT"
exec 8>"$BIN_ROOT/.prometheus.lock"
flock 8   # one fetcher at a time; others wait, then find the binaries warm

apt_update() {  # refresh the package lists once (root, or passwordless sudo)
  if [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n apt-get update -qq
  else
    return 1
  fi
}

fetch_deb() {  # fetch_deb <dir>: download prometheus=$PROMETHEUS_DEB_VERSION's .deb into <dir>
  local dir="$1" err
  if err="$(cd "$dir" && apt-get download -q "prometheus=$PROMETHEUS_DEB_VERSION" 2>&1)"; then return; fi
  log "apt-get download failed (${err##*$'\n'}); running apt-get update once and retrying"
  apt_update >&2 || true
  (cd "$dir" && apt-get download -q "prometheus=$PROMETHEUS_DEB_VERSION" >&2) \
    || die "cannot download Debian's prometheus=$PROMETHEUS_DEB_VERSION: run 'sudo apt-get update' on a Debian 12 (bookworm) machine with the bookworm(-updates/-security) apt sources, then rerun $0"
}

prometheus_fetch() {
  if [[ -x "$OUT/prometheus" && -x "$OUT/promtool" ]]; then
    log "prometheus $PROMETHEUS_DEB_VERSION already in $OUT"
    return
  fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb are needed to fetch Debian's prometheus package (run on Debian 12)"
  local start=$SECONDS tmp deb
  tmp="$(mktemp -d)"
  TMP_DIR="$tmp"
  trap 'rm -rf "$TMP_DIR"' EXIT
  log "fetching prometheus $PROMETHEUS_DEB_VERSION from Debian's package"
  fetch_deb "$tmp"
  deb="$(ls "$tmp"/prometheus_*.deb | head -1)"
  dpkg-deb -x "$deb" "$tmp/root"
  mkdir -p "$OUT"
  for tool in prometheus promtool; do
    [[ -f "$tmp/root/usr/bin/$tool" ]] || die "$deb has no usr/bin/$tool"
    install -m 0755 "$tmp/root/usr/bin/$tool" "$OUT/$tool.tmp"
  done
  local got
  for tool in prometheus promtool; do
    got="$("$OUT/$tool.tmp" --version 2>&1 || true)"
    [[ "$got" == *"version $PROMETHEUS_VERSION"* ]] \
      || die "$tool from $deb does not run or is not $PROMETHEUS_VERSION ($got); update the pin"
  done
  mv "$OUT/promtool.tmp" "$OUT/promtool"
  mv "$OUT/prometheus.tmp" "$OUT/prometheus"   # last: its presence marks the directory complete
  log "fetched prometheus and promtool in $((SECONDS - start)) s"
}

prometheus_fetch
"$OUT/prometheus" --version >/dev/null 2>&1 || die "$OUT/prometheus --version fails; remove $OUT and rerun"

{
  echo "PROMETHEUS=$OUT/prometheus"
  echo "PROMTOOL=$OUT/promtool"
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
cat "$ENV_FILE"
