#!/usr/bin/env bash
# Ensure the real S3 server the test tiers run on loopback (tests/s3_harness.py): SeaweedFS's `weed`
# binary (master, volume server, filer and S3 gateway in one; Apache-2.0), built from the Go module proxy
# at one pinned pseudo-version.
# The binary lives in ${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/frugal}/bin/seaweedfs-<version>/weed
# and is built only when missing (a pin change gives a new directory). A warm run takes well under a
# second. The path is printed as WEED=<path> on stdout (everything else goes to stderr) and written to
# <cache>/bin/seaweedfs.env, a file of its own like prometheus.env.
#
# Why not `go install github.com/seaweedfs/seaweedfs/weed@<version>`: SeaweedFS's go.mod carries a
# `replace` directive (tyler-smith/go-bip39 => cosmos/go-bip39), and `go install pkg@version` refuses
# any module whose go.mod has one. So the module is fetched with `go mod download` and built inside its
# read-only module-cache directory, as its own main module: exactly upstream's go.mod and go.sum,
# replace included, nothing generated or edited.
# CGO_ENABLED=0 and no build tags, as upstream's release builds: the optional filer stores and
# backends (sqlite, rocksdb, foundationdb, ydb, tikv, elastic, gocdk, rclone, ...) stay out, and the
# binary is static. The default leveldb filer store is pure Go.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
SEAWEEDFS_MODULE="github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"   # upstream commit 7506e5f91cd6 (2026-11-09)
GO="${GO:-go}"
GO_BUILD_PARALLELISM="${FRUGAL_GO_BUILD_P:-2}"
# -------------------------------------------------------------------------------------------------

CACHE_DIR="${FRUGAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/frugal}"
BIN_ROOT="$CACHE_DIR/bin"
ENV_FILE="$BIN_ROOT/seaweedfs.env"
OUT="$BIN_ROOT/seaweedfs-$SEAWEEDFS_VERSION"
COMMIT="${SEAWEEDFS_VERSION##*-}"

# -mod=readonly: the module cache directory cannot be written, so a missing go.sum line must fail loudly.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"

log() { printf '[seaweedfs-binary] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN_ROOT"
exec 7>"$BIN_ROOT/.seaweedfs.lock"
flock 7   # one builder at a time; others wait, then find the binary warm

weed_build() {
  if [[ -x "$OUT/weed" ]]; then
    log "weed $SEAWEEDFS_VERSION already in $OUT"
    return
  fi
  command -v "$GO" >/dev/null || die "Go toolchain '$GO' not found (needed to build SeaweedFS's weed)"
  local module_dir start=$SECONDS
  log "fetching $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION from the Go module proxy"
  module_dir="$("$GO" mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" \
    || die "go mod download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION failed (see above)"
  [[ -n "$module_dir" && -f "$module_dir/go.mod" ]] \
    || die "go mod download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION gave no module directory"
  mkdir -p "$OUT"
  log "building weed (CGO off, -p $GO_BUILD_PARALLELISM, niced); a cold build takes many minutes"
  (cd "$module_dir" && nice -n 10 "$GO" build -p "$GO_BUILD_PARALLELISM" -trimpath \
    -ldflags "-s -w -X $SEAWEEDFS_MODULE/weed/util/version.COMMIT=$COMMIT" -o "$OUT/weed.tmp" ./weed) >&2 \
    || die "go build of $SEAWEEDFS_MODULE/weed@$SEAWEEDFS_VERSION failed (see above)"
  local got
  got="$("$OUT/weed.tmp" version 2>&1 || true)"
  [[ "$got" == *"$COMMIT"* ]] || die "the weed just built does not run or does not report $COMMIT ($got)"
  got="${got%%$'\n'*}"   # its first line; an advertisement follows
  mv "$OUT/weed.tmp" "$OUT/weed"   # last: its presence marks the directory complete
  log "built weed in $((SECONDS - start)) s ($(du -h "$OUT/weed" | cut -f1)): $got"
}

weed_build
"$OUT/weed" version >/dev/null 2>&1 || die "$OUT/weed version fails; remove $OUT and rerun"

echo "WEED=$OUT/weed" >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
cat "$ENV_FILE"
