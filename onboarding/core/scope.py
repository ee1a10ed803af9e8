"""Market scope: which countries a caller (an API key, later a staff member) may touch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """Which markets a caller may touch; ``countries=None`` means all of them."""

    countries: frozenset[str] | None = None

    def allows(self, country: str) -> bool:
        return self.countries is None or country in self.countries


ALL_MARKETS = Scope()
