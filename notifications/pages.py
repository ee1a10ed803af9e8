"""The development mailbox: what would have been sent, when no SMTP server is configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications.models import DevMailboxMessage
from onboarding.web import db_session, render, settings_of

router = APIRouter(prefix="/dev/mailbox", include_in_schema=False)
Db = Annotated[Session, Depends(db_session)]


def _enabled(request: Request) -> None:
    if not settings_of(request).dev_mailbox_enabled:
        raise HTTPException(404, "Not found")


@router.get("", dependencies=[Depends(_enabled)])
def mailbox(request: Request, session: Db, to: str = "") -> Response:
    query = select(DevMailboxMessage).order_by(DevMailboxMessage.id.desc()).limit(200)
    if to:
        query = query.where(DevMailboxMessage.recipient == to.strip().lower())
    messages = list(session.scalars(query))
    return render(request, "dev/mailbox.html", {"messages": messages, "to": to})


@router.get("/{message_id}", dependencies=[Depends(_enabled)])
def message(message_id: int, request: Request, session: Db) -> Response:
    found = session.get(DevMailboxMessage, message_id)
    if found is None:
        raise HTTPException(404, "No such message")
    return render(request, "dev/message.html", {"message": found})
