"""Admission of requests to the database: a bounded number hold a session at once, a bounded queue
waits briefly for them, and the rest are told at once to come back later (503 with Retry-After).

Why: a request that holds a pooled connection must never wait for something that waits for a
connection. With no more requests holding a session than the pool has connections, and each holding
at most one, no request waits on the pool; the queue is here instead, on the event loop, where a
waiting request holds neither a thread nor a connection. Refusing when the queue is full or a wait
runs out keeps an overloaded service answering (503) rather than timing out into 500s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine

from onboarding.core.db import pool_capacity
from onboarding.core.settings import Settings


class Overloaded(Exception):
    """No slot within the allowed wait: answered 503 with ``Retry-After``."""

    def __init__(self, retry_after_seconds: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after_seconds = retry_after_seconds


class ClientGone(Overloaded):
    """The client went away while its request waited: whatever is answered, nobody reads it."""


class Admission:
    """``capacity`` slots handed out first come, first served; at most ``max_waiting`` requests wait,
    each at most ``max_wait_seconds``; one more is refused at once. ``Retry-After`` is the expected
    wait: the place in the queue times the recent time a slot is held, divided by the slots.
    (Refusing early by that estimate was tried: one slow moment of a shared machine made it shed
    requests the queue would have served in time.)

    Runs on one event loop (the server's); not thread-safe, and needs none."""

    def __init__(self, capacity: int, *, max_waiting: int, max_wait_seconds: float) -> None:
        if capacity < 1:
            raise ValueError("admission needs at least one slot")
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self.in_flight = 0
        self.shed = 0  # refused since start, for diagnosis
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._hold_seconds = 0.0  # moving average of how long a slot is held
        self.writers: Admission | None = None  # API writes take turns here first (SQLite)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def expected_wait(self, position: int) -> float:
        return position * self._hold_seconds / self.capacity

    def _refuse(self, reason: str, expected: float) -> Overloaded:
        self.shed += 1
        return Overloaded(max(1, math.ceil(expected)), reason)

    async def acquire(
        self, gone: Callable[[], Awaitable[object]] | None = None, *, first: bool = False
    ) -> None:
        """Takes a slot, waiting in turn (``first``: ahead of the others). ``gone()`` completes when
        the client has gone away: a request nobody waits for any more leaves the queue (as
        ``ClientGone``) instead of being served to no one while the callers still there wait."""
        if self.in_flight < self.capacity and not self._waiters:
            self.in_flight += 1
            return
        position = len(self._waiters) + 1
        if position > self.max_waiting:
            raise self._refuse("too many requests waiting", self.expected_wait(position))
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(turn)
        else:
            self._waiters.append(turn)
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            waits: set[asyncio.Future[Any]] = {turn}
            if watcher is not None:
                waits.add(watcher)
            await asyncio.wait(waits, timeout=self.max_wait_seconds, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release(held_seconds=None)  # handed over just as we were cancelled: pass it on
            raise
        finally:
            if watcher is not None:
                if not watcher.done():
                    watcher.cancel()
                elif not watcher.cancelled():
                    watcher.exception()  # retrieved: any way it ended means the client is gone
            if not turn.done():
                turn.cancel()
                self._waiters.remove(turn)
        if turn.cancelled():
            if watcher is not None and watcher.done() and not watcher.cancelled():
                self.shed += 1
                raise ClientGone(1, "the client has gone")
            raise self._refuse("waited too long", self.expected_wait(len(self._waiters) + 1))

    def release(self, held_seconds: float | None) -> None:
        if held_seconds is not None:
            self._hold_seconds += 0.1 * (held_seconds - self._hold_seconds)
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to the next in line; in_flight is unchanged
                return
        self.in_flight -= 1

    @asynccontextmanager
    async def slot(
        self, gone: Callable[[], Awaitable[object]] | None = None, *, first: bool = False
    ) -> AsyncIterator[None]:
        await self.acquire(gone, first=first)
        started = time.monotonic()
        try:
            yield
        finally:
            self.release(held_seconds=time.monotonic() - started)


def admission_for(settings: Settings, engine: Engine) -> Admission:
    """The requests' admission: ``requests_in_flight`` slots (default ``db_pool_size``), never more
    than the engine's pool keeps connections, so that no admitted request waits for one."""
    capacity = settings.requests_in_flight or settings.db_pool_size
    pool = pool_capacity(engine)
    if pool is not None:
        capacity = min(capacity, pool)
    admission = Admission(
        max(1, capacity),
        max_waiting=settings.requests_waiting,
        max_wait_seconds=settings.request_queue_seconds,
    )
    if engine.dialect.name == "sqlite":
        # SQLite has one write lock, and a writer that finds it taken polls for it (sleeping up to
        # 100 ms between tries, holding a thread and a slot): measured, with PUTs polling in the
        # slots the GETs behind them got through at a few per second. So API writes take turns
        # here, on the event loop, holding no slot; the writer whose turn it is then takes the next
        # free slot ahead of the queue. (With the slot taken first, PUTs waiting for their turn
        # filled the slots; with the turn taken first and the slot in line, a turn waited seconds
        # behind the queue while the other writes timed out.)
        admission.writers = Admission(
            1, max_waiting=settings.requests_waiting, max_wait_seconds=settings.request_queue_seconds
        )
    return admission
