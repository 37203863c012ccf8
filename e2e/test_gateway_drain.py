"""Graceful drain: SIGTERM a gateway under load behind a load balancer and lose nothing.

Two gateway processes run from what the operator renders for one Tenant (e2e/replicas.py:
the rendered env, so the rendered drain settings), behind a round-robin TCP balancer that
drops a backend as soon as its readiness probe fails, as the endpoints controller and
kube-proxy do. 50 anthropic-SDK streams are in flight across both when one process gets
SIGTERM (gateway/drain.py):

- its readiness answers 503 at once, its liveness stays 200, and the balancer stops sending
  it new connections; new requests during the drain all succeed, served by the other process;
- it keeps accepting for the drain delay, then refuses new connections, while its streams
  still run; every one of the 50 streams ends with a well-formed `message_stop` and the whole
  reply;
- it exits 0 within the rendered terminationGracePeriodSeconds, and the ledger holds exactly
  one success row per request (the rows of its last streams are flushed at shutdown).

And the documented limit: a stream still running when the stream grace period ends is cut
(the client sees the stream end without `message_stop`) and the process still exits 0, with
the cut request in the ledger; it never hangs until the kubelet's SIGKILL.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle
from e2e.replicas import SIM_MODEL, Balancer, Replicas, anthropic_tenant_inputs, run_replicas
from tenantgw.render import RenderInputs, StorageEndpoints
from tenantgw.render.workload import TERMINATION_GRACE_SECONDS

pytestmark = pytest.mark.e2e

TENANT = "drain-" + secrets.token_hex(3)
MODEL = SIM_MODEL
PROVIDER_KEY = "sk-ant-sim-provider-" + secrets.token_hex(6)
STREAMS = 50
NEW_REQUESTS = 20
# 40 words, each a streamed piece: at 500 ms a piece, a stream outlasts the 5 s drain delay
# by far, so the drained process stops accepting while its streams still run.
REPLY = " ".join(f"word{n}" for n in range(40))
SLOW_PIECE_MS = 500


def tenant_inputs(
    sim: SimulatorHandle, storage: StorageEndpoints, keys: dict[str, str]
) -> RenderInputs:
    return anthropic_tenant_inputs(
        TENANT,
        sim,
        storage,
        keys,
        spec={"gateway": {"replicas": 2}},
        pricing={"inputPerMillion": 3.0, "outputPerMillion": 15.0},
    )


def _replicas(
    services: Services, workdir: Path, count: int, env: dict[str, str] | None = None
) -> Any:
    return run_replicas(
        services,
        workdir,
        role_prefix="tg_drain",
        inputs=tenant_inputs,
        key_names=("alice",),
        provider_secrets={"anthropic": {"apiKey": PROVIDER_KEY}},
        count=count,
        env=env,
        simulator_kwargs={"api_key": PROVIDER_KEY},
    )


@pytest.fixture(scope="module")
def pair(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two processes with the rendered drain settings (5 s delay, 60 s for streams)."""
    with _replicas(services, tmp_path_factory.mktemp("drain-pair"), 2) as running:
        yield running


@pytest.fixture(scope="module")
def short_grace(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """One process whose streams get 2 s after a 1 s drain delay (a test's settings)."""
    env = {"TENANTGW_DRAIN_SECONDS": "1", "TENANTGW_STREAM_GRACE_SECONDS": "2"}
    with _replicas(services, tmp_path_factory.mktemp("drain-cut"), 1, env) as running:
        yield running


def client(url: str, key: str) -> anthropic.Anthropic:
    # No retries: a request the drain broke would be hidden by the SDK's retry.
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=120)


def message(text: str) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": text}]}


class Stream:
    """One streamed request: its event types and text, and whether its first token came."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.kinds: list[str] = []
        self.text = ""
        self.first_token = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            events = client(self.url, self.key).messages.create(
                **message("drain " + secrets.token_hex(4)), stream=True
            )
            for event in events:
                self.kinds.append(event.type)
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    self.text += event.delta.text
                    self.first_token.set()
        except Exception as exc:  # the test reads it
            self.error = exc
        finally:
            self.first_token.set()

    @property
    def complete(self) -> bool:
        return self.error is None and bool(self.kinds) and self.kinds[-1] == "message_stop"


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_sigterm_under_load_drops_no_stream_and_no_request(pair: Replicas) -> None:
    """A rolling update's SIGTERM to one of two gateways with 50 streams in flight."""
    drained, other = pair.gateways
    key = pair.keys["alice"]
    pair.sim.configure(reply=REPLY, token_delay_ms=SLOW_PIECE_MS)
    balancer = Balancer([drained.url, other.url]).start()
    since = time.time()
    streams = [Stream(balancer.url, key) for _ in range(STREAMS)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in streams]
    try:
        for thread in threads:
            thread.start()
        for stream in streams:
            assert stream.first_token.wait(60), "a stream got no first token"
        assert all(s.error is None for s in streams), [s.error for s in streams if s.error]
        # Each stream is its own connection, handed out round robin: both serve streams.
        assert balancer.connections[drained.url] >= STREAMS // 2 - 1
        assert balancer.connections[other.url] >= STREAMS // 2 - 1

        drained.process.send_signal(signal.SIGTERM)

        # Readiness fails at once (the process still serves), liveness does not.
        readiness = httpx.get(drained.url + "/health/readiness", timeout=5)
        assert readiness.status_code == 503, readiness.text
        assert readiness.json() == {"status": "draining"}
        assert httpx.get(drained.url + "/health/liveliness", timeout=5).status_code == 200
        eventually(lambda: not balancer.ready[drained.url], 10, "the balancer to drop it")
        handed_to_drained = balancer.connections[drained.url]

        # New requests during the drain (as slow as the streams) all succeed, and none
        # reaches the draining process.
        def new_request(n: int) -> str:
            answer = client(balancer.url, key).messages.create(**message(f"new {n}"))
            return answer.stop_reason or ""

        with concurrent.futures.ThreadPoolExecutor(NEW_REQUESTS) as pool:
            answers = [pool.submit(new_request, n) for n in range(NEW_REQUESTS)]
            # After the drain delay it stops accepting; its streams are still being served.
            eventually(lambda: refuses_connections(drained.url), 30, "accepting to stop")
            assert drained.process.poll() is None
            assert not all(s.complete for s in streams), "all streams ended before the drain did"
            stops = [answer.result() for answer in answers]
        assert stops == ["end_turn"] * NEW_REQUESTS
        assert balancer.connections[drained.url] == handed_to_drained
        assert balancer.refused == 0

        for thread in threads:
            thread.join(120)
        broken = [(s.kinds[-3:], s.error) for s in streams if not s.complete]
        assert not broken, broken
        assert all(s.text == REPLY for s in streams)
        assert all(s.kinds.count("message_stop") == 1 for s in streams)

        # The drained process exits cleanly inside the pod's grace period.
        assert drained.process.wait(TERMINATION_GRACE_SECONDS) == 0
        assert other.process.poll() is None
    finally:
        balancer.stop()

    def all_rows() -> list[dict[str, Any]] | None:
        rows = pair.rows(since)
        return rows if len(rows) >= STREAMS + NEW_REQUESTS else None

    rows = eventually(all_rows, 30, "one ledger row per request")
    assert len(rows) == STREAMS + NEW_REQUESTS
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert {r["status"] for r in rows} == {"success"}
    assert sum(1 for r in rows if r["stream"]) == STREAMS
    log = drained.log.read_text(errors="replace")
    assert "SIGTERM: readiness fails now" in log
    assert "Traceback" not in log


def test_a_stream_longer_than_the_grace_period_is_cut_not_hung(short_grace: Replicas) -> None:
    """Documented: what is still streaming when the grace period ends is cut, and the process
    exits instead of waiting for the kubelet's SIGKILL."""
    (gateway,) = short_grace.gateways
    # 40 pieces at 2 s: 80 s of stream against 1 s + 2 s of drain.
    short_grace.sim.configure(reply=REPLY, token_delay_ms=2000)
    since = time.time()
    stream = Stream(gateway.url, short_grace.keys["alice"])
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    assert stream.first_token.wait(60)
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(TERMINATION_GRACE_SECONDS) == 0
    thread.join(30)
    assert not thread.is_alive(), "the client still waits on a stream of a process that exited"
    assert not stream.complete
    assert "message_stop" not in stream.kinds
    assert stream.text != REPLY
    log = gateway.log.read_text(errors="replace")
    assert "timeout graceful shutdown exceeded" in log
    rows = eventually(lambda: short_grace.rows(since), 30, "the cut stream's ledger row")
    assert len(rows) == 1
