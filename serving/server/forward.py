"""A pipeline stage's client for the next stage: one OIP request per batch, binary tensors both ways.

When the next stage cannot answer, every request of the batch fails with `failures.NextStageError`
(503 / UNAVAILABLE), naming the stage and its last answer.
"""

from __future__ import annotations

import logging

import aiohttp

from frugal.serving.server.batching import Tensors
from frugal.serving.server.codec import HEADER_LENGTH, decode_response, encode_request
from frugal.serving.server.failures import NextStageError, ProtocolError

log = logging.getLogger("frugal.serving")


class NextStage:
    def __init__(self, base_url: str, model_name: str, timeout_s: float, attempts: int = 2) -> None:
        self.url = f"{base_url.rstrip('/')}/v2/models/{model_name}/infer"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, tensors: Tensors) -> Tensors:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body, headers = encode_request(tensors, binary=True)
        problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._session.post(self.url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status == 200:
                        return decode_response(payload, response.headers.get(HEADER_LENGTH))
                    problem = f"HTTP {response.status}: {payload[:300].decode(errors='replace')}"
                    if response.status < 500 and response.status != 429:
                        break  # the request itself is wrong; another try would fail the same way
            except (TimeoutError, aiohttp.ClientError, ProtocolError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning(
                "next stage %s failed (attempt %d/%d): %s", self.url, attempt, self._attempts, problem
            )
        raise NextStageError(f"next stage {self.url} failed: {problem}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
