"""The brand the product is white-labelled for, as templates use it."""

from __future__ import annotations

from onboarding.core.settings import Settings


def brand(settings: Settings) -> dict[str, str]:
    return {"name": settings.brand_name, "colour": settings.brand_primary_colour}
