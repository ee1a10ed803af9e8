"""One way from a rendered email to the outbox (``notifications.email.outbox_email``), used by the
emails about an ID, the support-request notices and the invitations (and their reminders): each
stores its purpose, reference, recipient, subject and the MIME message of ``build_email``."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select

from notifications.email import RenderedEmail, build_email, outbox_email, parse_email
from notifications.models import OutboxMessage
from notifications.outbox import PAYLOAD_PURPOSE
from onboarding.activation import invitations
from onboarding.activation.models import Invitation, SupportRequest
from onboarding.activation.support_requests import record_request
from onboarding.core.crypto import unseal
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity import account_settings
from tests.account_support import PASSWORD, account, make_account
from tests.conftest import NOW, Database, SmtpServer
from tests.helpers import order_payload, put_order, run_jobs

DAY = timedelta(days=1)
# What differs between two builds of one email: the MIME boundary, the Message-ID and the Date.
_VARYING = (
    (re.compile(rb"=_[0-9a-f]{32}"), b"=_BOUNDARY"),
    (re.compile(rb"Message-ID: <[^>]+>"), b"Message-ID: <ID>"),
    (re.compile(rb"Date: [^\r]+"), b"Date: DATE"),
)


def _fixed(payload: bytes) -> bytes:
    for pattern, replacement in _VARYING:
        payload = pattern.sub(replacement, payload)
    return payload


def _stored(db: Database, settings: Settings, **where: object) -> list[tuple[OutboxMessage, EmailMessage]]:
    """The outbox rows matching ``where``, oldest first, each with its payload opened and parsed."""
    with db.factory() as session:
        rows = list(session.scalars(select(OutboxMessage).filter_by(**where).order_by(OutboxMessage.id)))
    found = []
    for row in rows:
        assert row.payload is not None, "sent already: the payload is erased"
        found.append((row, parse_email(unseal(settings.secret_key_value(), PAYLOAD_PURPOSE, row.payload))))
    return found


def _headers_agree(row: OutboxMessage, message: EmailMessage, *, to: str, language: str) -> None:
    assert row.channel == "email"
    assert row.recipient == to and message["To"] == to
    assert row.subject and message["Subject"] == row.subject
    assert message["Content-Language"] == language
    assert message.get_content_type() == "multipart/alternative"


def test_outbox_email_is_build_email_with_the_outbox_fields(settings: Settings) -> None:
    rendered = RenderedEmail(subject="Grüße aus Göteborg", text="Hej Astrid\n", html="<p>Hej Astrid</p>\n")
    message = outbox_email(
        settings, rendered, to="astrid@example.com", language="sv", purpose="test_purpose", reference_id=7
    )
    assert (message.channel, message.purpose, message.recipient, message.subject, message.reference_id) == (
        "email",
        "test_purpose",
        "astrid@example.com",
        "Grüße aus Göteborg",
        7,
    )
    assert message.not_before is None
    built = build_email(settings, to="astrid@example.com", rendered=rendered, language="sv")
    assert _fixed(message.payload) == _fixed(built)
    assert (
        outbox_email(settings, rendered, to="a@example.com", language="en", purpose="p").reference_id is None
    )


def test_account_emails_are_stored_for_their_reader_and_address(db: Database, settings: Settings) -> None:
    """An email change writes two account emails: the link to the new address (``to``) and the notice
    to the current one, both in the reader's language and with no reference."""
    make_account(db.factory, settings, NOW, language="de")
    with transaction(db.factory) as session:
        reader = account(db.factory)
        session.add(reader)
        account_settings.request_email_change(
            session, settings, reader, new_email="Astrid.New@Example.com", password=PASSWORD, now=NOW
        )
    [(confirm, confirm_mail)] = _stored(db, settings, purpose="email_change_confirm")
    _headers_agree(confirm, confirm_mail, to="astrid.new@example.com", language="de")
    assert confirm.reference_id is None
    assert "/account/email/confirm/" in confirm_mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    [(notice, notice_mail)] = _stored(db, settings, purpose="email_change_notice")
    _headers_agree(notice, notice_mail, to="astrid@example.com", language="de")
    assert notice.reference_id is None
    assert confirm.subject != notice.subject


def test_support_request_notice_is_stored_for_the_country_mailbox(db: Database, settings: Settings) -> None:
    with transaction(db.factory) as session:
        request = record_request(
            session, settings, kind="new_invitation", now=NOW, country="NO", contact_email="lost@example.com"
        )
        request_id = request.id
    with db.factory() as session:
        routed_to = session.get_one(SupportRequest, request_id).routed_to
    assert routed_to == "smartmobility@no.nordlicht-motors.example"
    [(row, message)] = _stored(db, settings, purpose="support_request")
    _headers_agree(row, message, to=routed_to, language="en")
    assert row.reference_id == request_id
    assert row.state == "pending"


def test_invitation_and_reminder_are_stored_for_the_buyer(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    """The scheduler's invitation, and its reminder a week later: both name the invitation and reach
    the buyer in the order's language, with the stored subject."""
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    assert run_jobs(db.factory, smtp_settings, NOW).invited == 1
    assert run_jobs(db.factory, smtp_settings, NOW + 8 * DAY).reminded == 1
    with db.factory() as session:
        invitation_id = session.scalars(select(Invitation.id)).one()
        rows = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    assert [(r.channel, r.purpose, r.recipient, r.reference_id, r.state) for r in rows] == [
        ("email", invitations.PURPOSE_INVITATION, "astrid@example.com", invitation_id, "sent"),
        ("email", invitations.PURPOSE_REMINDER, "astrid@example.com", invitation_id, "sent"),
    ]
    sent = smtp.mailbox.to("astrid@example.com")
    assert [m["Subject"] for m in sent] == [r.subject for r in rows]
    assert [m["Content-Language"] for m in sent] == ["sv", "sv"]
