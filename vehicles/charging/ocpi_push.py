"""The OCPI token push (mod_tokens Receiver interface, PUT): every changed card is PUT as a Token to
every live operator with a Tokens endpoint, through the outbox (channel "ocpi"), so that a blocked
card stops working everywhere without waiting for the operator's next pull. A 2xx answer is
delivered; anything else is retried with the outbox's back-off.

The outbox message holds the request: its recipient is the full URL, its payload (sealed at rest by
the outbox, erased once sent) the operator's credentials token and the Token JSON. The operator's
token is read when the message is queued (from ``OcpiParty.their_token_sealed``)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.outbox import ClaimedMessage, LeaseLost, Outcomes, Undeliverable
from notifications.senders import channel_senders
from onboarding.core.crypto import unseal_text
from onboarding.core.settings import Settings, get_settings
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging.changes import on_tokens_changed
from vehicles.charging.models import OcpiParty

CHANNEL = "ocpi"
PURPOSE = "ocpi_token_put"
TIMEOUT_SECONDS = 10.0


def token_put_url(tokens_url: str, token: ocpi.Token) -> str:
    base = tokens_url if tokens_url.endswith("/") else tokens_url + "/"
    return f"{base}{token.country_code}/{token.party_id}/{token.uid}?type={token.type.value}"


def push_tokens(session: Session, card_ids: list[int], now: datetime, *, settings: Settings) -> int:
    """Queue one PUT per changed card and live party with a Tokens endpoint (in the caller's
    transaction); returns how many were queued."""
    parties = session.scalars(
        select(OcpiParty).where(OcpiParty.revoked_at.is_(None), OcpiParty.tokens_url.is_not(None))
    ).all()
    if not parties:
        return 0
    secret = settings.secret_key_value()
    tokens = ocpi.tokens_for_cards(session, settings, card_ids)
    messages = []
    for party in parties:
        assert party.tokens_url is not None
        their_token = (
            unseal_text(secret, ocpi.THEIR_TOKEN_PURPOSE, party.their_token_sealed)
            if party.their_token_sealed
            else ""
        )
        for token in tokens:
            payload = {"credentials": their_token, "token": token.model_dump(mode="json")}
            messages.append(
                outbox.NewMessage(
                    channel=CHANNEL,
                    purpose=PURPOSE,
                    recipient=token_put_url(party.tokens_url, token),
                    payload=json.dumps(payload).encode(),
                    reference_id=party.id,
                )
            )
    outbox.enqueue_many(session, messages, secret=secret, now=now)
    return len(messages)


class OcpiTokenSender:
    """PUTs each queued Token to its operator, a few at a time, over one kept-alive client."""

    channel = CHANNEL

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
        self.gate = asyncio.Semaphore(8)

    async def _put(self, message: ClaimedMessage, outcomes: Outcomes) -> None:
        try:
            payload = json.loads(message.payload)
            credentials = str(payload["credentials"])
            body = payload["token"]
        except (ValueError, KeyError, TypeError) as exc:
            outcomes.report(message, Undeliverable(f"unreadable payload: {type(exc).__name__}"))
            return
        headers = {"Content-Type": "application/json"}
        if credentials:
            headers["Authorization"] = "Token " + base64.b64encode(credentials.encode()).decode()
        async with self.gate:
            try:
                await outcomes.admit(message)
            except LeaseLost:
                return
            try:
                response = await self.client.put(message.recipient, json=body, headers=headers)
            except httpx.HTTPError as exc:
                outcomes.report(message, f"{type(exc).__name__}: {exc}")
                return
        if 200 <= response.status_code < 300:
            outcomes.report(message, None)
        else:
            outcomes.report(message, f"operator answered HTTP {response.status_code}")

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        await asyncio.gather(*(self._put(m, outcomes) for m in messages))

    async def close(self) -> None:
        await self.client.aclose()


class _Subscriber:
    """The ``on_tokens_changed`` subscriber; it needs the settings (country, party id, secret), which
    ``install`` gives it when the application or scheduler starts."""

    settings: Settings | None = None

    def __call__(self, session: Session, card_ids: list[int], now: datetime) -> None:
        push_tokens(session, card_ids, now, settings=self.settings or get_settings())


subscriber = _Subscriber()
# Subscribed on import (with the process's settings) so that no card change goes unpushed; the app
# factory and scheduler should call ``install(settings)`` with theirs.
on_tokens_changed.append(subscriber)
channel_senders[CHANNEL] = lambda settings, factory: OcpiTokenSender()


def install(settings: Settings) -> None:
    """Subscribe the push and register the "ocpi" channel's sender (idempotent)."""
    subscriber.settings = settings
    if subscriber not in on_tokens_changed:
        on_tokens_changed.append(subscriber)
