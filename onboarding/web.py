"""HTTP plumbing shared by the routers: database sessions, RFC 9457 problems, API-key callers,
CSRF, languages and page rendering."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, PackageLoader
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from notifications.outbox import ClaimedMessage
from notifications.senders import send_claimed, take_claimed
from onboarding import sessions
from onboarding.accounts import ARGON2_CONCURRENCY
from onboarding.admission import Admission, ClientGone, Overloaded
from onboarding.api_keys import authenticate, last_use_is_stale, record_use
from onboarding.clock import utcnow
from onboarding.db import begin_read, in_read, is_lock_timeout
from onboarding.errors import FieldError, Forbidden, NotFound, ValidationFailed
from onboarding.i18n import LANGUAGES, N_, make_environment, negotiate, normalise_language, use_language
from onboarding.ratelimit import RateLimits
from onboarding.request_context import PROBLEM_TYPE, current_correlation_id
from onboarding.settings import Settings
from onboarding.text_rules import check_texts, unsafe_character
from vehicles.service import Scope

SESSION_COOKIE = "onb_session"
CSRF_COOKIE = "onb_csrf"
CSRF_FIELD = "csrf_token"
LANGUAGE_COOKIE = "onb_lang"

templates = make_environment(
    ChoiceLoader([PackageLoader("onboarding", "templates"), PackageLoader("notifications", "templates")])
)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


def client_ip(request: Request) -> str:
    """The caller's address; the last X-Forwarded-For hop only when told a proxy sets it."""
    if settings_of(request).trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return request.client.host if request.client else "unknown"


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
    """The request's admission to the database (``onboarding.admission``): it may then hold one
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


# Requests whose work is mostly Argon2id (the login form) run this many at a time: one per core, the
# bound ``accounts`` puts on the hashes themselves. The rest wait here, on the event loop, rather than
# in worker threads whose Python would then run beside both hashes: with more threads runnable than
# cores every hash is preempted and each took 10-15 % more CPU (bench/README.md).
PASSWORD_REQUESTS = CapacityLimiter(ARGON2_CONCURRENCY)


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


_BUSY = N_("The service is busy. Please try again in a moment.")


def _service_unavailable(request: Request, retry_after_seconds: int, detail: str = _BUSY) -> Response:
    response: Response
    if request.url.path.startswith("/api/"):
        response = problem(503, "Service unavailable", detail)
    else:
        response = render(request, "error.html", {"status": 503, "detail": detail}, status=503)
    response.headers["Retry-After"] = str(retry_after_seconds)
    return response


# These four answer on the event loop (``async``): Starlette runs a plain handler in a worker thread,
# a hop per shed request when the point is to shed cheaply.
async def _overloaded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    return _service_unavailable(request, exc.retry_after_seconds)


async def _client_gone_answer(request: Request, exc: Exception) -> Response:
    # Nobody reads it: after a burst, hundreds of these end at once, and the callers who are still
    # there should not wait while problem documents are rendered for the ones who left.
    return Response(status_code=499)  # nginx's "client closed request"


async def _database_busy(request: Request, exc: Exception) -> Response:
    # SQLite's write lock not free within the short busy timeout: try again, rather than a 500.
    if not is_lock_timeout(exc):
        raise exc
    return _service_unavailable(request, 1)


async def _pool_timeout(request: Request, exc: Exception) -> Response:
    # Admission keeps requests from waiting for connections; should one still, it is only busy.
    return _service_unavailable(request, 1)


# --- problems (RFC 9457) -------------------------------------------------------------------------


def problem(
    status: int, title: str, detail: str | None = None, errors: list[FieldError] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = [
            {"field": e.field, "pointer": _pointer(e.field), "message": e.text, "code": e.code}
            for e in errors
        ]
    correlation_id = current_correlation_id()
    if correlation_id:
        body["correlation_id"] = correlation_id
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _pointer(field: str) -> str:
    # RFC 6901: "" is the whole body, "/a/b" a member in it.
    return "" if field == "body" else "/" + field.replace("~", "~0").replace(".", "/")


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    # A dict key the client sent may itself hold what the text rule refuses; never echo it raw.
    return ".".join(p if unsafe_character(p) is None else ascii(p) for p in parts) or "body"


def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    malformed = [e for e in errors if e.get("type") == "json_invalid"]
    if malformed:
        # The JSON parser's offset is no field; the pointer names the whole body.
        reason = str(malformed[0].get("ctx", {}).get("error", "malformed JSON"))
        return problem(
            400,
            "Malformed JSON",
            "The request body is not valid JSON.",
            [FieldError("body", f"Not valid JSON: {reason}.", "json_invalid")],
        )
    fields = [
        FieldError(_field_name(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")), str(e.get("type", "")))
        for e in errors
    ]
    return problem(422, "Invalid request", "One or more fields are invalid.", fields)


class ProblemFieldError(BaseModel):
    field: str
    pointer: str = Field(description='JSON pointer (RFC 6901) into the body; "" is the whole body')
    message: str
    code: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error of the APIs is answered."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemFieldError] | None = None
    correlation_id: str | None = Field(default=None, description="Quote it when reporting a problem")


PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or invalid API key",
    403: "The API key may not do this",
    404: "Not found (or outside the key's markets)",
    413: "Request body too large",
    415: "Unsupported media type (send application/json)",
    422: "Invalid fields, each named",
    500: "Unexpected error (with a correlation id)",
    503: "Busy: try again after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these problem statuses (``openapi_with_problems`` moves their schema
    to ``application/problem+json``)."""
    return {status: {"model": Problem, "description": PROBLEM_DESCRIPTIONS[status]} for status in statuses}


def openapi_with_problems(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, with error responses documented as the ``application/problem+json``
    they are (FastAPI documents every response model as ``application/json``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[:1] in "45" and "application/json" in content:
                        content["application/problem+json"] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    return openapi


def _validation_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailed)
    return problem(422, "Invalid request", "One or more fields are invalid.", exc.errors)


def _not_found(request: Request, exc: Exception) -> Response:
    return problem(404, "Not found", f"No such resource: {exc}")


def _forbidden(request: Request, exc: Exception) -> Response:
    return problem(403, "Forbidden", str(exc) or None)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/api/"):
        response = problem(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return render(
        request, "error.html", {"status": exc.status_code, "detail": exc.detail}, status=exc.status_code
    )


# --- API callers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCaller:
    name: str
    scope: Scope


def api_caller(request: Request, session: Session = Depends(db_session)) -> ApiCaller:
    """The key's caller, checked in the request's own session and transaction: a GET reads (a read
    transaction, ``db.begin_read``); other methods note the key's use with the request's work."""
    reading = request.method in ("GET", "HEAD")
    if reading:
        begin_read(session)
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    key = authenticate(session, presented.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise HTTPException(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
    now = utcnow()
    if last_use_is_stale(key, now):
        if reading:
            # At most once a minute per key: a short write of its own, then the read goes on.
            session.commit()
            record_use(session, key, now=now)
            session.commit()
            begin_read(session)
        else:
            record_use(session, key, now=now)  # committed with the request's work
    return ApiCaller(f"api:{key.name}", Scope(frozenset(key.countries) if key.countries else None))


# --- signed-in people -----------------------------------------------------------------------------


class AnsweredInstead(Exception):
    """Raised by a page dependency that answers the request itself (a redirect to log in, a link
    that no longer works), so that each route using it need not check."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _answered_instead(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnsweredInstead)
    return exc.response


def session_of(
    request: Request, session: Session, *, stages: tuple[str, ...] = (sessions.FULL,)
) -> sessions.CurrentSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    current = sessions.lookup(session, settings_of(request), token, now=utcnow())
    if current is None or current.stage not in stages:
        return None
    return current


def signed_in(request: Request, session: Session = Depends(db_session)) -> sessions.CurrentSession:
    """The signed-in person of a page; otherwise a redirect to log in and come back."""
    current = session_of(request, session, stages=(sessions.FULL, sessions.UNVERIFIED))
    if current is None:
        raise AnsweredInstead(RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303))
    if current.stage == sessions.UNVERIFIED:
        raise AnsweredInstead(RedirectResponse("/register/pending", status_code=303))
    return current


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings_of(request).secure_cookies,
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def safe_next(target: str | None, default: str = "/account") -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative ``//``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# --- CSRF ------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    token = getattr(request.state, "csrf_token", None) or request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = secrets.token_urlsafe(32)
    request.state.csrf_token = token
    return token


async def csrf_protect(request: Request) -> None:
    """Double-submit check on every state-changing form, plus an Origin check where browsers send one."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = {_origin(str(request.base_url)), _origin(settings_of(request).public_base_url)}
        if _origin(origin) not in expected:
            raise HTTPException(403, N_("Cross-site request refused."))
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    # compare_digest refuses non-ASCII strings (a TypeError, a 500): such a token is no token of ours.
    genuine = isinstance(sent, str) and cookie and sent.isascii() and cookie.isascii()
    if not genuine or not secrets.compare_digest(str(sent), str(cookie)):
        raise HTTPException(
            403, N_("The form has expired or came from another site. Reload the page and try again.")
        )
    # Every form runs this check, so the text rule covers every form field (onboarding.text_rules).
    fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    unsafe = check_texts([*fields, *(("field name", name) for name, _ in fields)], multiline=MULTILINE_FIELDS)
    if unsafe:
        detail = f"The field '{_field_name((unsafe[0].field,))}': {unsafe[0].text}"
        raise AnsweredInstead(render(request, "error.html", {"status": 422, "detail": detail}, status=422))


# Form fields that are free text over several lines (textareas), where line breaks and tabs belong.
MULTILINE_FIELDS = frozenset({"message"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- languages and pages ---------------------------------------------------------------------------


def page_language(request: Request, default: str | None = None) -> str:
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE), default):
        found = normalise_language(candidate)
        if found:
            return found
    return negotiate(request.headers.get("accept-language"))


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    language: str | None = None,
) -> HTMLResponse:
    settings = settings_of(request)
    lang = page_language(request, language)
    token = csrf_token(request)
    values = {
        "request": request,
        "brand": {"name": settings.brand_name, "colour": settings.brand_primary_colour},
        "csrf_field": CSRF_FIELD,
        "csrf_token": token,
        "lang": lang,
        "languages": LANGUAGES,
        "path": request.url.path,
        **context,
    }
    with use_language(lang):
        body = templates.get_template(template).render(values)
    response = HTMLResponse(body, status_code=status)
    secure = settings.secure_cookies
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax", secure=secure, path="/")
    if request.query_params.get("lang") and normalise_language(request.query_params["lang"]):
        response.set_cookie(
            LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=secure, path="/"
        )
    return response


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Response | Awaitable[Response]]] = {
    RequestValidationError: _request_validation,
    ValidationFailed: _validation_failed,
    NotFound: _not_found,
    Forbidden: _forbidden,
    StarletteHTTPException: _http_error,
    AnsweredInstead: _answered_instead,
    Overloaded: _overloaded,
    ClientGone: _client_gone_answer,
    OperationalError: _database_busy,
    PoolTimeout: _pool_timeout,
}
