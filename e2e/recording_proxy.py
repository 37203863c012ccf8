"""A recording reverse proxy: what a client sent to a gateway, as the gateway received it.

The simulator records what reaches a provider; this records the hop before, what a client
such as Claude Code sends to the gateway, for tests that need both sides (did the client send
a thinking block back, and did it reach the provider?). Each request is forwarded as it came
(method, path, query, headers but the hop's own, body); the answer is read whole and returned
with its status and headers, so a streamed answer arrives at once rather than as it streams,
which a client's SSE reader does not mind.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


class RecordingProxy:
    """`url` forwards to `upstream`; `requests()` is what it received, oldest first: each
    `{"method", "path", "body"}` (the body parsed as JSON, else None)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def _record(self, method: str, path: str, body: bytes) -> None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self._received.append({"method": method, "path": path, "body": parsed})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy._record(self.command, self.path, body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                try:
                    answer = httpx.request(
                        self.command,
                        proxy.upstream + self.path,
                        headers=headers,
                        content=body,
                        timeout=120,
                    )
                except httpx.HTTPError as exc:
                    self.send_error(502, f"upstream: {exc}")
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in HOP_HEADERS | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[RecordingProxy]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
