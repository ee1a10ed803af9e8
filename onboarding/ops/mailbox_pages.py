"""The development mailbox and SMS outbox: what would have been sent, when no SMTP server (or no SMS
gateway) is configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications.models import DevMailboxMessage
from onboarding.web.app_state import settings_of
from onboarding.web.rendering import render
from onboarding.web.transactions import db_session

router = APIRouter(prefix="/dev", include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]


def _enabled(request: Request) -> None:
    if not settings_of(request).dev_mailbox_enabled:
        raise HTTPException(404, "Not found")


def _sms_enabled(request: Request) -> None:
    if settings_of(request).sms_backend != "dev":
        raise HTTPException(404, "Not found")


def _listing(session: Session, channel: str, to: str) -> list[DevMailboxMessage]:
    query = (
        select(DevMailboxMessage)
        .where(DevMailboxMessage.channel == channel)
        .order_by(DevMailboxMessage.id.desc())
        .limit(200)
    )
    if to:
        query = query.where(DevMailboxMessage.recipient == to.strip().lower())
    return list(session.scalars(query))


@router.get("/mailbox", dependencies=[Depends(_enabled)])
def mailbox(request: Request, session: Db, to: str = "") -> Response:
    messages = _listing(session, "email", to)
    return render(request, "ops/mailbox.html", {"messages": messages, "to": to})


@router.get("/sms", dependencies=[Depends(_sms_enabled)])
def sms_outbox(request: Request, session: Db, to: str = "") -> Response:
    """Text messages in full: a code is read here in a local run."""
    messages = _listing(session, "sms", to)
    return render(request, "ops/sms.html", {"messages": messages, "to": to})


@router.get("/mailbox/{message_id}", dependencies=[Depends(_enabled)])
def message(
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)],  # a row id: larger is none (and no overflow)
    request: Request,
    session: Db,
) -> Response:
    found = session.get(DevMailboxMessage, message_id)
    if found is None:
        raise HTTPException(404, "No such message")
    return render(request, "ops/message.html", {"message": found})
