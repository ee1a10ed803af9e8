"""Emails about an ID (verification links, reset links, notices), in the reader's language, written
to the outbox and sent right after the request commits.

One pair of templates (``account_message.txt/html``) serves them all: the texts are catalogue
entries translated here, so each message is a subject, paragraphs and an optional link."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from notifications.email import RenderedEmail, outbox_email, render_email
from notifications.senders import enqueue_now
from notifications.support import contact_for
from onboarding.core.branding import brand
from onboarding.core.i18n import Text, use_language
from onboarding.core.settings import Settings
from onboarding.identity.models import Account


@dataclass(frozen=True)
class AccountEmail:
    """What an email about an ID says, before it is rendered in its reader's language."""

    subject: Text
    paragraphs: list[Text] = field(default_factory=list)
    link: str | None = None
    link_label: Text | None = None
    # "If you did not ask for this, you can ignore this email": not under a notice of something done
    # to the ID (a changed password) that its reader must act on if it was not them.
    ignorable: bool = True


def render_account_email(settings: Settings, reader: Account | None, email: AccountEmail) -> RenderedEmail:
    """``email`` in the reader's language, greeting them by name; with no reader (an address that
    has no ID), in the default language."""
    language = reader.language if reader else settings.default_language
    with use_language(language):
        context = {
            "brand": brand(settings),
            "support": contact_for(settings, reader.country if reader else None, None),
            "first_name": reader.first_name if reader else None,
            "subject_line": str(email.subject),
            "paragraphs": [str(p) for p in email.paragraphs],
            "link": email.link,
            "link_label": str(email.link_label) if email.link_label else None,
            "ignorable": email.ignorable,
        }
    return render_email("account_message", language, context)


def send_account_email(
    session: Session,
    settings: Settings,
    reader: Account,
    rendered: RenderedEmail,
    *,
    purpose: str,
    now: datetime,
    to: str | None = None,
) -> None:
    """Sends what ``render_account_email`` rendered for ``reader``, to their address or to ``to``."""
    address = to or reader.email
    enqueue_now(
        session,
        outbox_email(settings, rendered, to=address, language=reader.language, purpose=purpose),
        settings=settings,
        now=now,
    )


def email_account(
    session: Session,
    settings: Settings,
    reader: Account,
    email: AccountEmail,
    *,
    purpose: str,
    now: datetime,
    to: str | None = None,
) -> None:
    """Render ``email`` for ``reader`` and send it (to their address, or to ``to``)."""
    rendered = render_account_email(settings, reader, email)
    send_account_email(session, settings, reader, rendered, purpose=purpose, now=now, to=to)
