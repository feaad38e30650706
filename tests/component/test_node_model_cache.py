"""The node's model cache through the real commands: `frugal serve --node-cache` beside the agent
`frugal model-cache`, artifacts in a real S3 server or in a directory (a claim).

The first replica on a node fetches (or reads) and hashes its variant, then offers it; the agent
publishes it; the second replica, or a wake from zero, loads the agent's copy having fetched only
``manifest.json`` and hashed nothing. A changed artifact has other bytes, so another key: it is
fetched and served, never the stale entry.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from s3_harness import REGION, S3Server
from serving_support import infer_json, mlp, running_server, write_artifacts
from test_object_store_artifacts import environment

from frugal.storage import object_store
from frugal.storage.node_cache import INBOX, OFFER, VARIANTS
from frugal.storage.object_store import ACCESS_KEY_ID, SECRET_ACCESS_KEY, ObjectStore

ROWS = np.random.default_rng(7).random((3, 64), dtype=np.float32)
FROM_CACHE = "from the node cache"


def agent_pass(root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "frugal.serving.model_cache_command", "--root", str(root), "--once"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def wait_for_offer(root: Path, timeout: float = 30.0) -> None:
    """The serving process offers in the background once it has verified: wait until an offer is whole."""
    deadline = time.monotonic() + timeout
    while not any((offer / OFFER).is_file() for offer in (root / INBOX).iterdir() if offer.is_dir()):
        assert time.monotonic() < deadline, f"no complete offer in {root / INBOX} after {timeout} s"
        time.sleep(0.05)


def answer(url: str) -> np.ndarray:
    reply = infer_json(url, "digits", {"input": ROWS})
    assert reply.status == 200, reply.body
    output = reply.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def expected(model: onnx.ModelProto) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": ROWS})[0])


def publish(s3_server: S3Server, local: Path, uri: str) -> None:
    keys = s3_server.identities["admin"]
    store = ObjectStore(s3_server.endpoint_url, REGION, "path",
                        {ACCESS_KEY_ID: keys.access_key, SECRET_ACCESS_KEY: keys.secret_key})  # fmt: skip
    object_store.publish(local, object_store.location(uri, store))


def test_the_second_replica_on_a_node_loads_the_cached_variant_without_fetching_or_hashing(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket(f"frugal-cache-{uuid.uuid4().hex[:12]}")
    uri = f"s3://{bucket}/digits/gen-1"
    first_model = mlp(seed=0)
    publish(s3_server, write_artifacts(tmp_path / "gen-1", "digits", {"fp32": first_model}), uri)
    root, env = tmp_path / "node-cache", environment(s3_server)
    agent_pass(root)

    with running_server(uri, "fp32", "--node-cache", str(root), "--fetch-dir", str(tmp_path / "pod-1"),
                        env=env) as first:  # fmt: skip
        first_answer = answer(first.url)
        wait_for_offer(root)
    assert FROM_CACHE not in first.stderr() and "1 hashed" in first.stderr()
    np.testing.assert_allclose(first_answer, expected(first_model), rtol=1e-5, atol=1e-6)
    agent_pass(root)
    assert len(list((root / VARIANTS).iterdir())) == 1

    with running_server(uri, "fp32", "--node-cache", str(root), "--fetch-dir", str(tmp_path / "pod-2"),
                        env=env) as second:  # fmt: skip
        np.testing.assert_array_equal(answer(second.url), first_answer)
    assert FROM_CACHE in second.stderr() and "verified variant" not in second.stderr(), second.stderr()
    fetched = sorted(p.relative_to(tmp_path / "pod-2").as_posix() for p in (tmp_path / "pod-2").rglob("*"))
    assert fetched == ["manifest.json"], fetched  # the variant's files never left the bucket

    # Published again with other weights: another key, fetched and served, never the stale entry.
    changed_model = mlp(seed=1)
    publish(s3_server, write_artifacts(tmp_path / "gen-1b", "digits", {"fp32": changed_model}), uri)
    with running_server(uri, "fp32", "--node-cache", str(root), "--fetch-dir", str(tmp_path / "pod-3"),
                        env=env) as third:  # fmt: skip
        changed_answer = answer(third.url)
    assert FROM_CACHE not in third.stderr()
    np.testing.assert_allclose(changed_answer, expected(changed_model), rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed_answer, first_answer)


def test_a_replica_reading_a_claim_offers_its_variant_and_the_next_hashes_nothing(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path / "claim", "digits", {"fp32": mlp(seed=3)})
    root = tmp_path / "node-cache"
    agent_pass(root)
    with running_server(artifacts, "fp32", "--node-cache", str(root)) as first:
        first_answer = answer(first.url)
        wait_for_offer(root)
    assert "1 hashed" in first.stderr()
    agent_pass(root)
    with running_server(artifacts, "fp32", "--node-cache", str(root)) as second:
        np.testing.assert_array_equal(answer(second.url), first_answer)
    assert FROM_CACHE in second.stderr() and "verified variant" not in second.stderr(), second.stderr()


def test_a_cache_the_server_cannot_write_only_costs_the_next_replica_a_fetch(tmp_path: Path) -> None:
    """No inbox (the agent never ran there): the server serves as without a cache and says why it
    offered nothing; a bad --node-cache never stops serving."""
    artifacts = write_artifacts(tmp_path / "claim", "digits", {"fp32": mlp(seed=4)})
    missing = tmp_path / "no-agent-here"
    with running_server(artifacts, "fp32", "--node-cache", str(missing)) as server:
        assert answer(server.url).shape == (3, 10)
        deadline = time.monotonic() + 30
        while "not offered to the node cache" not in server.stderr():
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
