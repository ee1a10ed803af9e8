"""Every request's correlation id, its body size limit, and the answer to an unexpected error.

The id is the caller's ``X-Correlation-ID`` or ``X-Request-ID`` when it is a sane one (a proxy's or
an integration's), otherwise a new one. It is bound to the request's log events, returned in the
``X-Correlation-ID`` header of every response and put in every problem document, so a support case,
a log line and a response can be matched.

A body larger than ``max_body_bytes`` is refused with 413 as soon as that is known: at once when
its ``Content-Length`` says so (nothing of it is read), else when the bytes streamed in pass it.
(FastAPI's own ``max_body_size`` answers an announced oversized body in plain text, from outside
every middleware and exception handler.)

An exception no handler answered becomes a 500 problem document here, logged as its type, the
correlation id and a traceback without messages. Plain ASGI, inside Starlette's
``ServerErrorMiddleware``: that one re-raises to the server after answering, and uvicorn then drops
the keep-alive connection (and logs the exception with its message, which may hold personal data).
"""

from __future__ import annotations

import json
import re
import uuid
from contextvars import ContextVar

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboarding.core.logconfig import exception_type, redacted_traceback

CORRELATION_HEADER = "X-Correlation-ID"
_INCOMING_HEADERS = ("x-correlation-id", "x-request-id")
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
PROBLEM_TYPE = "https://onboarding.example/problems/"

_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
log = structlog.get_logger(__name__)


def current_correlation_id() -> str | None:
    return _correlation_id.get()


def _correlation_id_of(scope: Scope) -> str:
    headers = Headers(scope=scope)
    for name in _INCOMING_HEADERS:
        given = headers.get(name, "")
        if _SANE_ID.fullmatch(given):
            return given
    return uuid.uuid4().hex


_UNEXPECTED = "Something went wrong on our side. Quote the correlation id when reporting it."


class BodyTooLarge(HTTPException):
    """Raised where the request body is read (the route's JSON, a form): the exception handlers
    answer it like any HTTP error, a problem document on the APIs."""

    def __init__(self) -> None:
        super().__init__(413, "Content too large")


def _problem_body(status: int, title: str, detail: str, correlation_id: str) -> bytes:
    return json.dumps(
        {
            "type": PROBLEM_TYPE + title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
            "correlation_id": correlation_id,
        }
    ).encode()


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        upload_paths: tuple[str, ...] = (),
        max_upload_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # File uploads (exactly these paths, POST) may be larger.
        self.upload_paths = frozenset(upload_paths)
        self.max_upload_bytes = max(max_upload_bytes, max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _correlation_id_of(scope)
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        limit = self.max_body_bytes
        if scope.get("method") == "POST" and scope["path"] in self.upload_paths:
            limit = self.max_upload_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            detail = f"The request body may be at most {limit} bytes."
            await _answer(send_with_id, 413, _problem_body(413, "Content too large", detail, correlation_id))
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        reset = _correlation_id.set(correlation_id)
        try:
            with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
                try:
                    await self.app(scope, receive_within_limit, send_with_id)
                except Exception as exc:
                    log.error(
                        "request.failed",
                        exc_type=exception_type(exc),
                        method=scope.get("method"),
                        route=_route_of(scope),
                        exception=redacted_traceback(exc),
                        response_started=response_started,
                    )
                    if not response_started:
                        body = _problem_body(500, "Internal server error", _UNEXPECTED, correlation_id)
                        await _answer(send_with_id, 500, body)
        finally:
            _correlation_id.reset(reset)


def _route_of(scope: Scope) -> str:
    # The route's template (/api/v1/orders/{order_number}), not the path: a path can hold personal data.
    route = scope.get("route")
    return str(getattr(route, "path", "")) or "unmatched"


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
