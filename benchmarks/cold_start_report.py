"""What `cold_start.py` prints: the table of starts (each bucket row beside the local row it is compared
with, the node cache's beside the bucket's as well) and the hashing lines, from the rows it measured
(also its --json document)."""

from __future__ import annotations

import statistics
from typing import Any

SOURCES = ("local", "bucket", "bucket-refetch", "node-cache")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _ratio(answer: float, peer: list[dict[str, Any]] | None) -> str:
    return f"{answer / _median(peer, 'first_answer_s'):.2f}x" if peer else "-"


def table(results: list[dict[str, Any]]) -> str:
    """One row per (shards, verify cache, source): each bucket row under the local row it is compared
    with ("vs local": its spawn → first answer over the local row's), the node cache's row under the
    bucket's too ("vs bucket": over a new pod's without the cache). A node cache start verified nothing
    in the server ("-"), hashed nothing and fetched only manifest.json; "from the node cache" is its
    server's line (reading the manifest from the bucket, then the lookup)."""
    lines = [
        "| model | variant (MB) | shards | verify cache | source | spawn → ready s | ready → first answer ms "
        "| spawn → first answer s | vs local | vs bucket | fetch (s) | verifying in the server ms "
        "| from the node cache ms | files hashed / trusted | files fetched / kept |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
        for start in result["starts"]:
            groups.setdefault((start["shards"], start["cache"], start.get("source", "local")), []).append(
                start
            )
        for shards, cache, source in sorted(groups, key=lambda k: (k[0], k[1], SOURCES.index(k[2]))):
            rows = groups[(shards, cache, source)]
            answer = _median(rows, "first_answer_s")
            versus = _ratio(answer, groups.get((shards, cache, "local")))
            peer = groups.get((shards, cache, "bucket")) if source in ("bucket", "node-cache") else None
            remote, first = source != "local", rows[0]
            if source == "node-cache":
                fetch, verify, lookup = "-", "-", f"{_median(rows, 'cache_s') * 1000:.1f}"
                checked, moved = f"0 / {first['cached']} (node cache)", "manifest.json only"
            else:
                fetch = f"{_median(rows, 'fetch_s'):.2f}" if remote else "-"
                verify, lookup = f"{_median(rows, 'verify_s') * 1000:.1f}", "-"
                checked = f"{first['hashed']} / {first['trusted']}"
                moved = f"{first['fetched']} / {first['kept']}" if remote else "-"
            lines.append(
                f"| {result['model']} | {result['variant']} ({result['size_bytes'] / 1e6:.2f}) | {shards} "
                f"| {cache} | {source} | {_median(rows, 'ready_s'):.3f} "
                f"| {_median(rows, 'ready_to_answer_s') * 1000:.1f} | {answer:.3f} | {versus} | {_ratio(answer, peer)} "
                f"| {fetch} | {verify} | {lookup} | {checked} | {moved} |"
            )
    return "\n".join(lines)


def hashing_lines(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        seconds = statistics.median(result["hash_seconds"])
        rate = result["size_bytes"] / seconds / 1e6 if seconds else float("inf")
        lines.append(
            f"- {result['model']} `{result['variant']}`: sha256 of {len(result['files'])} file(s), "
            f"{result['size_bytes'] / 1e6:.2f} MB, with hashlib: {seconds * 1000:.2f} ms ({rate:.0f} MB/s)"
        )
    return "\n".join(lines)
