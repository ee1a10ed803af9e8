"""SMS: the development outbox (``/dev/sms``) and the HTTP JSON gateway of SPEC §4.

Both are outbox senders: a message is written in the transaction that needs it and delivered with
the outbox's retries. The gateway gets ``POST {ONBOARDING_SMS_HTTP_URL}`` with
``{"to": E.164, "body": text, "reference": outbox id}``; any 2xx is accepted, anything else (or no
answer) is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from sqlalchemy.orm import Session, sessionmaker

from notifications.models import DevMailboxMessage
from notifications.outbox import ClaimedMessage, LeaseLost, Outcomes, Undeliverable
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings


class DevSmsSender:
    """Keeps each SMS in the development outbox; nothing leaves the machine."""

    channel = "sms"

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        now = utcnow()
        kept: list[ClaimedMessage] = []
        with transaction(self.factory) as session:  # one transaction: nothing to admit
            for m in messages:
                try:
                    text = m.payload.decode()
                except UnicodeDecodeError as exc:
                    outcomes.report(m, Undeliverable(f"not UTF-8 text: {exc}"))
                    continue
                session.add(
                    DevMailboxMessage(
                        outbox_id=m.id,
                        channel="sms",
                        recipient=m.recipient,
                        subject=None,
                        text_body=text,
                        html_body=None,
                        created_at=now,
                    )
                )
                kept.append(m)
        for m in kept:
            outcomes.report(m, None)

    async def close(self) -> None:
        return None


class HttpSmsSender:
    """Posts each SMS to the configured gateway, a few at a time, over one kept-alive client."""

    channel = "sms"

    def __init__(self, settings: Settings) -> None:
        if not settings.sms_http_url:
            raise ValueError("ONBOARDING_SMS_HTTP_URL is required with ONBOARDING_SMS_BACKEND=http")
        self.url = settings.sms_http_url
        self.client = httpx.AsyncClient(timeout=settings.sms_http_timeout_seconds)
        self.gate = asyncio.Semaphore(8)

    async def _post(self, message: ClaimedMessage, outcomes: Outcomes) -> None:
        try:
            text = message.payload.decode()
        except UnicodeDecodeError as exc:
            outcomes.report(message, Undeliverable(f"not UTF-8 text: {exc}"))
            return
        body = {"to": message.recipient, "body": text, "reference": str(message.id)}
        async with self.gate:
            try:
                await outcomes.admit(message)
            except LeaseLost:
                return  # another process sends it, or a later pass: nothing to report
            try:
                response = await self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                outcomes.report(message, f"{type(exc).__name__}: {exc}")
                return
        if 200 <= response.status_code < 300:
            outcomes.report(message, None)
        else:
            outcomes.report(message, f"gateway answered HTTP {response.status_code}")

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        await asyncio.gather(*(self._post(m, outcomes) for m in messages))

    async def close(self) -> None:
        await self.client.aclose()


def sms_sender(settings: Settings, factory: sessionmaker[Session]) -> DevSmsSender | HttpSmsSender:
    if settings.sms_backend == "http":
        return HttpSmsSender(settings)
    if settings.sms_backend != "dev":
        raise ValueError(f"unknown ONBOARDING_SMS_BACKEND {settings.sms_backend!r} (dev or http)")
    return DevSmsSender(factory)
