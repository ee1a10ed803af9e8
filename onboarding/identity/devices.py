"""Signed-in devices as a person recognises them: the browser and system named from the session's
user-agent string (parsed with ``ua-parser``, the maintained port of uap-core's rules), and when the
device was last used."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from babel.dates import format_timedelta
from ua_parser import parse

from onboarding.core.i18n import current_language, gettext_
from onboarding.identity.models import WebSession

# Stored user agents are cut at 300 characters (web_sessions); parsing no more than that bounds the work.
_PARSED_CHARS = 300


@dataclass(frozen=True)
class Software:
    """A browser or a system: its name and version as the parser found them (None when unknown)."""

    name: str | None
    version: str | None

    def __str__(self) -> str:
        if self.name is None:
            return ""
        return f"{self.name} {self.version}" if self.version else self.name


@lru_cache(maxsize=1024)
def describe(user_agent: str | None) -> tuple[Software, Software]:
    """(browser, system) of a user-agent string; names are None for what the parser does not know."""
    result = parse((user_agent or "")[:_PARSED_CHARS])
    browser = Software(None, None)
    system = Software(None, None)
    if result.user_agent is not None and result.user_agent.family != "Other":
        browser = Software(result.user_agent.family, result.user_agent.major)
    if result.os is not None and result.os.family != "Other":
        version = ".".join(v for v in (result.os.major, result.os.minor) if v) or None
        system = Software(result.os.family, version)
    return browser, system


@dataclass(frozen=True)
class LastUsed:
    """ "5 minutes ago", in the language of the page that prints it (rendered late, like ``Text``)."""

    ago: timedelta

    def __str__(self) -> str:
        if self.ago < timedelta(minutes=1):
            return gettext_("just now")
        return format_timedelta(
            -self.ago, granularity="minute", add_direction=True, locale=current_language()
        )


@dataclass(frozen=True)
class Device:
    """What the security page shows about one live session."""

    id: int
    browser: Software
    system: Software
    last_used: LastUsed


def devices(sessions: list[WebSession], *, now: datetime) -> list[Device]:
    """The live sessions (``web_sessions.live_sessions``) as devices, most recently used first."""
    shown = []
    for row in sessions:
        browser, system = describe(row.user_agent)
        shown.append(Device(row.id, browser, system, LastUsed(max(timedelta(0), now - row.last_seen_at))))
    return shown
