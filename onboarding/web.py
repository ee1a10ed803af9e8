"""HTTP plumbing shared by the routers: database sessions, RFC 9457 problems, API-key callers,
CSRF, languages and page rendering."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import BackgroundTasks, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, PackageLoader
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from notifications.outbox import ClaimedMessage
from notifications.senders import send_claimed, take_claimed
from onboarding import sessions
from onboarding.accounts import ARGON2_CONCURRENCY
from onboarding.api_keys import authenticate
from onboarding.clock import utcnow
from onboarding.errors import FieldError, Forbidden, NotFound, ValidationFailed
from onboarding.i18n import LANGUAGES, N_, make_environment, negotiate, normalise_language, use_language
from onboarding.ratelimit import RateLimits
from onboarding.settings import Settings
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


def db_session(request: Request) -> Iterator[Session]:
    with request_session(request) as session:
        yield session


# Requests whose work is mostly Argon2id (the login form) run this many at a time: one per core, the
# bound ``accounts`` puts on the hashes themselves. The rest wait here, on the event loop, rather than
# in worker threads whose Python would then run beside both hashes: with more threads runnable than
# cores every hash is preempted and each took 10-15 % more CPU (bench/README.md).
PASSWORD_REQUESTS = CapacityLimiter(ARGON2_CONCURRENCY)


async def in_one_thread(
    request: Request, work: Callable[[Session], Response], *, limiter: CapacityLimiter | None = None
) -> Response:
    """Runs a page's whole unit of work (session, statements, commit, close) in one worker thread,
    admitted by ``limiter`` (anyio's shared pool of worker threads when None).

    For an ``async def`` route on a hot path: a plain ``def`` route with ``Depends(db_session)`` moves
    between the event loop and the thread pool three times (opening the session, the route, closing
    it), and each move is two thread wake-ups."""

    def run() -> Response:
        with request_session(request) as session:
            return work(session)

    return await anyio.to_thread.run_sync(run, limiter=limiter)


# --- problems (RFC 9457) -------------------------------------------------------------------------

PROBLEM_TYPE = "https://onboarding.example/problems/"


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
            {
                "field": e.field,
                "pointer": "/" + e.field.replace(".", "/"),
                "message": e.text,
                "code": e.code,
            }
            for e in errors
        ]
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        errors.append(
            FieldError(".".join(loc) or "body", str(err.get("msg", "invalid")), str(err.get("type", "")))
        )
    return problem(422, "Invalid request", "One or more fields are invalid.", errors)


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
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    key = authenticate(session, presented.strip(), now=utcnow()) if scheme.lower() == "bearer" else None
    if key is None:
        raise HTTPException(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
    session.commit()  # keeps last_used_at
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
    if not isinstance(sent, str) or not cookie or not secrets.compare_digest(sent, cookie):
        raise HTTPException(
            403, N_("The form has expired or came from another site. Reload the page and try again.")
        )


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


EXCEPTION_HANDLERS = {
    RequestValidationError: _request_validation,
    ValidationFailed: _validation_failed,
    NotFound: _not_found,
    Forbidden: _forbidden,
    StarletteHTTPException: _http_error,
    AnsweredInstead: _answered_instead,
}
