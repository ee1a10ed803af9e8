"""Who is signed in: the web-session cookie and the page dependencies that require a signed-in
person; the rate limits of a request."""

from __future__ import annotations

from urllib.parse import quote

from anyio import CapacityLimiter
from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.identity import web_sessions
from onboarding.identity.accounts import ARGON2_CONCURRENCY
from onboarding.identity.ratelimit import RateLimits
from onboarding.web.app_state import settings_of
from onboarding.web.problems import AnsweredInstead
from onboarding.web.transactions import db_session

SESSION_COOKIE = "onb_session"


def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


def session_of(
    request: Request, session: Session, *, stages: tuple[str, ...] = (web_sessions.FULL,)
) -> web_sessions.CurrentSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    current = web_sessions.lookup(session, settings_of(request), token, now=utcnow())
    if current is None or current.stage not in stages:
        return None
    return current


def signed_in(request: Request, session: Session = Depends(db_session)) -> web_sessions.CurrentSession:
    """The signed-in person of a page; otherwise a redirect to log in and come back."""
    current = session_of(request, session, stages=(web_sessions.FULL, web_sessions.UNVERIFIED))
    if current is None:
        raise AnsweredInstead(RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303))
    if current.stage == web_sessions.UNVERIFIED:
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


# Requests whose work is mostly Argon2id (the login form) run this many at a time: one per core, the
# bound ``accounts`` puts on the hashes themselves. The rest wait here, on the event loop, rather than
# in worker threads whose Python would then run beside both hashes: with more threads runnable than
# cores every hash is preempted and each took 10-15 % more CPU (bench/README.md).
PASSWORD_REQUESTS = CapacityLimiter(ARGON2_CONCURRENCY)
