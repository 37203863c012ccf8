"""A webhook receiver that verifies Standard Webhooks signatures, for the budget notify tests.

It runs an aiohttp server on loopback in its own thread, and can be stopped and started again
on the same port (a receiver that is down). Each request is recorded with whether its signature
verified against the receiver's secret; a request whose signature does not verify, or whose
timestamp is more than five minutes off, is answered 401, as a careful receiver would. Verified
messages are answered 204; the receiver does NOT drop a webhook-id it has seen, so the tests
count how often the same message arrives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOLERANCE = 300


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check: any v1 signature of "id.timestamp.body" with the secret."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers.get("webhook-signature", "").split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; `accepted()` are the ones answered 2xx."""

    port: int
    secret: str | None  # None: accept unsigned requests (a Slack-like receiver)
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        ok = self.secret is None or verify(self.secret, headers, body)
        with self._lock:
            self.deliveries.append(Delivery(request.path, headers, body, ok))
        return web.Response(status=204 if ok else 401)

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the webhook receiver did not listen on {self.port}")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = self._runner = None

    def accepted(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.verified and path in (None, d.path)]

    def rejected(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if not d.verified]
