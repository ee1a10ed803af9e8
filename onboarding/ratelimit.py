"""Rate limits with the ``limits`` library: in memory for one instance, in Redis when
``ONBOARDING_REDIS_URL`` is set, so that several instances count together.

A limit is a ``limits`` string such as ``"10/minute;60/hour"``; every part must hold. Keys are
hashed so no email address or IP ends up in Redis in clear."""

from __future__ import annotations

import hashlib

from limits import parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from onboarding.settings import Settings


class RateLimits:
    def __init__(self, storage: Storage, namespace: str = "onboarding") -> None:
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        if settings.redis_url:
            return cls(storage_from_string(settings.redis_url), settings.rate_limit_namespace)  # type: ignore[arg-type]
        return cls(MemoryStorage(), settings.rate_limit_namespace)

    def _key(self, scope: str, subject: str) -> tuple[str, str]:
        digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:32]
        return self.namespace, f"{scope}:{digest}"

    def hit(self, limit: str, scope: str, subject: str) -> bool:
        """Count one attempt; False when any window of ``limit`` is already full."""
        items = parse_many(limit)
        key = self._key(scope, subject)
        if not all(self.limiter.test(item, *key) for item in items):
            return False
        return all([self.limiter.hit(item, *key) for item in items])

    def allows(self, limit: str, scope: str, subject: str) -> bool:
        """Whether another attempt would be allowed, without counting one."""
        key = self._key(scope, subject)
        return all(self.limiter.test(item, *key) for item in parse_many(limit))
