"""CSRF tokens: the cookie and the form field that must match (double submit)."""

from __future__ import annotations

import secrets

from fastapi import Request

CSRF_COOKIE = "onb_csrf"


CSRF_FIELD = "csrf_token"


def csrf_token(request: Request) -> str:
    token = getattr(request.state, "csrf_token", None) or request.cookies.get(CSRF_COOKIE)
    if not token or len(token) < 32:
        token = secrets.token_urlsafe(32)
    request.state.csrf_token = token
    return token
