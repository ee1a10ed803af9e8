"""Rate limits with the ``limits`` library: in memory for one instance, in Redis when
``ONBOARDING_REDIS_URL`` is set, so that several instances count together.

A limit is a ``limits`` string such as ``"10/minute;60/hour"``; every part must hold. Keys are
hashed so no email address or IP ends up in Redis in clear."""

from __future__ import annotations

import hashlib
import threading
import time
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings

TOO_MANY_ATTEMPTS = N_("Too many attempts. Wait a few minutes and try again.")


class TooManyAttempts(ValidationFailed):
    """A form used more often than its limits allow; the message is shown at ``field``."""

    def __init__(self, field: str) -> None:
        super().__init__([FieldError(field, TOO_MANY_ATTEMPTS, "rate_limited")])


def refusal_status(exc: ValidationFailed) -> int:
    """The status of a form shown again with ``exc``'s errors: 429 when a rate limit refused it
    (``TooManyAttempts``), else 422."""
    return 429 if isinstance(exc, TooManyAttempts) else 422


@lru_cache(maxsize=64)
def _items(limit: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit))


class SweptMemoryStorage(MemoryStorage):
    """``limits``' memory storage, sweeping expired entries inline at most once a second.

    The library's own sweeps run on a ``threading.Timer`` that it starts 10 ms after a hit whenever
    none is alive: under steady traffic that is a new thread for nearly every hit (measured: about
    one per login). Windows are judged on timestamps either way; the sweep only frees memory."""

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = 0.0
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the library's private timer start
        now = time.monotonic()
        if now < self._next_sweep or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        finally:
            self._sweeping.release()


class RateLimits:
    def __init__(self, storage: Storage, namespace: str = "onboarding") -> None:
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        if settings.redis_url:
            return cls(storage_from_string(settings.redis_url), settings.rate_limit_namespace)  # type: ignore[arg-type]
        return cls(SweptMemoryStorage(), settings.rate_limit_namespace)

    def _key(self, scope: str, subject: str) -> tuple[str, str]:
        digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:32]
        return self.namespace, f"{scope}:{digest}"

    def hit(self, limit: str, scope: str, subject: str) -> bool:
        """Count one attempt; False when any window of ``limit`` is already full."""
        items = _items(limit)
        key = self._key(scope, subject)
        if len(items) == 1:  # a hit on a full window is refused without being counted
            return self.limiter.hit(items[0], *key)
        # Several windows: count in none of them unless all have room.
        if not all(self.limiter.test(item, *key) for item in items):
            return False
        return all([self.limiter.hit(item, *key) for item in items])

    def allows(self, limit: str, scope: str, subject: str) -> bool:
        """Whether another attempt would be allowed, without counting one."""
        key = self._key(scope, subject)
        return all(self.limiter.test(item, *key) for item in _items(limit))

    def hit_all(self, *checks: tuple[str, str, str | None]) -> bool:
        """Count one attempt against each ``(limit, scope, subject)`` in turn; False at the first that
        is full (those after it are not counted). A missing subject (no client address) counts as one
        shared subject."""
        return all(self.hit(limit, scope, subject or "-") for limit, scope, subject in checks)

    def require(self, field: str, *checks: tuple[str, str, str | None]) -> None:
        """``hit_all``, raising ``TooManyAttempts`` (shown at ``field``) when a limit is reached."""
        if not self.hit_all(*checks):
            raise TooManyAttempts(field)
