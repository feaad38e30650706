"""What `frugal serve` accepts and counts follows the model it serves: the request body limit is derived
from the model's inputs when --max-body-bytes is not given, and answers slower than --latency-target-ms
are counted for the SLO's error budget.

Real parts: the real server CLI in a subprocess on 127.0.0.1, ONNX Runtime on small MLPs built with
onnx.helper, real HTTP requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_support import (
    Server,
    http,
    infer_json,
    metric_value,
    mlp,
    running_server,
    samples,
    write_artifacts,
)

from frugal.schema.request_limits import REQUEST_ROWS, SMALLEST_LIMIT, body_limit
from frugal.serving.server.artifacts import TensorSpec

NARROW, WIDE = "narrow", "wide"
WIDE_INPUT = 4096


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    artifacts = write_artifacts(tmp_path_factory.mktemp("narrow"), NARROW, {"fp32": mlp()})
    with running_server(artifacts, "fp32", "--latency-target-ms", "0.000001") as server:
        yield server


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = mlp((WIDE_INPUT, 16, 10), name="wide_mlp")
    artifacts = write_artifacts(tmp_path_factory.mktemp("wide"), WIDE, {"fp32": model})
    with running_server(artifacts, "fp32", "--latency-target-ms", "60000") as server:
        yield server


def full_precision_json(name: str, rows: np.ndarray) -> bytes:
    """A JSON body whose every number is written at float64's full length, the longest a client sends."""
    values = (rows.astype(np.float64) - 0.5) * 1e-5
    doc = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": values.ravel().tolist()}]}
    return json.dumps(doc).encode()


def post(server: Server, model: str, body: bytes) -> tuple[int, str]:
    reply = http("POST", f"{server.url}/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
    return reply.status, reply.body.decode()


def test_the_limit_is_derived_from_the_inputs() -> None:
    narrow = [TensorSpec(name="input", datatype="FP32", shape=(-1, 64))]
    hidden = [TensorSpec(name="hidden", datatype="FP32", shape=(-1, -1, 384))]
    tokens = [
        TensorSpec(name="input_ids", datatype="INT64", shape=(-1, -1)),
        TensorSpec(name="attention_mask", datatype="INT64", shape=(-1, -1)),
    ]
    assert body_limit(narrow, 32) == SMALLEST_LIMIT  # 256 digit rows in JSON fit well under 1 MiB
    assert body_limit(hidden, 32) > 64 * 1024 * 1024  # a stage's hidden states need more than the old fixed 64 MiB
    assert body_limit(tokens, 32) < body_limit(hidden, 32)
    assert body_limit(hidden, 2 * REQUEST_ROWS) > body_limit(hidden, 32)  # a batch above the rows bound widens it
    assert body_limit([TensorSpec(name="s", datatype="BYTES", shape=(-1,))], 32) == SMALLEST_LIMIT


def test_the_largest_legitimate_request_is_accepted(narrow: Server) -> None:
    rows = np.random.default_rng(0).random((REQUEST_ROWS, 64))
    status, text = post(narrow, NARROW, full_precision_json("input", rows))
    assert status == 200, text


def test_a_body_past_the_derived_limit_gets_413_naming_the_limit(narrow: Server, wide: Server) -> None:
    wide_rows = np.random.default_rng(1).random((30, WIDE_INPUT))
    body = full_precision_json("input", wide_rows)
    assert len(body) > SMALLEST_LIMIT
    status, text = post(wide, WIDE, body)
    assert status == 200, text  # the wide model's inputs make this body legitimate there
    refused = full_precision_json("input", np.random.default_rng(2).random((len(body) // (64 * 20), 64)))
    assert len(refused) > SMALLEST_LIMIT
    status, text = post(narrow, NARROW, refused)
    assert status == 413, text
    assert "--max-body-bytes" in text and str(SMALLEST_LIMIT) in text
    assert "derived from the model's inputs" in "".join(narrow.log)


def test_answers_slower_than_the_target_are_counted(narrow: Server, wide: Server) -> None:
    x = np.random.default_rng(3).random((2, 64), dtype=np.float32)
    for _ in range(5):
        assert infer_json(narrow.url, NARROW, {"input": x}).status == 200
    assert infer_json(wide.url, WIDE, {"input": np.zeros((1, WIDE_INPUT), np.float32)}).status == 200
    name = "frugal_requests_over_latency_target_total"
    scrape = http("GET", f"{narrow.url}/metrics").body.decode()
    # a target of 1 ns: every answer so far missed it, as many as the server answered
    assert metric_value(scrape, name, model=NARROW) == metric_value(scrape, "frugal_requests_total", model=NARROW)
    wide_scrape = http("GET", f"{wide.url}/metrics").body.decode()
    assert metric_value(wide_scrape, "frugal_requests_total", model=WIDE) >= 1
    assert metric_value(wide_scrape, name, model=WIDE) == 0  # a minute's target: none missed it


def test_no_target_no_budget_series(tmp_path: Path) -> None:
    artifacts = write_artifacts(tmp_path, NARROW, {"fp32": mlp()})
    with running_server(artifacts, "fp32", "--max-body-bytes", "5000") as server:
        scrape = http("GET", f"{server.url}/metrics").body.decode()
        assert samples(scrape, "frugal_requests_over_latency_target_total") == []
        status, text = post(server, NARROW, b"{" + b" " * 6000 + b"}")
        assert status == 413 and re.search(r"--max-body-bytes \(5000\)", text), text
