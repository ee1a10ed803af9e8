"""Helpers for account-security tests: IDs made directly, links and codes read from the development
mailbox and SMS outbox."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from notifications.models import DevMailboxMessage
from notifications.senders import send_claimed, take_claimed
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.accounts import NewAccount, create_account
from onboarding.identity.models import Account
from tests.helpers import ID_PASSWORD, csrf

T = TypeVar("T")

PASSWORD = ID_PASSWORD
NEW_PASSWORD = "quiet-meadow-lantern-77"
PHONE = "+46701234567"
BIRTH = date(1985, 4, 12)


def make_account(
    factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    *,
    email: str = "astrid@example.com",
    verified: bool = True,
    phone_verified: bool = False,
    language: str = "en",
) -> int:
    with transaction(factory) as session:
        account = create_account(
            session,
            NewAccount(
                email=email,
                password=PASSWORD,
                password_confirmation=PASSWORD,
                first_name="Astrid",
                last_name="Lindqvist",
                birth_date=BIRTH,
                country="SE",
                language=language,
                accept_terms=True,
                accept_privacy=True,
                phone=PHONE,
            ),
            settings=settings,
            now=now,
            via="test",
            email_verified=verified,
        )
        if phone_verified:
            account.phone_verified_at = now
        return account.id


def account(factory: sessionmaker[Session], email: str = "astrid@example.com") -> Account:
    with factory() as session:
        found = session.scalar(select(Account).where(Account.email == email))
        assert found is not None
        return found


def emails_to(factory: sessionmaker[Session], address: str) -> list[DevMailboxMessage]:
    with factory() as session:
        return list(
            session.scalars(
                select(DevMailboxMessage)
                .where(DevMailboxMessage.channel == "email", DevMailboxMessage.recipient == address)
                .order_by(DevMailboxMessage.id)
            )
        )


def link_to(factory: sessionmaker[Session], address: str, path: str) -> str:
    """The path of the newest link under ``path`` emailed to ``address``."""
    pattern = re.compile(r"https?://[^/\s]+(" + re.escape(path) + r"[A-Za-z0-9_\-]+)")
    for message in reversed(emails_to(factory, address)):
        found = pattern.search(message.text_body)
        if found:
            return found.group(1)
    raise AssertionError(f"no {path} link emailed to {address}")


def log_in(client: Any, email: str = "astrid@example.com", password: str = PASSWORD, **extra: str) -> Any:
    return client.post(
        "/login", data={**csrf(client), "email": email, "password": password, **extra}, follow_redirects=False
    )


def run_and_send(factory: sessionmaker[Session], settings: Settings, work: Callable[[Session], T]) -> T:
    """Run a service call in one transaction, then send what it wrote for immediate sending, as a
    request does after its commit."""
    with transaction(factory) as session:
        result = work(session)
        claimed = take_claimed(session)
    asyncio.run(send_claimed(factory, settings, claimed))
    return result
