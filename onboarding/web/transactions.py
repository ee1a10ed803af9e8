"""The request's database session: admission (at most one connection a request, overload answered
503), read or write transactions, commit-then-send, bounded threads for blocking work."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import BackgroundTasks, Request
from fastapi.responses import Response
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from notifications.outbox import ClaimedMessage
from notifications.senders import send_claimed, take_claimed
from onboarding.core.db import AnySelect, PointReads, engine_of, in_read, read_connection
from onboarding.core.settings import Settings
from onboarding.web.admission import Admission, ClientGone, Overloaded
from onboarding.web.app_state import settings_of
from onboarding.web.problems import _BUSY, problem

T = TypeVar("T")


def commit(request: Request, session: Session, background: BackgroundTasks | None = None) -> None:
    """Commit the request's work; messages it wrote for immediate sending go out after the response
    (should that fail, the outbox sends them once their short lease runs out)."""
    claimed = take_claimed(session)
    session.commit()
    if claimed and background is not None:
        background.add_task(
            _send_after_response, session, request.app.state.session_factory, settings_of(request), claimed
        )


async def _send_after_response(
    request_session: Session,
    factory: sessionmaker[Session],
    settings: Settings,
    claimed: list[ClaimedMessage],
) -> None:
    # The response is rendered, so the request's session is done; ending its transaction first frees
    # SQLite's single writer lock for the delivery records.
    request_session.close()
    await send_claimed(factory, settings, claimed)


@contextmanager
def request_session(request: Request) -> Iterator[Session]:
    """A session per request; the route commits what it means to keep, anything else rolls back."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


_ADMITTED = "onboarding.admitted"


@asynccontextmanager
async def admitted(request: Request) -> AsyncIterator[None]:
    """The request's admission to the database (``onboarding.web.admission``): it may then hold one
    connection. A request admitted already (``db_session`` and ``in_one_thread`` in one request)
    keeps its slot: waiting for a second one while holding the first could wait for itself. On
    SQLite an API write first waits its turn among API writes (``Admission.writers``). A request
    whose client goes away while it waits leaves the queue."""
    if request.scope.get(_ADMITTED):
        yield
        return
    admission: Admission = request.app.state.admission
    gone = _client_gone(request)
    async with AsyncExitStack() as turns:
        writing = request.method not in ("GET", "HEAD") and request.url.path.startswith("/api/")
        if admission.writers is not None and writing:
            await turns.enter_async_context(admission.writers.slot(gone))  # see admission_for
        await turns.enter_async_context(admission.slot(gone, first=writing))
        request.scope[_ADMITTED] = True
        try:
            yield
        finally:
            request.scope[_ADMITTED] = False


class AdmitApiRequests:
    """Admission (``admitted``) for the APIs' requests as they arrive, before routing and before any
    dependency: a queued API request holds only its coroutine. One whose client goes away while it
    waits ends here, unanswered (nobody would read it): after a burst, hundreds of them end at once,
    and through the whole application each cost about a millisecond, which the callers still there
    waited for. The body the wait read to see the disconnect is replayed to the application.

    Inside ``RequestContext`` (correlation ids, body limit) and ``SecurityHeaders``, so a 503 gets
    both; outside FastAPI's exception handlers, so it answers that 503 itself."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix) or scope.get(_ADMITTED):
            await self.app(scope, receive, send)
            return
        admission: Admission = scope["app"].state.admission
        received: deque[Message] = deque()

        async def gone() -> None:
            while (message := await receive())["type"] != "http.disconnect":
                received.append(message)

        async def replayed() -> Message:
            return received.popleft() if received else await receive()

        async with AsyncExitStack() as turns:
            try:
                writers = admission.writers if scope["method"] not in ("GET", "HEAD") else None
                if writers is not None:
                    await turns.enter_async_context(writers.slot(gone))  # see admission_for
                await turns.enter_async_context(admission.slot(gone, first=writers is not None))
            except ClientGone:
                return
            except Overloaded as exc:
                busy = problem(503, "Service unavailable", _BUSY)
                busy.headers["Retry-After"] = str(exc.retry_after_seconds)
                await busy(scope, replayed, send)
                return
            scope[_ADMITTED] = True
            await self.app(scope, replayed, send)


def _client_gone(request: Request) -> Callable[[], Awaitable[None]]:
    """Completes when the request's client has gone away. The body is read (and kept for the route)
    first: the disconnect comes after it. A body already read as a form cannot be read again, and
    then the wait cannot tell: it never completes."""

    async def gone() -> None:
        try:
            await request.body()
        except ClientDisconnect:
            return
        except Exception:  # "Stream consumed" (read as a form), too large: the route will say
            await anyio.sleep_forever()
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


# Ending a request's session (rollback and close: a round trip on PostgreSQL) runs in a thread of its
# own limiter: it never waits behind other work while it holds a connection. Admission bounds how
# many run at once.
_ENDING_SESSIONS = CapacityLimiter(1000)


def _end_session(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def db_session(request: Request) -> AsyncIterator[Session]:
    """The request's session, once the request is admitted (``admitted``). An ``async`` dependency:
    opening it takes no thread (a session connects at its first statement), and it is ended in a
    thread that waits for nothing, whatever happened to the request (shielded from cancellation)."""
    async with admitted(request):
        session: Session = request.app.state.session_factory()
        try:
            yield session
        finally:
            with anyio.CancelScope(shield=True):
                if session.in_transaction() and not in_read(session):
                    await anyio.to_thread.run_sync(_end_session, session, limiter=_ENDING_SESSIONS)
                else:
                    _end_session(session)  # no connection, or a read: nothing to wait for


async def in_one_thread(
    request: Request, work: Callable[[Session], Response], *, limiter: CapacityLimiter | None = None
) -> Response:
    """Runs a page's whole unit of work (session, statements, commit, close) in one worker thread,
    once the request is admitted (``admitted``), and then by ``limiter`` (anyio's shared pool of
    worker threads when None).

    For an ``async def`` route on a hot path: a plain ``def`` route with ``Depends(db_session)`` moves
    between the event loop and the thread pool three times (the route, serialising its answer,
    closing the session), and each move is two thread wake-ups. Cancelled, it still waits for the
    thread, which closes the session."""

    def run() -> Response:
        with request_session(request) as session:
            return work(session)

    async with admitted(request):
        return await anyio.to_thread.run_sync(run, limiter=limiter)


async def read_in_one_thread(
    request: Request, work: Callable[[Connection], T], *, single_statement: bool = False
) -> T:
    """``in_one_thread`` for a read on a bare connection (``read_connection``): no ORM session to
    open and end, no ``BEGIN`` on PostgreSQL (nor on SQLite for a ``single_statement``)."""
    engine = engine_of(request.app.state.session_factory)

    def run() -> T:
        with read_connection(engine, single_statement=single_statement) as connection:
            return work(connection)

    async with admitted(request):
        return await anyio.to_thread.run_sync(run)


async def point_read(request: Request, statement: AnySelect, parameters: dict[str, Any]) -> Any:
    """The first row of a one-statement read, once the request is admitted, on the event loop
    (``PointReads``)."""
    reads: PointReads = request.app.state.point_reads
    async with admitted(request):
        return await reads.first(statement, parameters)
