#!/usr/bin/env bash
# Build frugal's container images from the Containerfile on this machine, with no registry reachable
# (package indexes only): a Debian base made here, then `buildah bud` of the Containerfile's targets.
#   scripts/build-images.sh                 # serving and full
#   scripts/build-images.sh gpu             # any of: serving full gpu
# Steps, each cached:
#   1. a Debian base root filesystem (mmdebstrap minbase + python3, python3-venv, ca-certificates) from
#      the apt sources of this machine, imported into podman's storage as localhost/frugal-base:<key>;
#   2. each target built with `buildah bud --build-arg BASE=<that image>`, pip reaching PyPI through
#      the host network and the host's CA bundle (mounted read-only over the image's during the build);
#   3. each image written as an OCI archive (gzip layers), <cache>/images/<target>-<key>.tar, where
#      <key> hashes the base, the Containerfile, the target's locks and the sources the image is built
#      from (the working tree's contents), so an unchanged tree is not rebuilt; only the latest archive
#      and podman image per target are kept.
# Every step of the Containerfile is cached in podman's storage (buildah --layers): a source change
# re-runs only frugal's own install (seconds; writing full's archive then takes about a minute), a lock
# change re-installs that lock. The base is made once; to take newer Debian packages, remove
# <cache>/images/base-*.tar and `podman rmi localhost/frugal-base:<tag>`. `podman image prune` frees
# what stale builds left in that cache (a later build re-runs any step whose cache it dropped).
# Tags (the Helm chart derives the serving and gpu images this way): localhost/frugal:<version> (full),
# localhost/frugal:<version>-serving, localhost/frugal:<version>-gpu, <version> from pyproject.toml.
# Prints KEY=value lines (IMAGE_<TARGET>, ARCHIVE_<TARGET>) on stdout and writes them to
# <cache>/images/images.env; progress and timings go to stderr. Load an archive into a node's
# containerd with `ctr -n k8s.io images import <archive>`, or into podman with `podman load -i <archive>`.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
DEBIAN_SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,ca-certificates"
APT_SOURCES="${FRUGAL_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"   # a deb822 file or a mirror URL
IMAGE_REPOSITORY="${FRUGAL_IMAGE_REPOSITORY:-localhost/frugal}"
BASE_REPOSITORY="localhost/frugal-base"
DEFAULT_TARGETS=(serving full)
# The CA bundle pip trusts inside the build (the Debian base's pip reads the system bundle): the host's,
# so that a TLS-intercepting proxy the host trusts is trusted during the build too.
CA_BUNDLE="${FRUGAL_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# crun 1.8 (Debian 12's default) refuses hybrid cgroup v1/v2 hosts; runc runs the RUN steps there.
OCI_RUNTIME="${FRUGAL_BUILD_RUNTIME:-runc}"
# -------------------------------------------------------------------------------------------------

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${FRUGAL_CACHE_DIR:-$HOME/.cache/frugal}"
IMAGES_DIR="$CACHE_DIR/images"
ENV_FILE="$IMAGES_DIR/images.env"
CONTAINERFILE="$REPO_ROOT/Containerfile"
# What the Containerfile copies into the images (besides requirements/): keep in step with its COPY lines.
SOURCES=(pyproject.toml setup.py README.md operator serving compression schema crds)

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

timed() {  # timed <what> <command...>
  local what="$1"; shift
  local start=$SECONDS
  log "$what ..."
  "$@"
  log "$what: done in $((SECONDS - start)) s"
}

# ---- arguments and tools ------------------------------------------------------------------------
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${DEFAULT_TARGETS[@]}")
for target in "${targets[@]}"; do
  case "$target" in
    serving|full|gpu) ;;
    *) die "unknown target '$target'; the targets are: serving full gpu" ;;
  esac
done
for tool in buildah podman skopeo mmdebstrap sha256sum flock; do
  command -v "$tool" >/dev/null \
    || die "'$tool' not found; on Debian/Ubuntu: apt-get install buildah podman skopeo mmdebstrap"
done
[[ -f "$CONTAINERFILE" ]] || die "no Containerfile at $CONTAINERFILE"
[[ "$(id -u)" == 0 ]] || log "warning: not root; buildah and mmdebstrap then need rootless setup (subuid ranges)"

mkdir -p "$IMAGES_DIR"
exec 9>"$IMAGES_DIR/.lock"
flock 9   # one builder at a time; others wait, then find the images warm

VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -1)"
[[ -n "$VERSION" ]] || die "no version in $REPO_ROOT/pyproject.toml"

image_of() {  # image_of <target> -> the tag
  case "$1" in
    full) echo "$IMAGE_REPOSITORY:$VERSION" ;;
    *) echo "$IMAGE_REPOSITORY:$VERSION-$1" ;;
  esac
}

locks_of() {  # locks_of <target> -> the locks its stages read (the wheel stage reads serving.txt)
  case "$1" in
    serving) echo requirements/serving.txt ;;
    full) echo requirements/all.txt requirements/serving.txt ;;
    gpu) echo requirements/all.txt requirements/gpu.txt requirements/serving.txt ;;
  esac
}

source_files() {  # the files the Containerfile's COPY lines see, one per line, sorted
  if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new (not ignored) files; a tracked file deleted in the working tree is not copied.
    (cd "$REPO_ROOT" && git ls-files --cached --others --exclude-standard -- "${SOURCES[@]}" \
      | while read -r file; do if [[ -f "$file" ]]; then echo "$file"; fi; done)
  else
    (cd "$REPO_ROOT" && find "${SOURCES[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc')
  fi | grep -v -e '/__pycache__/' -e '\.py[cod]$' -e '\.egg-info/' | LC_ALL=C sort -u
}

# ---- 1. the Debian base -------------------------------------------------------------------------
BASE_KEY="$(printf '%s\n' "$DEBIAN_SUITE" "$BASE_PACKAGES" "minbase merged-usr nodoc v1" | sha256sum | cut -c1-12)"
BASE_TAR="$IMAGES_DIR/base-$DEBIAN_SUITE-$BASE_KEY.tar"
BASE_IMAGE="$BASE_REPOSITORY:$DEBIAN_SUITE-$BASE_KEY"

make_base_tar() {
  [[ -f "$APT_SOURCES" || "$APT_SOURCES" == http* ]] \
    || die "no apt sources at $APT_SOURCES; set FRUGAL_APT_SOURCES to a deb822 sources file or a Debian mirror URL"
  # minbase plus what the recipe needs; no usrmerge package (it brings perl): mmdebstrap's merged-usr
  # hook makes the /bin -> usr/bin links; no docs, man pages or translations (as the -slim images).
  # shellcheck disable=SC2016  # "$1" in the customize hook is the chroot, expanded by mmdebstrap
  mmdebstrap --variant=minbase --mode=auto --format=tar --include="$BASE_PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/cache/ldconfig/aux-cache' \
    "$DEBIAN_SUITE" "$BASE_TAR.tmp" "$APT_SOURCES" 2>"$IMAGES_DIR/mmdebstrap.log" \
    || { tail -n 20 "$IMAGES_DIR/mmdebstrap.log" >&2
         die "mmdebstrap failed (log: $IMAGES_DIR/mmdebstrap.log); check that the Debian mirror in $APT_SOURCES is reachable"; }
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -f "$IMAGES_DIR"/base-*.tar.tmp
  find "$IMAGES_DIR" -maxdepth 1 -name 'base-*.tar' ! -name "$(basename "$BASE_TAR")" -delete
}

import_base() {
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null \
    || die "podman import of $BASE_TAR failed; remove it and run again"
}

if ! podman image exists "$BASE_IMAGE"; then
  [[ -f "$BASE_TAR" ]] || timed "making the Debian $DEBIAN_SUITE base with mmdebstrap" make_base_tar
  timed "importing the base as $BASE_IMAGE" import_base
fi

# ---- 2. and 3. the targets ----------------------------------------------------------------------
REVISION="unknown"
if git -C "$REPO_ROOT" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  REVISION="$(git -C "$REPO_ROOT" rev-parse HEAD)"
  # -dirty: the image's inputs differ from that commit's (uncommitted or new files).
  if [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- Containerfile .dockerignore requirements "${SOURCES[@]}")" ]]; then
    REVISION="$REVISION-dirty"
  fi
fi

BASE_ID="$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")"

key_of() {  # key_of <target>: the hash of everything that goes into the image
  local target="$1"
  {
    # the base by its content: a remade base (newer Debian packages) rebuilds the images
    echo "target=$target version=$VERSION base=$BASE_ID repository=$IMAGE_REPOSITORY"
    # shellcheck disable=SC2046
    (cd "$REPO_ROOT" && sha256sum Containerfile .dockerignore $(locks_of "$target"))
    source_files | (cd "$REPO_ROOT" && xargs -d '\n' sha256sum)
  } | sha256sum | cut -c1-16
}

build_target() {  # build_target <target> <image>
  local target="$1" image="$2" volume=()
  [[ -f "$CA_BUNDLE" ]] && volume=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  # --layers: every step is cached in podman's storage, so a source change re-runs only the last
  # steps and full and gpu share the locked packages' layers.
  buildah bud --layers --runtime "$OCI_RUNTIME" --network host "${volume[@]}" \
    --build-arg BASE="$BASE_IMAGE" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    --target "$target" --file "$CONTAINERFILE" --tag "$image" "$REPO_ROOT" >&2 \
    || die "buildah bud --target $target failed (output above). A failing pip step usually means PyPI is not
    reachable or a lock in requirements/ names a file PyPI no longer serves; set FRUGAL_BUILD_RUNTIME=crun or
    use 'buildah bud --isolation chroot' if runc cannot start containers here."
}

export_target() {  # export_target <image> <archive>
  rm -f "$2.tmp"
  # The OCI archive names the image by its full reference (org.opencontainers.image.ref.name), which
  # podman load and ctr import read back as the tag.
  skopeo copy --quiet "containers-storage:$1" "oci-archive:$2.tmp:$1" >&2 \
    || die "skopeo copy of $1 to an OCI archive failed (free disk space under $IMAGES_DIR?)"
  mv "$2.tmp" "$2"
}

drop_replaced() {  # drop_replaced <image id>: the image a tag named before, with the layers only it used
  local id="$1"
  [[ -n "$id" ]] || return 0
  if [[ "$(podman image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null || echo 1)" == 0 ]]; then
    podman rmi "$id" >/dev/null 2>&1 || log "note: the replaced image $id stays in podman's storage (in use?)"
  fi
}

# <cache>/images/<target>.state: "<key> <image id>" of the image last built or loaded for the target.
# (Not an image label: buildah 1.28 reuses a cached last step even where a label or build argument
# differs, so a label could not be trusted to name the key.)
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

declare -A BUILT_IMAGE BUILT_ARCHIVE
for target in "${targets[@]}"; do
  image="$(image_of "$target")"
  key="$(key_of "$target")"
  archive="$IMAGES_DIR/$target-$key.tar"
  state="$IMAGES_DIR/$target.state"
  previous="$(image_id "$image")"
  recorded="$(cat "$state" 2>/dev/null || true)"
  if [[ -f "$archive" && -n "$previous" && "$recorded" == "$key $previous" ]]; then
    log "$target: $image is up to date ($archive)"
  elif [[ -f "$archive" ]]; then
    timed "$target: loading $archive into podman's storage" podman load --quiet -i "$archive" >&2
    echo "$key $(image_id "$image")" >"$state"
    drop_replaced "$previous"
  else
    start=$SECONDS
    if [[ -z "$previous" || "$recorded" != "$key $previous" ]]; then
      timed "$target: building $image" build_target "$target" "$image"
      echo "$key $(image_id "$image")" >"$state"
    fi
    timed "$target: writing $archive" export_target "$image" "$archive"
    # Only the latest of each target is kept: its archive, and in podman's storage its image (the layers
    # it shares with the new one, e.g. the locked packages after a source change, stay).
    find "$IMAGES_DIR" -maxdepth 1 -name "$target-*.tar*" ! -name "$(basename "$archive")" -delete
    drop_replaced "$previous"
    size="$(podman image inspect --format '{{.Size}}' "$image")"
    log "$target: $image in $((SECONDS - start)) s: $((size / 1000000)) MB unpacked, archive $(du -m "$archive" | cut -f1) MiB (gzip layers)"
  fi
  BUILT_IMAGE[$target]="$image"
  BUILT_ARCHIVE[$target]="$archive"
done

# images.env keeps the lines of targets built earlier (a later `build-images.sh gpu` adds GPU).
declare -A ENTRIES
if [[ -f "$ENV_FILE" ]]; then
  while IFS='=' read -r name value; do
    if [[ "$name" =~ ^(IMAGE|ARCHIVE)_(SERVING|FULL|GPU)$ ]]; then ENTRIES[$name]="$value"; fi
  done <"$ENV_FILE"
fi
for target in "${targets[@]}"; do
  upper="${target^^}"
  ENTRIES[IMAGE_$upper]="${BUILT_IMAGE[$target]}"
  ENTRIES[ARCHIVE_$upper]="${BUILT_ARCHIVE[$target]}"
done
for name in "${!ENTRIES[@]}"; do
  if [[ "$name" == ARCHIVE_* && ! -f "${ENTRIES[$name]}" ]]; then unset "ENTRIES[$name]"; fi
done
for name in "${!ENTRIES[@]}"; do echo "$name=${ENTRIES[$name]}"; done | LC_ALL=C sort >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
for target in "${targets[@]}"; do
  upper="${target^^}"
  echo "IMAGE_$upper=${BUILT_IMAGE[$target]}"
  echo "ARCHIVE_$upper=${BUILT_ARCHIVE[$target]}"
done
