"""A small pool of the operator's PostgreSQL connections, with a cap on how many are open.

A cold start with a thousand tenants reconciles them all at once; one connection per call made
PostgreSQL refuse the rest ("sorry, too many clients already"). Every connection the operator
opens (admin sessions and the password checks that log in as a tenant) takes a slot first; at
most `max_size` are open at a time and the others wait their turn, first come first served.

A clean admin connection that is given back goes straight to the next caller waiting for one,
so a busy operator keeps its `max_size` sessions open instead of closing one and opening the
next (a fork of a PostgreSQL backend and a SCRAM exchange each time); with nobody waiting it
is kept for `idle_seconds`. A caller waiting for a slot of its own (a login check) takes the
slot of a connection given back, or of an idle one, which is closed for it. Connections belong
to the event loop that opened them: on another loop the pool starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from tenantgw.tenancy.errors import StorageError

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_SLOT = None
"""What a waiter is handed when it gets a slot to open its own connection with."""


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
        self._taken = 0  # slots held: connections open (in use or idle) and login checks
        self._idle: list[tuple[Conn, float]] = []
        # Callers waiting, in arrival order: (wants an admin connection, where to hand it).
        self._waiters: deque[tuple[bool, asyncio.Future[Conn | None]]] = deque()
        self.opened = 0
        """Admin connections opened so far (what a busy pool saves shows here)."""

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        for conn, _ in self._idle:  # opened on a loop that is gone: close the sockets only
            with suppress(Exception):
                conn.pgconn.finish()
        self._idle = []
        self._waiters = deque()
        self._taken = 0
        self._loop = loop

    def _take_idle(self) -> Conn | None:
        """A live idle connection, its slot with it; stale ones are closed on the way."""
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.closed and now - since < self._idle_seconds:
                return conn
            self._close_now(conn)
            self._taken -= 1
        return None

    @staticmethod
    def _close_now(conn: Conn) -> None:
        with suppress(Exception):
            conn.pgconn.finish()

    async def _wait(self, wants_connection: bool) -> Conn | None:
        """Wait for a slot (None) or, when `wants_connection`, a connection given back."""
        turn: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((wants_connection, turn))
        try:
            done, _ = await asyncio.wait({turn}, timeout=self._wait_seconds)
        except asyncio.CancelledError:
            if turn.done():  # handed a slot just as it was cancelled: pass it on
                self._hand_over(turn.result())
            else:
                turn.cancel()
            raise
        if not done:
            turn.cancel()  # _hand_over skips it
            raise StorageError(
                f"waited {self._wait_seconds:g} s for one of the {self.max_size} connections to "
                f"PostgreSQL at {self._endpoint} that {self._setting} allows; raise it if "
                "the server has room"
            )
        return turn.result()

    async def _slot(self, wants_connection: bool) -> Conn | None:
        """A slot (None) or a connection; waits when every slot is taken."""
        if self._taken < self.max_size and not self._waiters:
            self._taken += 1
            return _SLOT
        if not wants_connection and not self._waiters and self._idle:
            conn, _ = self._idle.pop(0)  # the oldest: its slot passes to the caller
            self._close_now(conn)
            return _SLOT
        return await self._wait(wants_connection)

    def _hand_over(self, conn: Conn | None) -> None:
        """Pass a slot given back, with `conn` when it is clean, to the first waiter.

        With nobody waiting, a clean connection goes idle and the slot of anything else is
        freed."""
        while self._waiters:
            wants_connection, turn = self._waiters.popleft()
            if turn.done():
                continue  # it gave up waiting
            if conn is not None and not wants_connection:
                self._close_now(conn)
                conn = None
            turn.set_result(conn)
            return
        if conn is not None:
            self._idle.append((conn, time.monotonic()))
        else:
            self._taken -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for a connection opened elsewhere (a login check as a tenant)."""
        self._bind()
        await self._slot(wants_connection=False)
        try:
            yield
        finally:
            self._hand_over(None)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """An admin connection: an idle one, one given back, or a new one."""
        self._bind()
        conn = None if self._waiters else self._take_idle()
        if conn is None:
            conn = await self._slot(wants_connection=True)
        if conn is None:  # a slot of our own: open the connection
            try:
                conn = await self._connect()
            except BaseException:
                self._hand_over(None)
                raise
            self.opened += 1
        clean = False
        try:
            yield conn
            clean = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        finally:
            if clean:
                self._hand_over(conn)
            else:
                with suppress(Exception):
                    await conn.close()
                self._hand_over(None)

    async def close(self) -> None:
        """Close the idle connections (at shutdown)."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with suppress(Exception):
                await conn.close()
            self._taken -= 1
