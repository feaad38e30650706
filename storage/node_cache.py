"""A node's cache of verified model files, shared by the serving pods on that node.

Why: every new serving pod fetches its variant from the bucket (or reads it from the claim) and hashes
it before loading. On one node the second replica, and every wake from zero, would do the same work
again for the same bytes. The cache keeps each variant's files once per node, verified once.

Layout under a cache root (one per namespace in a cluster, so a tenant never reads another's models)::

    variants/<key>/<relative path>   a variant's files, read-only, as the manifest names them
    inbox/<key>.<random>/            a pod's offer: the files, then offer.json last
    inbox/<key>.<random>.used        a pod's note that it served from variants/<key> (for eviction)
    tmp/, trash/                     the agent's own: copies in progress, evicted entries

``<key>`` is :func:`variant_key`: the sha256 over the variant's file names, sizes and sha256s. A
changed artifact has another key, so a stale entry can never be served for it; two ModelDeployments
with the same bytes share one entry.

Who writes what: pods mount ``variants/`` read-only and ``inbox/`` writable. Only the node's agent
(:class:`CacheAgent`, ``frugal model-cache``) writes ``variants/``: it copies an offer's files into
``tmp/`` while hashing them, so what it publishes is its own inode, whatever the offering pod does to
its files afterwards, checks every size and sha256 against the offer and the key, then renames the
directory into ``variants/`` (atomic: a reader sees all of an entry or none). A pod that finds its key
trusts the files without hashing: nobody else can write them. An entry is evicted least recently used
first when the cache exceeds its budget (renamed into ``trash/`` first, so no reader sees half of it;
a pod that already opened the files keeps them, as Linux keeps an unlinked inode).

Nothing here is a library's: fsspec's local caches (``filecache``, ``simplecache``) key by URL and
trust the process that writes them, which is what a shared, read-only, per-node cache must not do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

VARIANTS, INBOX, TMP, TRASH = "variants", "inbox", "tmp", "trash"
OFFER = "offer.json"
USED_SUFFIX = ".used"
MAX_OFFER_BYTES = 1 << 20  # offer.json: a list of names and hashes, never this large
STALE_OFFER_SECONDS = 600.0  # an offer without offer.json this long after its last write was abandoned
INBOX_MODE = 0o1733  # anyone may create (pods run as any uid), nobody may list or remove another's
BLOCK = 1 << 20


@dataclass(frozen=True)
class CachedFile:
    """One file of a variant as its manifest names it."""

    relative: str
    sha256: str
    size: int


def variant_key(files: Iterable[CachedFile]) -> str:
    """The cache key of a variant: the sha256 over its files' names, sizes and sha256s, in name order."""
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.relative):
        digest.update(f"{item.relative}\t{item.size}\t{item.sha256}\n".encode())
    return digest.hexdigest()


def safe_relative(relative: str) -> bool:
    """A name inside a directory: relative, no ``..``, no empty or dot segments."""
    pure = PurePosixPath(relative)
    return (
        bool(relative)
        and not pure.is_absolute()
        and all(part not in ("", ".", "..") for part in pure.parts)
        and "\\" not in relative
    )


# ------------------------------------------------------------------------------------------ pods


@dataclass(frozen=True)
class NodeCache:
    """A serving pod's view of the cache: `variants` (read-only to it) and `inbox` (where it offers)."""

    variants: Path
    inbox: Path | None = None

    @classmethod
    def at(cls, root: Path) -> NodeCache:
        return cls(root / VARIANTS, root / INBOX)

    def lookup(self, files: Iterable[CachedFile]) -> Path | None:
        """The directory holding every one of `files` with its size, or None (not cached, or an entry
        being evicted). The agent verified the bytes; only it can write here."""
        wanted = list(files)
        directory = self.variants / variant_key(wanted)
        try:
            for item in wanted:
                if (directory / item.relative).stat().st_size != item.size:
                    return None
        except OSError:
            return None
        return directory

    def mark_used(self, files: Iterable[CachedFile]) -> None:
        """Tell the agent this variant was served from the cache now (best effort)."""
        if self.inbox is None:
            return
        try:
            (self.inbox / f"{variant_key(files)}.{secrets.token_hex(6)}{USED_SUFFIX}").touch()
        except OSError as exc:
            log.debug("cannot mark the node cache entry used (%s)", exc)

    def offer(self, files: Iterable[CachedFile], source: Path) -> bool:
        """Copy `files` from `source` (verified by the caller) into the inbox for the agent; True when
        offered. Best effort: a full or unwritable inbox only means the next pod fetches again."""
        if self.inbox is None:
            return False
        wanted = list(files)
        key = variant_key(wanted)
        offer = self.inbox / f"{key}.{secrets.token_hex(6)}"
        try:
            offer.mkdir(mode=0o700)
            for item in wanted:
                target = offer / item.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / item.relative, target)
            document = {"key": key, "files": [vars(item) for item in wanted]}
            (offer / f".{OFFER}").write_text(json.dumps(document))
            (offer / f".{OFFER}").rename(offer / OFFER)  # whole or absent: the agent waits for it
            # The agent (another uid) must read the files: open the offer up only once it is complete.
            for path in [offer, *offer.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        except OSError as exc:
            log.info("not offered to the node cache (%s): the next pod on this node fetches again", exc)
            with contextlib.suppress(OSError):
                shutil.rmtree(offer)
            return False
        return True


# ------------------------------------------------------------------------------------------ the agent


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    last_used: float


def evictions(entries: Iterable[Entry], budget_bytes: int) -> list[str]:
    """The keys to evict, least recently used first, until what stays fits `budget_bytes`."""
    ordered = sorted(entries, key=lambda e: (e.last_used, e.key))
    total = sum(e.size for e in ordered)
    chosen = []
    for entry in ordered:
        if total <= budget_bytes:
            break
        chosen.append(entry.key)
        total -= entry.size
    return chosen


class OfferRefused(Exception):
    """An offer the agent does not publish (the message says why, for its log)."""


@dataclass
class StepReport:
    accepted: list[str]
    refused: list[str]
    evicted: list[str]
    bytes_cached: int


class CacheAgent:
    """The node's writer of one cache root: accepts offers, records use, evicts over `budget_bytes`."""

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes

    def prepare(self) -> None:
        """Create the layout with its modes (idempotent; fixes an inbox another process created)."""
        for name, mode in ((VARIANTS, 0o755), (TMP, 0o700), (TRASH, 0o700), (INBOX, INBOX_MODE)):
            path = self.root / name
            path.mkdir(parents=True, exist_ok=True)
            if path.stat().st_mode & 0o7777 != mode:
                path.chmod(mode)

    def step(self, now: float | None = None, evict: bool = True) -> StepReport:
        """One pass: publish complete offers, note uses, evict over budget (unless the caller evicts
        across several roots itself), empty the trash."""
        now = time.time() if now is None else now
        self.prepare()
        accepted, refused = [], []
        for offer in sorted(p for p in (self.root / INBOX).iterdir() if p.is_dir() and not p.is_symlink()):
            if not (offer / OFFER).is_file():
                if now - _last_write(offer) > STALE_OFFER_SECONDS:
                    _remove(offer)
                continue
            try:
                accepted.append(self.accept(offer, now))
            except OfferRefused as why:
                refused.append(f"{offer.name}: {why}")
                log.warning("node cache: refused the offer %s: %s", offer.name, why)
            finally:
                _remove(offer)
        self._note_uses(now)
        evicted = evictions(self.entries(), self.budget_bytes) if evict else []
        for key in evicted:
            self.evict(key)
        for leftover in (self.root / TRASH).iterdir():
            _remove(leftover)
        return StepReport(accepted, refused, evicted, sum(e.size for e in self.entries()))

    def accept(self, offer: Path, now: float | None = None) -> str:
        """Copy the offer's files into a new entry, hashing each; publish it under its key, used `now`."""
        files, key = _read_offer(offer)
        target = self.root / VARIANTS / key
        if target.is_dir():
            return key  # already cached (another pod offered the same bytes first)
        size = sum(f.size for f in files)
        if size > self.budget_bytes:
            raise OfferRefused(f"{size} bytes, more than the cache's budget of {self.budget_bytes}")
        staging = self.root / TMP / f"{key}.{secrets.token_hex(6)}"
        staging.mkdir(mode=0o700)
        try:
            for item in files:
                _copy_verified(offer / item.relative, staging / item.relative, item)
            for path in sorted(staging.rglob("*"), reverse=True):
                path.chmod(0o555 if path.is_dir() else 0o444)
            staging.chmod(0o555)
            os.rename(staging, target)
        except BaseException:
            _remove(staging)
            raise
        stamp = time.time() if now is None else now
        os.utime(target, (stamp, stamp))
        return key

    def entries(self) -> list[Entry]:
        found = []
        for path in (self.root / VARIANTS).iterdir():
            with contextlib.suppress(OSError):
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                found.append(Entry(path.name, size, path.stat().st_mtime))
        return found

    def _note_uses(self, now: float) -> None:
        for mark in (self.root / INBOX).glob(f"*{USED_SUFFIX}"):
            entry = self.root / VARIANTS / mark.name.split(".", 1)[0]
            with contextlib.suppress(OSError):
                if entry.is_dir():
                    os.utime(entry, (now, now))
            with contextlib.suppress(OSError):
                mark.unlink()

    def evict(self, key: str) -> None:
        """Move the entry out of readers' sight at once (a rename), then delete it."""
        trash = self.root / TRASH / f"{key}.{secrets.token_hex(6)}"
        with contextlib.suppress(OSError):
            os.rename(self.root / VARIANTS / key, trash)
            _remove(trash)


def _read_offer(offer: Path) -> tuple[list[CachedFile], str]:
    try:
        raw = (offer / OFFER).read_bytes()[: MAX_OFFER_BYTES + 1]
        if len(raw) > MAX_OFFER_BYTES:
            raise OfferRefused(f"{OFFER} is larger than {MAX_OFFER_BYTES} bytes")
        document = json.loads(raw)
        files = [CachedFile(str(f["relative"]), str(f["sha256"]), int(f["size"])) for f in document["files"]]
        claimed = str(document["key"])
    except OfferRefused:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OfferRefused(f"{OFFER} is unreadable ({type(exc).__name__})") from None
    if not files or any(not safe_relative(f.relative) or f.size < 0 for f in files):
        raise OfferRefused("it names no files, or a file outside its directory")
    key = variant_key(files)
    if key != claimed:
        raise OfferRefused("its key does not match its files")
    return files, key


def _copy_verified(source: Path, target: Path, item: CachedFile) -> None:
    """Copy `source` to `target`, hashing the bytes copied; raise OfferRefused unless they are exactly
    `item` (a link in the offer is not followed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, copied = hashlib.sha256(), 0
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise OfferRefused(f"{item.relative} cannot be read ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as reader, target.open("wb") as writer:
        while block := reader.read(BLOCK):
            copied += len(block)
            if copied > item.size:
                raise OfferRefused(f"{item.relative} is larger than the {item.size} bytes it claims")
            digest.update(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    if copied != item.size or digest.hexdigest() != item.sha256:
        raise OfferRefused(f"{item.relative} does not match its size and sha256")


def _last_write(path: Path) -> float:
    try:
        return max(p.stat().st_mtime for p in [path, *path.rglob("*")])
    except (OSError, ValueError):
        return 0.0


def _remove(path: Path) -> None:
    """Remove a file or tree, making read-only directories writable first (entries are 0555)."""
    if path.is_dir() and not path.is_symlink():
        for directory in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
            with contextlib.suppress(OSError):
                directory.chmod(0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def files_of(entries: Mapping[str, tuple[str, int]]) -> list[CachedFile]:
    """`{relative: (sha256, size)}` as CachedFiles (what a manifest gives)."""
    return [CachedFile(relative, sha, size) for relative, (sha, size) in entries.items()]
