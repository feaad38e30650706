#!/usr/bin/env bash
# Ensure the Google Cloud Storage emulator the component tier runs on loopback (tests/gcs_harness.py):
# fake-gcs-server (Go module github.com/fsouza/fake-gcs-server, BSD-2-Clause), built with `go install`
# from the Go module proxy at one pinned version, into
# ${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/frugal}/bin/fake-gcs-server-<version>/fake-gcs-server.
# It is built only when missing (a pin change gives a new directory); a warm run takes well under a
# second. The path is printed as FAKE_GCS_SERVER=<path> on stdout (everything else goes to stderr) and
# written to <cache>/bin/fake-gcs-server.env.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
FAKE_GCS_MODULE="github.com/fsouza/fake-gcs-server"
FAKE_GCS_VERSION="v1.56.1"
GO="${GO:-go}"
GO_BUILD_PARALLELISM="${FRUGAL_GO_BUILD_P:-2}"
# -------------------------------------------------------------------------------------------------

CACHE_DIR="${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/frugal}"
BIN_ROOT="$CACHE_DIR/bin"
ENV_FILE="$BIN_ROOT/fake-gcs-server.env"
OUT="$BIN_ROOT/fake-gcs-server-$FAKE_GCS_VERSION"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[fake-gcs-server-binary] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN_ROOT"
exec 7>"$BIN_ROOT/.fake-gcs-server.lock"
flock 7   # one builder at a time; others wait, then find the binary warm

if [[ ! -x "$OUT/fake-gcs-server" ]]; then
  command -v "$GO" >/dev/null || die "Go toolchain '$GO' not found (needed to build fake-gcs-server)"
  start=$SECONDS
  rm -rf "$OUT.tmp"
  mkdir -p "$OUT.tmp"
  log "building $FAKE_GCS_MODULE@$FAKE_GCS_VERSION (CGO off, -p $GO_BUILD_PARALLELISM, niced)"
  GOBIN="$OUT.tmp" nice -n 10 "$GO" install -p "$GO_BUILD_PARALLELISM" -trimpath -ldflags "-s -w" \
    "$FAKE_GCS_MODULE@$FAKE_GCS_VERSION" >&2 || die "go install $FAKE_GCS_MODULE@$FAKE_GCS_VERSION failed (see above)"
  [[ -x "$OUT.tmp/fake-gcs-server" ]] || die "go install left no fake-gcs-server in $OUT.tmp"
  rm -rf "$OUT"
  mv "$OUT.tmp" "$OUT"   # last: the binary's presence marks the directory complete
  log "built fake-gcs-server in $((SECONDS - start)) s"
fi

echo "FAKE_GCS_SERVER=$OUT/fake-gcs-server" >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
cat "$ENV_FILE"
