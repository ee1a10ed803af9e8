"""The senders per channel, and sending a request's messages right after its commit.

A code or link someone is waiting for should not wait for the next scheduler pass: such messages
are written to the outbox already claimed by the request (``enqueue_now``) and sent by a background
task after the commit. Should that fail or the process die, the outbox retries them like any other
message once the short lease runs out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox
from notifications.email import email_sender
from notifications.sms import sms_sender
from onboarding.core.settings import Settings

SEND_NOW_KEY = "outbox.send_now"
SEND_NOW_LEASE = timedelta(seconds=60)


# Senders of channels owned by upper layers (the OCPI token push registers "ocpi"): they register a
# factory here, as this package may not import them.
channel_senders: dict[str, Callable[[Settings, sessionmaker[Session]], outbox.Sender]] = {}


def default_senders(settings: Settings, factory: sessionmaker[Session]) -> dict[str, outbox.Sender]:
    senders: dict[str, outbox.Sender] = {
        "email": email_sender(settings, factory),
        "sms": sms_sender(settings, factory),
    }
    for channel, make in channel_senders.items():
        senders[channel] = make(settings, factory)
    return senders


def enqueue_now(session: Session, message: outbox.NewMessage, *, settings: Settings, now: datetime) -> None:
    """Write ``message`` claimed by this request; ``send_after_commit`` sends it once committed."""
    claimed = outbox.enqueue_many(
        session, [message], secret=settings.secret_key_value(), now=now, claim_lease=SEND_NOW_LEASE
    )
    session.info.setdefault(SEND_NOW_KEY, []).extend(claimed)


def take_claimed(session: Session) -> list[outbox.ClaimedMessage]:
    claimed: list[outbox.ClaimedMessage] = session.info.pop(SEND_NOW_KEY, [])
    return claimed


async def send_claimed(
    factory: sessionmaker[Session],
    settings: Settings,
    claimed: list[outbox.ClaimedMessage],
    senders: Mapping[str, outbox.Sender] | None = None,
    hooks: Mapping[str, outbox.DeliveryHook] | None = None,
    failure_hooks: Mapping[str, outbox.FailureHook] | None = None,
) -> outbox.DrainReport:
    senders = senders if senders is not None else default_senders(settings, factory)

    async def one_batch() -> AsyncGenerator[list[outbox.ClaimedMessage], None]:
        yield claimed

    try:
        return await outbox.deliver_batches(
            factory,
            senders,
            one_batch(),
            max_attempts=settings.outbox_max_attempts,
            hooks=hooks,
            failure_hooks=failure_hooks,
            unrecorded_limit=settings.unrecorded_limit,
            lease=SEND_NOW_LEASE,
        )
    finally:
        for sender in senders.values():
            await sender.close()
