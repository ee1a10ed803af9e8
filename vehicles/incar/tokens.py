"""The car's tokens: short-lived opaque access tokens and rotating refresh tokens (RFC 6749 §5-6,
RFC 9700 §2.2.2 and §4.14), all stored as SHA-256 only.

A refresh token is used once. Its use is claimed by a conditional ``UPDATE … WHERE used_at IS NULL``,
so of any number of concurrent requests with one token exactly one rotates it (on PostgreSQL the
others wait for its commit; on SQLite writers queue on ``BEGIN IMMEDIATE``). The answer it gave is
kept sealed on the used token for the retry grace: a car whose response was lost and that sends the
same token again within ``incar_refresh_retry_seconds``, while the successor is unused, gets the same
answer again. Any other reuse revokes the whole grant (RFC 9700 §4.14.2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, CursorResult, and_, bindparam, case, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, seal_text, token_hash, unseal_text
from onboarding.core.settings import Settings
from onboarding.identity import audit
from vehicles.incar.models import AccessToken, DeviceAuthorization, InCarGrant, RefreshToken, VehicleClient

ANSWER_PURPOSE = "incar-refresh-answer"
MAX_ACCESS_SECONDS = 600  # SPEC §3.7: access tokens live at most ten minutes
REUSE = "refresh_reuse"


class InvalidGrant(Exception):
    """RFC 6749 ``invalid_grant``: the refresh token is unknown, expired, another client's, revoked,
    or was reused (then the grant is revoked too, and the caller must commit that)."""


@dataclass(frozen=True)
class AccessContext:
    """Who a valid access token speaks for: the car's grant, and the user (None: the car itself)."""

    grant_id: int
    client_id: str
    vin: str
    account_id: int | None
    scope: str


def access_seconds(settings: Settings) -> int:
    return min(settings.incar_access_token_minutes * 60, MAX_ACCESS_SECONDS)


# The token endpoint's hot statements, built once (a refresh is a handful of small statements; building
# them per call cost more than running them). Rows are written with Core INSERTs: nothing reads them
# back in the unit of work, and the ORM's bookkeeping for a new object costs more than the row.
_INSERT_ACCESS = insert(AccessToken)
_INSERT_REFRESH = insert(RefreshToken).returning(RefreshToken.id)
_FIND_REFRESH = (
    select(
        RefreshToken.id,
        RefreshToken.expires_at,
        InCarGrant.id.label("grant_id"),
        InCarGrant.client_id,
        InCarGrant.revoked_at,
        InCarGrant.account_id,
        InCarGrant.scope,
    )
    .join(InCarGrant, InCarGrant.id == RefreshToken.grant_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)
_CLAIM = (
    update(RefreshToken)
    .where(RefreshToken.id == bindparam("token_id"), RefreshToken.used_at.is_(None))
    .values(used_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)
# The used token keeps its successor and the sealed answer; every other token of the grant loses its
# kept answer (this use ends its predecessor's retry grace). One statement for both.
_RECORD_ROTATION = (
    update(RefreshToken)
    .where(
        RefreshToken.grant_id == bindparam("b_grant_id"),
        or_(RefreshToken.id == bindparam("b_token_id"), RefreshToken.answer_sealed.is_not(None)),
    )
    .values(
        successor_id=case(
            (RefreshToken.id == bindparam("b_token_id"), bindparam("b_successor_id")),
            else_=RefreshToken.successor_id,
        ),
        answer_sealed=case(
            (RefreshToken.id == bindparam("b_token_id"), bindparam("b_sealed")),
            else_=None,
        ),
    )
    .execution_options(synchronize_session=False)
)


def _issue(
    session: Session, settings: Settings, grant_id: int, account_id: int | None, scope: str, *, now: datetime
) -> tuple[dict[str, Any], int | None]:
    """The token response and the new refresh token's id (None for the car's own grant)."""
    access = new_token()
    seconds = access_seconds(settings)
    session.execute(
        _INSERT_ACCESS,
        {
            "token_hash": token_hash(access),
            "grant_id": grant_id,
            "created_at": now,
            "expires_at": now + timedelta(seconds=seconds),
        },
    )
    answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": seconds}
    refresh_id: int | None = None
    if account_id is not None:
        refresh = new_token()
        refresh_id = session.execute(
            _INSERT_REFRESH,
            {
                "grant_id": grant_id,
                "token_hash": token_hash(refresh),
                "created_at": now,
                "expires_at": now + timedelta(days=settings.incar_refresh_token_days),
            },
        ).scalar_one()
        answer["refresh_token"] = refresh
    answer["scope"] = scope
    return answer, refresh_id


def issue(session: Session, settings: Settings, grant: InCarGrant, *, now: datetime) -> dict[str, Any]:
    """A new access token (and, for a user's grant, a refresh token): the RFC 6749 §5.1 answer."""
    answer, _ = _issue(session, settings, grant.id, grant.account_id, grant.scope, now=now)
    return answer


def refresh(
    session: Session, settings: Settings, client: VehicleClient, refresh_token: str, *, now: datetime
) -> dict[str, Any]:
    """Rotates ``refresh_token`` (see the module's text). Raises ``InvalidGrant``; on reuse the grant is
    revoked first, so the caller commits before answering the error."""
    found = session.execute(_FIND_REFRESH, {"token_hash": token_hash(refresh_token)}).first()
    if found is None or found.client_id != client.client_id:
        raise InvalidGrant("The refresh token is unknown.")
    if found.revoked_at is not None or found.expires_at <= now:
        raise InvalidGrant("The refresh token has expired or was revoked.")
    claim: CursorResult[Any] = session.execute(_CLAIM, {"token_id": found.id, "now": now})  # type: ignore[assignment]
    if claim.rowcount == 1:
        answer, successor_id = _issue(
            session, settings, found.grant_id, found.account_id, found.scope, now=now
        )
        sealed = seal_text(settings.secret_key_value(), ANSWER_PURPOSE, json.dumps(answer))
        session.execute(
            _RECORD_ROTATION,
            {
                "b_grant_id": found.grant_id,
                "b_token_id": found.id,
                "b_successor_id": successor_id,
                "b_sealed": sealed,
            },
        )
        return answer
    # Already used: read the winner's row as committed (not the copy loaded above).
    used = session.execute(
        select(RefreshToken.used_at, RefreshToken.successor_id, RefreshToken.answer_sealed).where(
            RefreshToken.id == found.id
        )
    ).one()
    retry = _retried_answer(session, settings, used.used_at, used.successor_id, used.answer_sealed, now=now)
    if retry is not None:
        return retry
    grant = session.get_one(InCarGrant, found.grant_id)
    revoke_grant(session, grant, reason=REUSE, now=now)
    raise InvalidGrant("The refresh token was already used; the grant is revoked.")


def _retried_answer(
    session: Session,
    settings: Settings,
    used_at: datetime | None,
    successor_id: int | None,
    sealed: str | None,
    *,
    now: datetime,
) -> dict[str, Any] | None:
    """The kept answer, when this reuse is a retry within the grace and the successor is unused."""
    if used_at is None or sealed is None or successor_id is None:
        return None
    if now - used_at > timedelta(seconds=settings.incar_refresh_retry_seconds):
        return None
    successor_used = session.scalar(select(RefreshToken.used_at).where(RefreshToken.id == successor_id))
    if successor_used is not None:
        return None
    try:
        answer: dict[str, Any] = json.loads(unseal_text(settings.secret_key_value(), ANSWER_PURPOSE, sealed))
    except (InvalidTag, ValueError):  # sealed under another secret key: treat as no copy
        return None
    return answer


def revoke_grant(
    session: Session, grant: InCarGrant, *, reason: str, now: datetime, actor: str = "system"
) -> bool:
    """Revokes the grant (every token of it stops working at once); False when it already was."""
    done: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(InCarGrant)
        .where(InCarGrant.id == grant.id, InCarGrant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        return False
    grant.revoked_at, grant.revoked_reason = now, reason
    session.execute(delete(AccessToken).where(AccessToken.grant_id == grant.id))
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.grant_id == grant.id, RefreshToken.answer_sealed.is_not(None))
        .values(answer_sealed=None)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        session,
        "incar_grant_revoked",
        now=now,
        account_id=grant.account_id,
        actor=actor,
        grant_id=grant.id,
        client_id=grant.client_id,
        vin=grant.vin,
        reason=reason,
    )
    return True


def revoke_grants(
    session: Session,
    *,
    reason: str,
    now: datetime,
    vin: str | None = None,
    account_id: int | None = None,
    client_id: str | None = None,
    actor: str = "system",
) -> int:
    """Revokes every live grant matching all the given filters (at least one); returns how many."""
    conditions: list[ColumnElement[bool]] = [InCarGrant.revoked_at.is_(None)]
    if vin is not None:
        conditions.append(InCarGrant.vin == vin)
    if account_id is not None:
        conditions.append(InCarGrant.account_id == account_id)
    if client_id is not None:
        conditions.append(InCarGrant.client_id == client_id)
    if len(conditions) == 1:
        raise ValueError("revoke_grants needs a vin, an account_id or a client_id")
    grants = session.scalars(select(InCarGrant).where(and_(*conditions))).all()
    return sum(revoke_grant(session, grant, reason=reason, now=now, actor=actor) for grant in grants)


def access_context(session: Session, token: str, *, now: datetime) -> AccessContext | None:
    """Whom a bearer access token speaks for; None when it is unknown, expired or its grant revoked."""
    row = session.execute(
        select(InCarGrant.id, InCarGrant.client_id, InCarGrant.vin, InCarGrant.account_id, InCarGrant.scope)
        .join(AccessToken, AccessToken.grant_id == InCarGrant.id)
        .where(
            AccessToken.token_hash == token_hash(token),
            AccessToken.expires_at > now,
            InCarGrant.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    return AccessContext(
        grant_id=row.id, client_id=row.client_id, vin=row.vin, account_id=row.account_id, scope=row.scope
    )


def revoke_token(session: Session, client: VehicleClient, token: str, *, now: datetime) -> bool:
    """RFC 7009: ends an access token, or a refresh token's whole grant. Unknown tokens, and tokens of
    another client, are no error (False, nothing changes)."""
    digest = token_hash(token)
    access = session.execute(
        select(AccessToken.token_hash, InCarGrant)
        .join(InCarGrant, InCarGrant.id == AccessToken.grant_id)
        .where(AccessToken.token_hash == digest)
    ).first()
    if access is not None:
        grant = access[1]
        if grant.client_id != client.client_id:
            return False
        session.execute(delete(AccessToken).where(AccessToken.token_hash == digest))
        audit.record(
            session,
            "incar_token_revoked",
            now=now,
            account_id=grant.account_id,
            actor=client.client_id,
            grant_id=grant.id,
            vin=grant.vin,
            revoked="access_token",
        )
        return True
    refresh_grant = session.scalar(
        select(InCarGrant)
        .join(RefreshToken, RefreshToken.grant_id == InCarGrant.id)
        .where(RefreshToken.token_hash == digest)
    )
    if refresh_grant is None or refresh_grant.client_id != client.client_id:
        return False
    return revoke_grant(session, refresh_grant, reason="client_revoked", now=now, actor=client.client_id)


def grant_for_device_login(
    session: Session, authorization: DeviceAuthorization, *, now: datetime
) -> InCarGrant:
    """The user's new grant for an approved (and, where needed, PIN-verified) device login."""
    client = session.get(VehicleClient, authorization.client_id)
    if client is None:  # pragma: no cover - the foreign key holds it
        raise InvalidGrant("The client no longer exists.")
    grant = InCarGrant(
        client_id=client.client_id,
        vin=client.vin,
        account_id=authorization.account_id,
        scope=authorization.scope or "",
        created_at=now,
    )
    session.add(grant)
    session.flush()
    return grant


def client_grant(session: Session, client: VehicleClient, *, now: datetime, scope: str = "") -> InCarGrant:
    """The car's own grant (client_credentials: no user, the anonymous set): the live one, or a new one."""
    grant = session.scalar(
        select(InCarGrant)
        .where(
            InCarGrant.client_id == client.client_id,
            InCarGrant.account_id.is_(None),
            InCarGrant.revoked_at.is_(None),
        )
        .order_by(InCarGrant.id)
        .limit(1)
    )
    if grant is None:
        grant = InCarGrant(
            client_id=client.client_id, vin=client.vin, account_id=None, scope=scope, created_at=now
        )
        session.add(grant)
        session.flush()
    return grant
