"""The current time, in one place, so scheduled rules can be tested by moving the clock."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
