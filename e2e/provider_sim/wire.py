"""What the Gemini/Vertex, Ollama, Cohere and Responses modules of the simulator share.

* ``take_fault``: the next queued fault of a model request, with one more kind than
  ``server.apply_fault`` knows: "malformed" (a stream whose second chunk is not valid JSON; a
  non-streaming answer whose body is not JSON), as a provider behind a broken proxy sends.
* ``whole_answer``: a non-streaming answer with the simulator's timing, or its fault.
* ``Streamer``: writes a protocol's chunks with the simulator's timing, cutting the stream after
  its first token on the "disconnect" fault and corrupting it on "malformed".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from e2e.provider_sim.server import Reply, SimConfig, Simulator, apply_fault, drop_connection

MALFORMED = "malformed"
MALFORMED_BYTES = b'{"this is not": json'


async def take_fault(sim: Simulator, model: str) -> str | None:
    """None, "disconnect" or "malformed"; raises ``ProviderError`` for an HTTP fault."""
    fault = sim.take_fault(model)
    if fault == MALFORMED:
        return MALFORMED
    return await apply_fault(sim, fault)


@dataclass
class Streamer:
    """Writes ``(bytes, carries_a_token)`` pieces of a streamed answer, faults included."""

    sim: Simulator
    request: web.Request
    cfg: SimConfig
    action: str | None
    frame: Callable[[bytes], bytes] | None = None

    async def run(
        self,
        resp: web.StreamResponse,
        pieces: Iterable[tuple[bytes, bool]],
        end: Callable[[web.StreamResponse], Awaitable[None]] | None = None,
    ) -> web.StreamResponse:
        first = True
        for raw, is_token in pieces:
            if is_token:
                await self.sim.sleep(self.cfg.ttft_ms if first else self.cfg.token_delay_ms)
            await resp.write(raw)
            if is_token and first and self.action == "disconnect":
                drop_connection(self.request)  # cut after the first token
                return resp
            if is_token and first and self.action == MALFORMED:
                await resp.write(self.frame(MALFORMED_BYTES) if self.frame else MALFORMED_BYTES)
            first = first and not is_token
        if end is not None:
            await end(resp)
        await resp.write_eof()
        return resp


def malformed_response() -> web.Response:
    """A 200 whose body is not JSON (the "malformed" fault on a non-streaming request)."""
    return web.Response(status=200, body=MALFORMED_BYTES, content_type="application/json")


async def whole_answer(
    sim: Simulator,
    request: web.Request,
    cfg: SimConfig,
    action: str | None,
    reply: Reply,
    body: Callable[[], Any],
) -> web.Response:
    """A non-streaming answer (`body()` as JSON) after the time its tokens would take, or the
    fault: "disconnect" drops the connection, "malformed" sends a body that is not JSON."""
    if action == "disconnect":
        drop_connection(request)
        return web.Response(status=500)
    if action == MALFORMED:
        return malformed_response()
    await sim.sleep(cfg.ttft_ms + cfg.token_delay_ms * reply.completion_tokens)
    return web.json_response(body())
