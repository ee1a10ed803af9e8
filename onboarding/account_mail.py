"""Emails about an ID (verification links, reset links, notices), in the person's language, written
to the outbox and sent right after the request commits.

One pair of templates (``account_message.txt/html``) serves them all: the texts are catalogue
entries translated here, so each message is a subject, paragraphs and an optional link."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import RenderedEmail, build_email, render_email
from notifications.senders import enqueue_now
from onboarding.i18n import Text, use_language
from onboarding.invitations import brand, contact_for
from onboarding.settings import Settings


def render_account_email(
    settings: Settings,
    *,
    language: str,
    country: str | None,
    first_name: str | None,
    subject: Text,
    paragraphs: list[Text],
    link: str | None = None,
    link_label: Text | None = None,
) -> RenderedEmail:
    with use_language(language):
        context = {
            "brand": brand(settings),
            "support": contact_for(settings, country, None),
            "first_name": first_name,
            "subject_line": str(subject),
            "paragraphs": [str(p) for p in paragraphs],
            "link": link,
            "link_label": str(link_label) if link_label else None,
        }
    return render_email("account_message", language, context)


def send_account_email(
    session: Session,
    settings: Settings,
    *,
    to: str,
    purpose: str,
    now: datetime,
    reference_id: int | None,
    rendered: RenderedEmail,
    language: str,
) -> None:
    enqueue_now(
        session,
        outbox.NewMessage(
            channel="email",
            purpose=purpose,
            recipient=to,
            payload=build_email(settings, to=to, rendered=rendered, language=language),
            subject=rendered.subject,
            reference_id=reference_id,
        ),
        settings=settings,
        now=now,
    )
