"""API keys for machine clients (order systems). The key is shown once; only its hash is kept."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from onboarding.api.models import ApiKey
from onboarding.core.crypto import token_hash
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import KNOWN_COUNTRIES

KEY_PREFIX = "onb"


ORDER_SYSTEM, CARD_SUPPLIER = "order_system", "card_supplier"
KEY_SCOPES = (ORDER_SYSTEM, CARD_SUPPLIER)


def create_api_key(
    session: Session,
    name: str,
    *,
    now: datetime,
    countries: list[str] | None = None,
    scope: str = ORDER_SYSTEM,
) -> tuple[ApiKey, str]:
    """A new key; ``scope`` says what it may call: the order system's endpoints or, for the charging
    card supplier, card states only."""
    name = name.strip()
    errors = []
    if scope not in KEY_SCOPES:
        errors.append(FieldError("scope", f"Unknown scope '{scope}': use {' or '.join(KEY_SCOPES)}."))
    if not 1 <= len(name) <= 100:
        errors.append(FieldError("name", "Give the integration a name of 1-100 characters."))
    markets = sorted({c.strip().upper() for c in countries}) if countries else None
    for code in markets or []:
        if code not in KNOWN_COUNTRIES:
            errors.append(FieldError("countries", f"Unknown country '{code}'."))
    if errors:
        raise ValidationFailed(errors)
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=token_hash(plaintext),
        countries=markets,
        scope=scope,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key, plaintext


# last_used_at is kept to the minute: a key in steady use is not written at every request (a write per
# request took SQLite's single write lock, and a commit of its own, for every read).
LAST_USED_PRECISION = timedelta(minutes=1)


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The live key ``presented`` is, if any. Reads only: see ``record_use``."""
    parts = presented.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None)))
    if key is None or not hmac.compare_digest(key.key_hash, token_hash(presented)):
        return None
    return key


def last_use_is_stale(key: ApiKey, now: datetime) -> bool:
    return key.last_used_at is None or now - key.last_used_at >= LAST_USED_PRECISION


def record_use(session: Session, key: ApiKey, *, now: datetime) -> None:
    """Notes that the key was used now, in the session's transaction. Conditional, so that requests
    racing at the same minute do not each rewrite it."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key.id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_PRECISION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
