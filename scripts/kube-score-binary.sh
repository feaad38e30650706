#!/usr/bin/env bash
# Ensure kube-score, the manifest linter the control-plane tier runs on the rendered chart and on the
# objects the operator creates (tests/controlplane/test_kube_score.py). Built from its Go module at a
# pinned version (its own go.mod and go.sum fix every dependency), once, into
# ${FRUGAL_CACHE_DIR:-~/.cache/frugal}/bin/kube-score-<version>/; the path goes to
# <cache>/bin/kube-score.env (KUBE_SCORE=path). A warm run takes well under a second.
set -euo pipefail

KUBE_SCORE_VERSION="v1.20.0"
GO="${GO:-go}"

CACHE_DIR="${FRUGAL_CACHE_DIR:-$HOME/.cache/frugal}"
BIN_ROOT="$CACHE_DIR/bin"
OUT="$BIN_ROOT/kube-score-$KUBE_SCORE_VERSION"
ENV_FILE="$BIN_ROOT/kube-score.env"

log() { printf '[kube-score-binary] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN_ROOT"
exec 7>"$BIN_ROOT/.kube-score.lock"
flock 7

if [[ -x "$OUT/kube-score" ]]; then
  log "kube-score $KUBE_SCORE_VERSION already in $OUT"
else
  command -v "$GO" >/dev/null || die "Go toolchain '$GO' not found (needed to build kube-score)"
  start=$SECONDS
  log "building kube-score $KUBE_SCORE_VERSION from github.com/zegl/kube-score (about a minute) ..."
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false" GOBIN="$tmp" \
    "$GO" install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  "$tmp/kube-score" version >/dev/null || die "the built kube-score does not run"
  mkdir -p "$OUT"
  mv "$tmp/kube-score" "$OUT/kube-score"
  log "built kube-score in $((SECONDS - start)) s"
fi
printf 'KUBE_SCORE=%s\n' "$OUT/kube-score" > "$ENV_FILE"
cat "$ENV_FILE"
