"""The gateway's Redis client after the server restarted under it, with no idle health check.

Every pooled connection died with the old server. The next script call fails on its dead
connection, is sent again on a fresh one (the client's one retry), finds no cached script there
and sends it whole: the caller sees the answer, not an error, and no PING went first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from e2e.throwaway_redis import CommandLog, throwaway_redis
from tenantgw.gateway.redisclient import connect, register_script

pytestmark = pytest.mark.integration

SCRIPT = "return redis.call('INCR', KEYS[1])"


async def test_a_script_call_after_a_restart_reconnects_without_a_ping(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as server:
        client = connect(server.url)
        try:
            count = register_script(client, SCRIPT)
            assert [await count(["t:{reconnect}:n"]) for _ in range(3)] == [1, 2, 3]
            server.restart()  # a crash: the keys and the script cache are gone
            with CommandLog(server.url) as log:
                assert await count(["t:{reconnect}:n"]) == 1
                assert await count(["t:{reconnect}:n"]) == 2
                await asyncio.sleep(0.5)  # MONITOR's reader thread catches up
                sent = [words[0].strip('"').upper() for _, words in log.round_trips()]
        finally:
            await client.aclose()
    # A fresh connection: EVALSHA (unknown), EVAL (loads it), then EVALSHA.
    assert sent == ["EVALSHA", "EVAL", "EVALSHA"], sent
