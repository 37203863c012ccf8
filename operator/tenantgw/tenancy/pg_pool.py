"""A small pool of the operator's PostgreSQL connections, with a cap on how many are open.

A cold start with a thousand tenants reconciles them all at once; one connection per call made
PostgreSQL refuse the rest ("sorry, too many clients already"). Every connection the operator
opens (admin sessions and the password checks that log in as a tenant) takes a slot first; at
most `max_size` are open at a time and the others wait their turn. Idle admin connections are
kept for `idle_seconds` and reused. Connections belong to the event loop that opened them: on
another loop the pool starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from tenantgw.tenancy.errors import StorageError

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


class ConnectionPool:
    """Caps the operator's open connections to one PostgreSQL server, idle ones included."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Conn]],
        *,
        max_size: int,
        endpoint: str,
        setting: str,
        idle_seconds: float = 60.0,
        wait_seconds: float = 60.0,
    ) -> None:
        if max_size < 1:
            raise StorageError(f"{setting} must be at least 1, not {max_size}")
        self._connect = connect
        self.max_size = max_size
        self._endpoint = endpoint
        self._setting = setting
        self._idle_seconds = idle_seconds
        self._wait_seconds = wait_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        # One permit per open connection: in use, or idle (an idle one keeps its permit).
        self._permits = asyncio.Semaphore(max_size)
        self._waiting = 0
        self._idle: list[tuple[Conn, float]] = []

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        for conn, _ in self._idle:  # opened on a loop that is gone: close the sockets only
            with suppress(Exception):
                conn.pgconn.finish()
        self._idle = []
        self._permits = asyncio.Semaphore(self.max_size)
        self._waiting = 0
        self._loop = loop

    async def _acquire(self) -> None:
        """A permit to open one more connection; an idle connection gives its own up."""
        if self._permits.locked() and self._idle:
            conn, _ = self._idle.pop(0)  # the oldest: its permit passes to the caller
            await self._discard(conn)
            return
        self._waiting += 1
        try:
            await asyncio.wait_for(self._permits.acquire(), self._wait_seconds)
        except TimeoutError:
            raise StorageError(
                f"waited {self._wait_seconds:g} s for one of the {self.max_size} connections to "
                f"PostgreSQL at {self._endpoint} that {self._setting} allows; raise it if "
                "the server has room"
            ) from None
        finally:
            self._waiting -= 1

    @staticmethod
    async def _discard(conn: Conn) -> None:
        with suppress(Exception):
            await conn.close()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a permit for a connection opened elsewhere (a login check as a tenant)."""
        self._bind()
        await self._acquire()
        try:
            yield
        finally:
            self._permits.release()

    def _take_idle(self) -> Conn | None:
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.closed and now - since < self._idle_seconds:
                return conn
            with suppress(Exception):
                conn.pgconn.finish()
            self._permits.release()
        return None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """An admin connection, reused when one is idle; kept for reuse only when clean and
        nobody waits for a permit."""
        self._bind()
        conn = self._take_idle()
        if conn is None:
            await self._acquire()
            try:
                conn = await self._connect()
            except BaseException:
                self._permits.release()
                raise
        clean = False
        try:
            yield conn
            clean = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        finally:
            if clean and not self._waiting:
                self._idle.append((conn, time.monotonic()))
            else:
                await self._discard(conn)
                self._permits.release()

    async def close(self) -> None:
        """Close the idle connections (at shutdown)."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._discard(conn)
            self._permits.release()
