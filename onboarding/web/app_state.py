"""What the app holds for every request: its settings, and who the client is."""

from __future__ import annotations

from fastapi import Request

from onboarding.core.settings import Settings


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_ip(request: Request) -> str:
    """The caller's address; the last X-Forwarded-For hop only when told a proxy sets it."""
    if settings_of(request).trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return request.client.host if request.client else "unknown"
