"""The API key's caller of a request (checked in the request's own session)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from onboarding.api.keys import authenticate, last_use_is_stale, record_use
from onboarding.core.clock import utcnow
from onboarding.core.db import begin_read
from onboarding.core.scope import Scope
from onboarding.web.transactions import db_session


@dataclass(frozen=True)
class ApiCaller:
    name: str
    scope: Scope
    # What the key may call (``keys.KEY_SCOPES``): the order system's endpoints or card states.
    key_scope: str = "order_system"


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
    return ApiCaller(
        f"api:{key.name}",
        Scope(frozenset(key.countries) if key.countries else None),
        key.scope or "order_system",
    )
