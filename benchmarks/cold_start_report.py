"""What `cold_start.py` prints: the table of starts (each bucket row beside the local row it is compared
with) and the hashing lines, from the rows it measured (also its --json document)."""

from __future__ import annotations

import statistics
from typing import Any

SOURCES = ("local", "bucket", "bucket-refetch")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def table(results: list[dict[str, Any]]) -> str:
    """One row per (shards, verify cache, source): each bucket row under the local row it is compared
    with ("vs local": its spawn → first answer over the local row's)."""
    lines = [
        "| model | variant (MB) | shards | verify cache | source | spawn → ready s | ready → first answer ms "
        "| spawn → first answer s | vs local | fetch (s) | verifying in the server ms | files hashed / trusted "
        "| files fetched / kept |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|",
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
            peer = groups.get((shards, cache, "local"))
            versus = f"{answer / _median(peer, 'first_answer_s'):.2f}x" if peer else "-"
            remote = source != "local"
            fetch = f"{_median(rows, 'fetch_s'):.2f}" if remote else "-"
            moved = f"{rows[0]['fetched']} / {rows[0]['kept']}" if remote else "-"
            lines.append(
                f"| {result['model']} | {result['variant']} ({result['size_bytes'] / 1e6:.2f}) | {shards} "
                f"| {cache} | {source} | {_median(rows, 'ready_s'):.3f} "
                f"| {_median(rows, 'ready_to_answer_s') * 1000:.1f} | {answer:.3f} | {versus} | {fetch} "
                f"| {_median(rows, 'verify_s') * 1000:.1f} | {rows[0]['hashed']} / {rows[0]['trusted']} | {moved} |"
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
