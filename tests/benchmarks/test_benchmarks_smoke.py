"""Every benchmark script in its smoke mode: it exits 0 and prints its table, with numbers in it."""

from __future__ import annotations

import re
from pathlib import Path

from smoke_harness import number, run_smoke


def test_autoscaling() -> None:
    """The simulation on the stored measurements: every policy on one trace, and the re-planning rows."""
    ran = run_smoke("autoscaling.py")
    rows = ran.table("| model | trace | policy |")
    policies = {row["policy"]: row for row in rows}
    assert {"static", "HPA-style", "KEDA-style", "frugal", "frugal, scale to zero"} <= set(policies)
    for row in rows:
        assert (row["model"], row["trace"]) == ("digits", "spiky")
        assert number(row["cost USD"]) > 0
        assert 0 < number(row["SLO attainment"]) <= 100
    replanned = ran.table("| model | trace | policy | served on |")
    assert any(row["policy"] == "frugal + re-planning" for row in replanned)


def test_batch() -> None:
    """The batch engine with 1 and 2 local workers against the plain loop, then the cost table."""
    ran = run_smoke("batch.py")
    rows = ran.table("| model | variant | rows | rowsPerShard | workers |")
    assert [row["workers"] for row in rows] == ["1", "2"]
    for row in rows:
        assert row["model"] == "digits" and number(row["rows"]) == 4096
        assert number(row["scoring rows/s"]) > 0 and number(row["end-to-end rows/s"]) > 0
        assert number(row["plain loop rows/s"]) > 0
    costs = ran.table("| profile | costPerHour | maxWatts | model |")
    assert all(number(row["engine USD / 1M rows"]) > 0 for row in costs)


def test_cold_start() -> None:
    """Waking 1 and 2 shards of digits (each with its own REST and gRPC port), verify cache cold and warm,
    from the local directory; and 1 shard from a bucket (the S3 harness's server), as a new pod, as a
    container restart that keeps its fetch directory, and as a new pod on a node whose model cache
    holds the variant."""
    ran = run_smoke("cold_start.py")
    rows = ran.table("| model | variant (MB) | shards | verify cache |")
    found = {(row["shards"], row["verify cache"], row["source"]): row for row in rows}
    assert set(found) == {
        ("1", "cold", "local"),
        ("1", "warm", "local"),
        ("2", "cold", "local"),
        ("2", "warm", "local"),
        ("1", "cold", "bucket"),
        ("1", "warm", "bucket-refetch"),
        ("1", "cold", "node-cache"),
    }
    for (shards, cache, source), row in found.items():
        assert number(row["spawn → first answer s"]) >= number(row["spawn → ready s"]) > 0
        if source == "node-cache":
            # Nothing hashed or verified in the server, nothing but manifest.json fetched.
            assert row["files hashed / trusted"] == "0 / 1 (node cache)"
            assert row["files fetched / kept"] == "manifest.json only"
            assert (row["fetch (s)"], row["verifying in the server ms"]) == ("-", "-")
            assert number(row["from the node cache ms"]) > 0
            assert number(row["vs local"]) > 0 and number(row["vs bucket"]) > 0
            continue
        hashed, trusted = (int(n) for n in row["files hashed / trusted"].split(" / "))
        # Cold: every shard hashes its file; warm: every shard trusts its verify cache.
        assert (hashed, trusted) == ((int(shards), 0) if cache == "cold" else (0, int(shards)))
        assert row["from the node cache ms"] == "-"
        if source == "local":
            assert number(row["vs local"]) == 1.0 and row["fetch (s)"] == "-"
            continue
        assert number(row["vs local"]) > 0 and number(row["fetch (s)"]) >= 0
        # A new pod downloads the variant's file; a restart finds it whole in its fetch directory.
        assert row["files fetched / kept"] == ("1 / 0" if source == "bucket" else "0 / 1")


def test_compression(tmp_path: Path) -> None:
    """Every digits variant compressed, scored and timed (the MiniLM runs' configs only validated)."""
    ran = run_smoke("compression.py", "--out", tmp_path)
    assert "## digits (metric: accuracy" in ran.stdout
    rows = {row["variant"]: row for row in ran.table("| variant | status | size (KB) |")}
    assert {"fp32", "int8-dynamic", "student-int8-dynamic"} <= set(rows)
    for name in ("fp32", "int8-dynamic"):
        assert rows[name]["status"] == "kept"
        assert 0.5 < number(rows[name]["metric"]) <= 1
        assert number(rows[name]["b32 ms"]) > 0


def test_distill_minilm_then_its_students_compared(tmp_path: Path) -> None:
    """A MiniLM student distilled for seconds (FFN cut, FP16 parts), then the compression benchmark's
    students table reads those parts back as one student and scores it against the teacher."""
    out = tmp_path / "student"
    ran = run_smoke("distill_minilm.py", "--out", out, "--ffn-removed", "0.25", "--half")
    held_out = re.search(r"^held-out cosine min (-?[\d.]+) mean (-?[\d.]+)", ran.stdout, re.M)
    assert held_out, ran.stdout
    parts = sorted(p.name for p in out.glob("*.pt"))
    assert parts and parts[0] == "student.part-0.pt", parts
    assert all(f"wrote {out / name}" in ran.stdout for name in parts)

    compared = run_smoke(
        "compression.py", "--only", "students", "--students", out, "--out", tmp_path / "compare"
    )
    table = compared.table("| variant | size (KB) | min cosine |")
    rows = {row["variant"].split(" ")[0]: row for row in table}
    assert set(rows) == {"fp32", "student"}
    assert number(rows["fp32"]["min cosine"]) == 1.0
    assert rows["student"]["variant"] == "student (5 layers, FFN 1152)"  # 25% of 1536 neurons cut
    # The same student, the same held-out sentences: the cosine distill_minilm printed (FP16 weights here).
    assert abs(number(rows["student"]["min cosine"]) - float(held_out.group(1))) < 0.02
    assert number(rows["student"]["b32 ms"]) > 0


def test_reconcile_scale() -> None:
    """A real API server and the operator: 5 ModelDeployments to Compressing, then (the Job controller
    and kubelet played, md-0000's Jobs run for real) to Serving, then the autoscaler's steady state."""
    ran = run_smoke("reconcile_scale.py")

    def value(label: str) -> str:
        found = re.search(rf"^{re.escape(label)}\s+(\S.*)$", ran.stdout, re.M)
        assert found, f"no line {label!r} in:\n{ran.stdout}"
        return found.group(1)

    assert value("ModelDeployments") == "5"
    assert number(value("time until all Compressing")) > 0
    assert number(value("API requests per reconcile")) > 0
    assert re.fullmatch(r"[\d.]+ s \+ [\d.]+ s", value("md-0000 compression + profiling (real)"))
    assert number(value("then all 5 Serving").split(" (")[0]) > 0
    assert value("MetricsAvailable=False").startswith("5/5")
    assert re.fullmatch(r"[\d.]+ s, \d+ ticks every 1 s", value("steady state: window"))
    assert number(value("steady state: autoscaler tick duration").split(" ms")[0]) > 0
    assert re.match(r"\d+ MiB", value("operator peak RSS (5 Serving)"))
    assert re.match(r"\d+", value("operator log: warnings/errors"))


def test_reconcile_scale_clone() -> None:
    """md-0000 to Serving, four settled copies of it written to the API server, and a fresh operator
    that starts on all five and settles without a warning."""
    ran = run_smoke("reconcile_scale.py", "--clone")

    def value(label: str) -> str:
        found = re.search(rf"^{re.escape(label)}\s+(\S.*)$", ran.stdout, re.M)
        assert found, f"no line {label!r} in:\n{ran.stdout}"
        return found.group(1)

    assert value("ModelDeployments") == "1"  # applied and brought through its pipeline
    assert re.fullmatch(r"[\d.]+ s \(\d+ objects\)", value("4 settled copies written"))
    assert value("MetricsAvailable=False").startswith("5/5")  # the restarted operator scales all five
    assert "did NOT stop" not in value("writes and reconciles stopped after")
    assert re.match(r"\d+ MiB", value("restarted operator RSS, settled"))
    assert value("operator log: warnings/errors") == "0"


def test_serving() -> None:
    """frugal over REST JSON, REST binary and gRPC, raw ONNX Runtime, and KServe as the one peer (its
    venv is the one the component tier's KServe tests use; MLServer's is not built for tests)."""
    ran = run_smoke("serving.py", "--kserve-python", "auto")
    rows = ran.table("| model | server | protocol |")
    for server in ("frugal", "kserve", "raw ORT, frugal's batch"):
        protocols = {row["protocol"] for row in rows if row["server"] == server}
        assert protocols == {"REST JSON", "REST binary", "gRPC"}, (server, ran.stdout)
    for row in rows:
        assert row["model"] == "digits"
        assert number(row["req/s at saturation"]) > 0, row
    for row in (r for r in rows if r["server"] in ("frugal", "kserve")):
        assert number(row["p50 ms one client"]) > 0 and number(row["CPU ms/req"]) > 0
    summary = ran.table("| model | protocol | frugal req/s |")
    assert all(number(row["÷ kserve"]) > 0 for row in summary)


def test_sharding() -> None:
    """Digits whole and in two stages, each measured through a chain of real servers: throughput, p95,
    each count's largest stage server's memory against the whole model's, and the planner's price."""
    ran = run_smoke("sharding.py")
    rows = ran.table("| model | variant | shards |")
    assert {(row["variant"], row["shards"]) for row in rows} >= {("fp32", "1"), ("fp32", "2")}
    for row in rows:
        assert row["model"] == "digits"
        assert number(row["req/s (1 replica)"]) > 0 and number(row["p95 ms"]) > 0
        assert number(row["peak MiB per stage server"]) > 0 and number(row["$ per 1k requests"]) > 0
        if row["shards"] == "1":
            assert row["vs whole"] == "1.00x"
