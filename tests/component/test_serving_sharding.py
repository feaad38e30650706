"""Sharding: a model cut into contiguous stages gives the unsharded outputs, in-process and as a chain of
real servers behind one OIP endpoint, at every batch size (only a batch's own rows cross a cut); each
stage server loads only its own stage file; a dead next stage is a clear 503.

Real parts: ONNX Runtime sessions on the MLP and on all-MiniLM-L6-v2 (exported with torch from the
offline package, cached), compression's cutter writing verified stage files, `frugal serve`
subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from serving_support import (
    http,
    infer_json,
    minilm_int8_onnx,
    minilm_onnx,
    mlp,
    running_server,
    serve_command,
    write_artifacts,
)

from frugal.compression import stages as sharding


def run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def run_chain(stages: list[sharding.Stage], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values = feeds
    for stage in stages:
        values = run(stage.model, {name: values[name] for name in stage.inputs})
    return values


@pytest.mark.parametrize("count", [2, 3, 4])
def test_mlp_stages_chain_to_the_whole_model(count: int) -> None:
    model = mlp((64, 128, 64, 32, 10))
    stages = sharding.split_model(model, count)
    assert len(stages) == count and all(s.param_bytes > 0 for s in stages)
    for before, after in itertools.pairwise(stages):
        assert before.outputs == after.inputs  # one stage feeds the next, by name
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    np.testing.assert_allclose(
        run_chain(stages, {"input": x})["logits"], run(model, {"input": x})["logits"], rtol=1e-5, atol=1e-6
    )


def test_cuts_balance_parameter_bytes_where_one_tensor_crosses() -> None:
    model = mlp((64, 128, 128, 128, 128, 10))  # layer weights: 8k, 16k, 16k, 16k, 1.3k floats
    first, second = sharding.split_model(model, 2)
    assert first.outputs == second.inputs and len(first.outputs) == 1  # one tensor crosses the cut
    total = first.param_bytes + second.param_bytes
    assert abs(first.param_bytes - second.param_bytes) / total < 0.25
    assert sharding.plan_cuts(model, 2) == sharding.plan_cuts(model, 2)  # deterministic


def test_too_many_shards_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot cut a graph of 5 nodes into 9 stages"):
        sharding.split_model(mlp((64, 32, 10)), 9)


def test_minilm_export_answers_like_pytorch_on_padded_batches() -> None:
    """The exported token encoder is exported from an unpadded [2, 16] sample; it must still answer a
    padded batch of another size and length like transformers' model (a tracer that bakes the
    sample's mask branch or an index sign into the graph fails here)."""
    import torch
    from transformers import AutoModel

    from frugal.compression.zoo import minilm

    feeds = minilm.tokenize(
        ["A short one.", "x", "A much longer sentence, with many more tokens than the others have in them."]
    )
    assert feeds["attention_mask"].shape[0] == 3 and feeds["attention_mask"].shape[1] != 16
    assert (feeds["attention_mask"] == 0).any(), "the batch must be padded"
    model = AutoModel.from_pretrained(str(minilm.model_dir()), local_files_only=True).eval()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    exported = run(str(minilm_onnx()), feeds)["last_hidden_state"]
    np.testing.assert_allclose(exported, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("count", [2, 3])
def test_minilm_stages_match_the_whole_model(count: int) -> None:
    path = str(minilm_onnx())
    stages = sharding.split_model(onnx.load(path), count)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 30000, (2, 12)), "attention_mask": np.ones((2, 12), dtype=np.int64)}
    feeds["attention_mask"][1, 8:] = 0
    whole = run(path, feeds)["last_hidden_state"]
    chained = run_chain(stages, feeds)["last_hidden_state"]
    np.testing.assert_allclose(chained, whole, rtol=1e-4, atol=1e-4)
    sizes = [s.param_bytes for s in stages]
    assert max(sizes) < 2.5 * min(sizes), sizes  # the embedding table is one big block; still balanced-ish


def test_weight_only_int8_minilm_stages_match_the_whole_model(tmp_path: Path) -> None:
    """MatMulNBits and the INT8 embedding table cut like any other initializers."""
    from frugal.compression.steps.quantization import weight_only

    path = weight_only(minilm_onnx(), tmp_path / "int8-weight.onnx", bits=8)
    assert path is not None
    feeds = {
        "input_ids": np.array([[101, 2023, 2003, 1037, 6251, 102]]),
        "attention_mask": np.ones((1, 6), np.int64),
    }
    whole = run(str(path), feeds)["last_hidden_state"]
    for count in (2, 3):
        chained = run_chain(sharding.split_model(onnx.load(str(path)), count), feeds)["last_hidden_state"]
        np.testing.assert_allclose(chained, whole, rtol=1e-4, atol=1e-4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("count", [2, 3, 4])
def test_only_a_batchs_rows_cross_a_minilm_cut(count: int) -> None:
    """A shape vector (`Shape`'s [2] output) crossing a cut cannot be stacked by the batcher: every
    tensor a stage sends on carries the inputs' batch dimension first."""
    for stage in sharding.split_model(onnx.load(str(minilm_onnx())), count)[:-1]:
        for value in stage.model.graph.output:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_a_chain_of_servers_answers_like_one_server(tmp_path: Path) -> None:
    model = mlp((64, 128, 64, 10))
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": model}, shard_counts=(2,))
    x = np.random.default_rng(4).random((3, 64), dtype=np.float32)
    with (
        running_server(artifacts, "fp32", "--shard-index", "1", "--shard-count", "2") as tail,
        running_server(
            artifacts, "fp32", "--shard-index", "0", "--shard-count", "2", "--next-stage", tail.url
        ) as front,
        running_server(artifacts, "fp32") as whole,
    ):
        sharded_reply = infer_json(front.url, "digits", {"input": x}, id="s1")
        whole_reply = infer_json(whole.url, "digits", {"input": x}, id="s1")
        front_meta = http("GET", f"{front.url}/v2/models/digits").json()
        whole_meta = http("GET", f"{whole.url}/v2/models/digits").json()
    assert sharded_reply.status == 200, sharded_reply.body
    sharded, unsharded = sharded_reply.json(), whole_reply.json()
    assert sharded["outputs"][0]["name"] == "logits" and sharded["id"] == "s1"
    np.testing.assert_allclose(
        sharded["outputs"][0]["data"], unsharded["outputs"][0]["data"], rtol=1e-5, atol=1e-6
    )
    assert (front_meta["inputs"], front_meta["outputs"]) == (whole_meta["inputs"], whole_meta["outputs"])


def test_a_dead_next_stage_is_a_clear_503(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp()}, shard_counts=(2,))
    dead = f"http://127.0.0.1:{free_port()}"
    with running_server(
        artifacts, "fp32", "--shard-index", "0", "--shard-count", "2", "--next-stage", dead
    ) as front:
        reply = infer_json(front.url, "digits", {"input": np.zeros((1, 64), np.float32)})
        assert http("GET", f"{front.url}/v2/health/live").status == 200
    assert reply.status == 503 and reply.headers.get("Retry-After") == "1"
    assert f"next stage {dead}/v2/models/digits/infer failed" in reply.json()["error"]


def test_a_shard_count_compression_did_not_cut_is_a_clear_startup_error(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, "digits", {"fp32": mlp()}, shard_counts=(2,))
    command = serve_command(artifacts, "fp32", "--shard-index", "2", "--shard-count", "3")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--shard-count" in done.stderr and "no 3-shard stage files (shard counts cut: 2)" in done.stderr


def minilm_rows(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {
        "input_ids": rng.integers(1000, 20000, (batch, 10)),
        "attention_mask": np.ones((batch, 10), np.int64),
    }
    feeds["attention_mask"][:, 7 + seed % 3 :] = 0  # padded rows, as a tokenizer pads a batch
    return feeds


@pytest.mark.parametrize(
    ("variant", "count"), [("fp32", 2), ("fp32", 4), ("int8-dynamic", 2), ("int8-dynamic", 3)]
)
def test_minilm_stage_servers_answer_every_batch_size_from_their_own_files(
    tmp_path: Path, variant: str, count: int
) -> None:
    """Batch 1, batch 2, the server's batch, and lone rows merged by the batcher across every cut; the
    whole variant's file is deleted before the stages start, so each stage loads only its own.
    Dynamically quantized activations take their scale from the whole batch, so a row's answer depends
    on its batch-mates: the INT8 variant's requests go one at a time, to compare each with the model."""
    source = minilm_onnx() if variant == "fp32" else minilm_int8_onnx()
    artifacts = write_artifacts(tmp_path, "minilm", {variant: onnx.load(str(source))}, shard_counts=(count,))
    whole_file = artifacts / f"variants/{variant}/model.onnx"
    whole_file.unlink()
    requests = [
        minilm_rows(1, 1),
        minilm_rows(2, 2),
        minilm_rows(8, 3),
        *(minilm_rows(1, s) for s in range(4, 20)),
    ]
    # the reference: the whole graph as written (optimizations fuse dynamically quantized MatMuls
    # differently inside one graph than across a cut; compression verifies the cut the same way)
    reference = [sharding_reference(source, feeds) for feeds in requests]
    with contextlib.ExitStack() as stack:
        url = ""
        for index in reversed(range(count)):
            extra = ["--shard-index", str(index), "--shard-count", str(count), "--max-batch-size", "8"]
            extra += ["--max-delay-ms", "20"] + (["--next-stage", url] if url else [])
            url = stack.enter_context(running_server(artifacts, variant, *extra)).url
        with ThreadPoolExecutor(8 if variant == "fp32" else 1) as pool:
            replies = list(pool.map(lambda feeds: infer_json(url, "minilm", feeds), requests))
    for feeds, reply, want in zip(requests, replies, reference, strict=True):
        assert reply.status == 200, reply.body
        [output] = reply.json()["outputs"]
        batch = len(feeds["input_ids"])
        assert output["shape"] == [batch, 10, 384]
        got = np.array(output["data"]).reshape(batch, 10, 384)
        if variant == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-3)
        else:  # fused INT8 kernels round differently from the graph as written (up to ~0.2 per value)
            got, want = got.reshape(-1, 384), want.reshape(-1, 384)
            cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            assert cosine.min() > 0.99, cosine.min()


def sharding_reference(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["last_hidden_state"], feeds)[0])
