"""Card (token) change notification: who must hear that charging cards changed.

Card services call `tokens_changed` after every change to a card; subscribers (the OCPI token push)
register themselves in `on_tokens_changed` so this module needs no knowledge of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

on_tokens_changed: list[Callable[[Session, list[int], datetime], None]] = []


def tokens_changed(session: Session, card_ids: list[int], *, now: datetime) -> None:
    """Tell every subscriber that these cards changed (inside the caller's transaction)."""
    if not card_ids:
        return
    for subscriber in list(on_tokens_changed):
        subscriber(session, list(card_ids), now)
