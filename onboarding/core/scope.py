"""Scope: which markets (and, for a dealer's staff, which dealers) a caller may touch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """Which markets a caller may touch; ``countries=None`` means all of them. ``dealers`` narrows it
    to some dealers' orders (a dealer's staff); None means any dealer."""

    countries: frozenset[str] | None = None
    dealers: frozenset[str] | None = None

    def allows(self, country: str) -> bool:
        return self.countries is None or country in self.countries

    def allows_dealer(self, dealer_code: str) -> bool:
        return self.dealers is None or dealer_code in self.dealers


ALL_MARKETS = Scope()
