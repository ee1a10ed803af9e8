"""The transactional outbox: enqueue in the caller's transaction, claim, deliver, record.

Claims are rows: a conditional UPDATE moves a message from ``pending`` to ``sending`` with a lease,
so any number of processes may drain at once and none sends a message another has claimed. On
PostgreSQL the candidates are first picked with ``FOR UPDATE SKIP LOCKED`` so drainers do not queue
behind each other. A claim whose process died is taken over when its lease runs out; a living
process renews the leases of the claims it still holds (``leases_kept``), so leases can be short.

A claim is identified by its attempt count, which fences off a process that stalled past its lease
while another took the message over: its outcomes are stored only for rows whose attempt count is
still that of its claim, and it sends a message only while it is sure of the lease (``Held``: not
taken over, and secured recently enough that it cannot have run out), so the message goes out once,
from the process that holds it now.

Each message's outcome is stored as soon as the sender knows it, in small groups by a background
recorder, and a sender waits before sending another message while ``unrecorded_limit`` messages
are being sent or sent but not stored: that bound is what a crash can send twice. A message that
can never be delivered as it stands (``Undeliverable``) is dead at once, and the owner of its
purpose hears of it (``FailureHook``); one bad message never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, cast

import structlog
from sqlalchemy import ColumnElement, Table, and_, insert, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from notifications.models import OutboxMessage
from onboarding.core.clock import utcnow
from onboarding.core.crypto import seal, unseal
from onboarding.core.db import transaction

log = structlog.get_logger(__name__)

PAYLOAD_PURPOSE = "outbox-payload"

PENDING, SENDING, SENT, DEAD, CANCELLED = "pending", "sending", "sent", "dead", "cancelled"

# What happens, in the same transaction as recording delivery, when messages of one purpose have
# been delivered: called with their reference ids. Lets the owner of a message (invitations, ...)
# react to delivery without this module knowing it.
DeliveryHook = Callable[[Session, list[int], datetime], None]
# The same when messages of one purpose are given up (dead): called with (reference id, reason)
# pairs, so that the owner can show staff why (the order timeline, ...).
FailureHook = Callable[[Session, list[tuple[int, str]], datetime], None]


class Undeliverable(str):
    """An error text for a message that no retry can deliver as it stands (an address the mail
    server cannot take, a payload that cannot be read): the message is dead at once, not retried."""


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    channel: str
    purpose: str
    reference_id: int | None
    recipient: str
    payload: bytes
    attempts: int


@dataclass(frozen=True)
class NewMessage:
    channel: str
    purpose: str
    recipient: str
    payload: bytes
    subject: str | None = None
    reference_id: int | None = None
    not_before: datetime | None = None


_OUTBOX = cast(Table, OutboxMessage.__table__)


def enqueue_many(
    session: Session,
    messages: Sequence[NewMessage],
    *,
    secret: str,
    now: datetime,
    claim_lease: timedelta | None = None,
) -> list[ClaimedMessage]:
    """Write messages into the outbox in the caller's transaction (one multi-row INSERT).

    With ``claim_lease`` they are written already claimed by the caller, who sends them from memory
    (no read-back) and records the outcome like any claim; should it die first, the lease runs out
    and another process sends them from the stored copy. Such messages need distinct reference ids.
    Returns the claimed messages (none without ``claim_lease``)."""
    if not messages:
        return []
    claimed = claim_lease is not None
    rows = [
        {
            "channel": m.channel,
            "purpose": m.purpose,
            "reference_id": m.reference_id,
            "recipient": m.recipient,
            "subject": m.subject,
            "payload": seal(secret, PAYLOAD_PURPOSE, m.payload),
            "state": SENDING if claimed else PENDING,
            "attempts": 1 if claimed else 0,
            "lease_expires_at": now + claim_lease if claim_lease is not None else None,
            "next_attempt_at": m.not_before or now,
            "created_at": now,
        }
        for m in messages
    ]
    # Into the table (Core), not through the ORM's bulk path: less Python per row.
    if not claimed:
        session.execute(insert(_OUTBOX), rows)
        return []
    # RETURNING without a guaranteed order keeps the INSERT batched; rows are matched by reference.
    ids = {
        (row.purpose, row.reference_id): row.id
        for row in session.execute(
            insert(_OUTBOX).returning(_OUTBOX.c.id, _OUTBOX.c.purpose, _OUTBOX.c.reference_id), rows
        )
    }
    return [
        ClaimedMessage(
            id=ids[(m.purpose, m.reference_id)],
            channel=m.channel,
            purpose=m.purpose,
            reference_id=m.reference_id,
            recipient=m.recipient,
            payload=m.payload,
            attempts=1,
        )
        for m in messages
    ]


def enqueue(session: Session, message: NewMessage, *, secret: str, now: datetime) -> None:
    enqueue_many(session, [message], secret=secret, now=now)


def _claimable(now: datetime, channels: Iterable[str]) -> object:
    return and_(
        OutboxMessage.channel.in_(list(channels)),
        or_(
            and_(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now),
            and_(OutboxMessage.state == SENDING, OutboxMessage.lease_expires_at < now),
        ),
    )


def claim(
    session: Session,
    *,
    secret: str,
    channels: Iterable[str],
    now: datetime,
    limit: int,
    lease: timedelta,
    failure_hooks: Mapping[str, FailureHook] | None = None,
) -> list[ClaimedMessage]:
    """Claim up to ``limit`` due messages. One whose stored payload cannot be decrypted (a changed
    secret key, a damaged row) is given up at once in the same transaction, not handed out."""
    channels = list(channels)
    candidates = (
        select(OutboxMessage.id)
        .where(_claimable(now, channels))  # type: ignore[arg-type]
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    rows = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), _claimable(now, channels))  # type: ignore[arg-type]
        .values(state=SENDING, lease_expires_at=now + lease, attempts=OutboxMessage.attempts + 1)
        .returning(
            OutboxMessage.id,
            OutboxMessage.channel,
            OutboxMessage.purpose,
            OutboxMessage.reference_id,
            OutboxMessage.recipient,
            OutboxMessage.payload,
            OutboxMessage.attempts,
        )
    ).all()
    claimed, unreadable = [], []
    for row in rows:
        message = ClaimedMessage(
            id=row.id,
            channel=row.channel,
            purpose=row.purpose,
            reference_id=row.reference_id,
            recipient=row.recipient,
            payload=b"",
            attempts=row.attempts,
        )
        try:
            claimed.append(replace(message, payload=unseal(secret, PAYLOAD_PURPOSE, row.payload)))
        except Exception as exc:  # InvalidTag, a NULL or truncated payload: this message only
            reason = (
                f"the stored message cannot be decrypted ({type(exc).__name__}); was the secret key changed?"
            )
            unreadable.append((message, Undeliverable(reason)))
    if unreadable:
        record_results(
            session,
            [m for m, _ in unreadable],
            dict((m.id, reason) for m, reason in unreadable),
            now=now,
            max_attempts=1,
            failure_hooks=failure_hooks,
        )
    claimed.sort(key=lambda m: m.id)
    return claimed


def _claimed_by(claimed: Iterable[ClaimedMessage]) -> ColumnElement[bool]:
    """The rows still under these claims: sending, with the attempt count of the claim (one that
    another process took over since has a higher count)."""
    by_attempts: dict[int, list[int]] = defaultdict(list)
    for m in claimed:
        by_attempts[m.attempts].append(m.id)
    return and_(
        _OUTBOX.c.state == SENDING,
        or_(*(and_(_OUTBOX.c.id.in_(ids), _OUTBOX.c.attempts == n) for n, ids in by_attempts.items())),
    )


def release(session: Session, claimed: Sequence[ClaimedMessage]) -> None:
    """Hand claimed messages back unsent (a drain that stopped early), as if never attempted; a
    claim another process took over meanwhile is left to it."""
    if claimed:
        session.execute(
            update(_OUTBOX)
            .where(_claimed_by(claimed))
            .values(state=PENDING, lease_expires_at=None, attempts=_OUTBOX.c.attempts - 1)
        )


def renew_leases(session: Session, claims: Mapping[int, int], *, now: datetime, lease: timedelta) -> set[int]:
    """Extend the leases of the claims ``{message id: attempts}`` this process still holds. The
    attempt count identifies the claim: one another process took over after our lease ran out has
    a higher count and is left alone. Returns the ids renewed; a claim missing from them is no
    longer ours (or its outcome was stored meanwhile)."""
    by_attempts: dict[int, list[int]] = defaultdict(list)
    for message_id, attempts in claims.items():
        by_attempts[attempts].append(message_id)
    renewed: set[int] = set()
    for attempts, ids in by_attempts.items():
        for start in range(0, len(ids), 500):
            renewed.update(
                session.scalars(
                    update(_OUTBOX)
                    .where(
                        _OUTBOX.c.id.in_(ids[start : start + 500]),
                        _OUTBOX.c.attempts == attempts,
                        _OUTBOX.c.state == SENDING,
                    )
                    .values(lease_expires_at=now + lease)
                    .returning(_OUTBOX.c.id)
                )
            )
    return renewed


def backoff(attempts: int) -> timedelta:
    """Exponential back-off from 30 s, capped at one hour, with jitter so retries spread out."""
    base = min(30 * 2 ** max(attempts - 1, 0), 3600)
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


def record_results(
    session: Session,
    claimed: Sequence[ClaimedMessage],
    errors: Mapping[int, str | None],
    *,
    now: datetime,
    max_attempts: int,
    hooks: Mapping[str, DeliveryHook] | None = None,
    failure_hooks: Mapping[str, FailureHook] | None = None,
) -> tuple[int, int]:
    """Store each claimed message's outcome; returns (sent, failed), counting what was stored. A
    failure is retried with back-off, or dead after the last attempt or at once when
    ``Undeliverable``. A row another process has claimed since (its attempt count is no longer the
    claim's) is left alone, and no hook runs for it: its outcome is that process's to store."""
    # Only an explicit None is a delivery; a message the sender did not report stays undelivered.
    outcome = {m.id: errors.get(m.id, "not reported by the sender") for m in claimed}
    delivered = [m for m in claimed if outcome[m.id] is None]
    sent_ids: set[int] = set()
    if delivered:
        # On the table (Core), not through the ORM: this runs for every small group of outcomes.
        sent_ids = set(
            session.scalars(
                update(_OUTBOX)
                .where(_claimed_by(delivered))
                .values(state=SENT, sent_at=now, payload=None, lease_expires_at=None, last_error=None)
                .returning(_OUTBOX.c.id)
            )
        )
        by_purpose: dict[str, list[int]] = {}
        for m in delivered:
            if m.id not in sent_ids:
                log.warning("outbox.outcome_not_stored", message_id=m.id, attempts=m.attempts)
            elif m.reference_id is not None:
                by_purpose.setdefault(m.purpose, []).append(m.reference_id)
        for purpose, refs in by_purpose.items():
            hook = (hooks or {}).get(purpose)
            if hook is not None:
                hook(session, refs, now)
    failed = 0
    given_up: dict[str, list[tuple[int, str]]] = {}
    for m in claimed:
        if (error := outcome[m.id]) is None:
            continue
        text = str(error)[:2000]
        dead = isinstance(error, Undeliverable) or m.attempts >= max_attempts
        values: dict[str, object] = {"state": DEAD, "last_error": text, "lease_expires_at": None}
        if not dead:
            values = {
                "state": PENDING,
                "last_error": text,
                "lease_expires_at": None,
                "next_attempt_at": now + backoff(m.attempts),
            }
        result = session.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id == m.id, _OUTBOX.c.attempts == m.attempts, _OUTBOX.c.state == SENDING)
            .values(**values)
        )
        if not cast(int, getattr(result, "rowcount", 0)):
            log.warning("outbox.outcome_not_stored", message_id=m.id, attempts=m.attempts)
            continue
        failed += 1
        if not dead:
            log.warning("outbox.retry", message_id=m.id, purpose=m.purpose, attempts=m.attempts, error=text)
            continue
        log.error("outbox.dead", message_id=m.id, purpose=m.purpose, attempts=m.attempts, error=text)
        if m.reference_id is not None:
            reason = (
                text if isinstance(error, Undeliverable) else f"given up after {m.attempts} attempts: {text}"
            )
            given_up.setdefault(m.purpose, []).append((m.reference_id, reason))
    for purpose, reasons in given_up.items():
        failure_hook = (failure_hooks or {}).get(purpose)
        if failure_hook is not None:
            failure_hook(session, reasons, now)
    return len(sent_ids), failed


# Transactions storing outcomes at the same time (PostgreSQL; SQLite stores one at a time).
RECORDERS_AT_ONCE = 2


class RecordingFailed(Exception):
    """Outcomes could not be stored (the database is unreachable): sending stops, since whatever
    is sent now would be sent again after the lease."""


class LeaseLost(Exception):
    """Raised by ``Outcomes.admit``: this process can no longer be sure of the message's claim
    (another process took it over, or its lease may have run out). The sender skips the message
    and reports nothing for it: whoever claims it next sends it and stores its outcome."""


class Outcomes:
    """Each message's outcome, handed over by the sender as soon as it is known.

    A sender calls ``admit`` just before it hands a message's content over (from then on the
    server may accept it) and ``report`` once it knows the outcome. ``admit`` waits while ``limit``
    admitted messages are unsettled (being handed over, or accepted and not yet stored by the
    recorder): after a crash only those can be sent again. Without a limit it never waits (a sender
    that writes its messages in one transaction need not admit them at all). With ``held`` it then
    raises ``LeaseLost`` for a message whose claim this process can no longer be sure of
    (``Held.may_send``); the sender skips it, and any report of it is ignored.

    The recorder takes the outcomes in groups (``next_group``): at once when a sender waits for
    admission, else once half the limit has gathered or ``linger`` seconds after the first one (a
    group's transaction costs far more than a message in it)."""

    def __init__(self, limit: int | None = None, *, linger: float = 0.02, held: Held | None = None) -> None:
        self.results: dict[int, str | None] = {}
        self._held = held
        self._refused: set[int] = set()  # not sent for want of a sure lease: nothing to record
        self._limit = limit
        self._group = max(1, limit // 2) if limit is not None else 1
        self._linger = linger
        self._unsettled: set[int] = set()
        self._waiting = 0  # senders waiting for admission
        self._settled = asyncio.Condition()
        self._fresh: list[tuple[ClaimedMessage, str | None]] = []
        self._arrived = asyncio.Event()
        self._closed = False
        self.broken: BaseException | None = None

    def _room(self) -> bool:
        return self.broken is not None or self._limit is None or len(self._unsettled) < self._limit

    async def admit(self, message: ClaimedMessage) -> None:
        if self._limit is None:
            self._check(message)
            return
        async with self._settled:
            if not self._room():
                self._waiting += 1
                self._arrived.set()  # the recorder should not linger now
                try:
                    await self._settled.wait_for(self._room)
                finally:
                    self._waiting -= 1
            # After the wait, which may have been long: the lease is judged as the content goes.
            self._check(message)
            self._unsettled.add(message.id)

    def _check(self, message: ClaimedMessage) -> None:
        if self.broken is not None:
            raise RecordingFailed("delivery outcomes cannot be stored") from self.broken
        if self._held is not None and not self._held.may_send(message):
            self._held.lose([message])
            self._refused.add(message.id)
            log.warning("outbox.lease_lost", message_id=message.id)
            raise LeaseLost(message.id)

    def report(self, message: ClaimedMessage, error: str | None) -> None:
        """``error`` is None when the message was accepted; only the first report counts, and none
        for a message ``admit`` refused."""
        if message.id in self.results or message.id in self._refused:
            return
        self.results[message.id] = error
        self._fresh.append((message, error))
        self._arrived.set()

    async def next_group(self) -> list[tuple[ClaimedMessage, str | None]]:
        """The outcomes reported since the last group, once a group is due; empty once closed."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while not self._closed:
            if self._fresh and (len(self._fresh) >= self._group or self._waiting):
                break
            if self._fresh and deadline is None:
                deadline = loop.time() + self._linger
            self._arrived.clear()
            if deadline is None:
                await self._arrived.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
        group, self._fresh = self._fresh, []
        return group

    async def settle(self, ids: Iterable[int]) -> None:
        async with self._settled:
            self._unsettled.difference_update(ids)
            self._settled.notify_all()

    async def break_off(self, exc: BaseException) -> None:
        self.broken = exc
        async with self._settled:
            self._settled.notify_all()

    def close(self) -> None:
        self._closed = True
        self._arrived.set()


class Held:
    """The claims this process holds (claimed, outcome not yet stored): ``{id: attempts}``, the
    leases ``leases_kept`` renews, each with the time (``time.monotonic()``) its lease was last
    secured: when it was claimed, then at each renewal. ``may_send`` tells whether a message may
    still go out; a claim taken over, or refused for want of a sure lease, is dropped and lost for
    good. ``lease`` is the leases' length (``leases_kept`` sets it when not given; without it only
    lost claims are refused). Shared with worker threads that claim."""

    def __init__(self, lease: timedelta | None = None) -> None:
        self.lease = lease
        self._claims: dict[int, tuple[int, float]] = {}  # id: (attempts, secured at)
        self._lost: dict[int, int] = {}  # id: attempts of the claim lost
        self._lock = threading.Lock()

    def add(self, claimed: Iterable[ClaimedMessage], *, secured: float | None = None) -> None:
        """Hold claims whose leases were set at ``secured`` (``time.monotonic()`` taken before the
        claim; now when not given). A claim already held keeps its time: a batch is added again
        when it is sent, and its lease has been running since it was claimed. A lost claim stays
        lost."""
        at = time.monotonic() if secured is None else secured
        with self._lock:
            for m in claimed:
                held = self._claims.get(m.id)
                if (held is None or held[0] != m.attempts) and self._lost.get(m.id) != m.attempts:
                    self._claims[m.id] = (m.attempts, at)

    def discard(self, ids: Iterable[int]) -> None:
        with self._lock:
            for message_id in ids:
                self._claims.pop(message_id, None)

    def snapshot(self) -> dict[int, int]:
        with self._lock:
            return {message_id: attempts for message_id, (attempts, _) in self._claims.items()}

    def renewed(self, claims: Mapping[int, int], renewed: Collection[int], *, secured: float) -> None:
        """After a renewal of ``claims`` (a snapshot) that began at ``secured``: the ``renewed``
        leases run from then, and a claim not renewed was taken over, so it is lost. (A claim whose
        outcome was stored meanwhile is not renewed either; it was sent already, and it is
        discarded right after.)"""
        with self._lock:
            for message_id, attempts in claims.items():
                held = self._claims.get(message_id)
                if held is None or held[0] != attempts:
                    continue  # stored and discarded, or claimed afresh, meanwhile
                if message_id in renewed:
                    self._claims[message_id] = (attempts, max(held[1], secured))
                else:
                    del self._claims[message_id]
                    self._lost[message_id] = attempts

    def lose(self, claimed: Iterable[ClaimedMessage]) -> None:
        """Let these claims go for good: not renewed any more, never sent by this process."""
        with self._lock:
            for m in claimed:
                self._claims.pop(m.id, None)
                self._lost[m.id] = m.attempts

    def lost(self) -> set[int]:
        """The ids of the claims lost (taken over, or refused for want of a sure lease)."""
        with self._lock:
            return set(self._lost)

    def may_send(self, message: ClaimedMessage) -> bool:
        """Whether this process may still send ``message``: its claim is held (not lost), and its
        lease was secured less than two thirds of a lease ago. The heartbeat renews every third,
        so a process that keeps up never comes near; the last third is left for a stall between
        this check and the server taking the content, and for clocks that drift apart."""
        with self._lock:
            held = self._claims.get(message.id)
        if held is None or held[0] != message.attempts:
            return False
        return self.lease is None or time.monotonic() < held[1] + self.lease.total_seconds() * 2 / 3


@contextlib.asynccontextmanager
async def leases_kept(
    factory: sessionmaker[Session], held: Held, *, lease: timedelta, now: Callable[[], datetime] = utcnow
) -> AsyncIterator[Held]:
    """While the block runs, renew the leases of ``held`` claims every third of the lease, so that a
    slow pass keeps its messages and only a dead process's claims are taken over. Each renewal
    tells ``held`` which leases it secured and which claims were taken over (lost); ``held`` learns
    the lease's length if it was not given it."""
    if held.lease is None:
        held.lease = lease

    def renew(claims: dict[int, int]) -> None:
        secured = time.monotonic()  # before ``now()``: the new leases run from no earlier than this
        with transaction(factory) as session:
            renewed = renew_leases(session, claims, now=now(), lease=lease)
        held.renewed(claims, renewed, secured=secured)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            claims = held.snapshot()
            if claims:
                try:
                    await asyncio.to_thread(renew, claims)
                except Exception:  # the next beat tries again; the lease still has two thirds left
                    log.exception("outbox.lease_renewal_failed", claims=len(claims))

    task = asyncio.create_task(heartbeat())
    try:
        yield held
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Sender(Protocol):
    channel: str

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        """Deliver each message and report its outcome to ``outcomes`` (None when accepted, else
        the error; ``Undeliverable`` when no retry can help) as soon as it is known; ``admit`` each
        message before sending it when a crash in between could send it twice, and skip one it
        refuses (``LeaseLost``) without reporting it."""
        ...

    async def close(self) -> None:
        """Release connections kept between batches."""
        ...


@dataclass
class DrainReport:
    sent: int = 0
    failed: int = 0
    stopped: bool = False  # a whole batch failed with errors a retry may cure: the server seems down


async def send(senders: Mapping[str, Sender], claimed: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
    """Hand each claimed message to its channel's sender. A sender that fails unexpectedly fails
    the messages it did not report (they are retried), not the pass."""
    for channel, sender in senders.items():
        subset = [m for m in claimed if m.channel == channel]
        if not subset:
            continue
        error = "not reported by the sender"
        try:
            await sender.deliver(subset, outcomes)
        except RecordingFailed:
            raise
        except Exception as exc:
            log.exception("outbox.sender_failed", channel=channel, messages=len(subset))
            error = f"{type(exc).__name__}: {exc}"
        for m in subset:
            if m.id not in outcomes.results:
                outcomes.report(m, error)


async def deliver_batches(
    factory: sessionmaker[Session],
    senders: Mapping[str, Sender],
    batches: AsyncGenerator[list[ClaimedMessage], None],
    *,
    max_attempts: int,
    hooks: Mapping[str, DeliveryHook] | None = None,
    failure_hooks: Mapping[str, FailureHook] | None = None,
    now: Callable[[], datetime] = utcnow,
    unrecorded_limit: int | None = None,
    held: Held | None = None,
    lease: timedelta | None = None,
) -> DrainReport:
    """Send claimed batches as they come; a background recorder stores the outcomes in small
    groups while sending goes on (at most ``unrecorded_limit`` messages in flight or unrecorded).
    After a batch in which every message failed (the server is likely down) it stops and closes
    ``batches``: what was claimed but not sent waits for its lease or release, and the back-off
    decides when failed messages are tried again. ``held`` is renewed by the caller; without it,
    the leases of the batches are renewed here when ``lease`` is given. A message whose claim
    ``held`` can no longer vouch for is skipped (``Outcomes.admit``): neither sent nor recorded."""
    if held is None and lease is not None:
        async with leases_kept(factory, Held(lease), lease=lease, now=now) as own:
            return await deliver_batches(
                factory,
                senders,
                batches,
                max_attempts=max_attempts,
                hooks=hooks,
                failure_hooks=failure_hooks,
                now=now,
                unrecorded_limit=unrecorded_limit,
                held=own,
            )
    held = held if held is not None else Held()
    report = DrainReport()
    outcomes = Outcomes(unrecorded_limit, held=held)

    def record(group: list[tuple[ClaimedMessage, str | None]]) -> tuple[int, int]:
        with transaction(factory) as session:
            if session.get_bind().dialect.name == "postgresql":
                # Not waiting for the WAL flush (several ms a commit, paid by every small group):
                # should the database server itself crash, the last outcomes may be lost, and
                # those messages are sent again after their lease, as after a crash of ours.
                session.execute(text("SET LOCAL synchronous_commit = off"))
            return record_results(
                session,
                [m for m, _ in group],
                {m.id: error for m, error in group},
                now=now(),
                max_attempts=max_attempts,
                hooks=hooks,
                failure_hooks=failure_hooks,
            )

    async def store(group: list[tuple[ClaimedMessage, str | None]]) -> None:
        try:
            sent, failed = await asyncio.to_thread(record, group)
        except Exception as exc:
            log.exception("outbox.record_failed", messages=len(group))
            await outcomes.break_off(exc)
            return
        report.sent += sent
        report.failed += failed
        ids = [m.id for m, _ in group]
        held.discard(ids)
        await outcomes.settle(ids)

    # A small group's transaction is mostly waiting (round trips, the commit's flush): on PostgreSQL
    # several are stored at once; SQLite has one writer.
    with factory() as session:
        at_once = 1 if session.get_bind().dialect.name == "sqlite" else RECORDERS_AT_ONCE

    async def recorder() -> None:
        storing: set[asyncio.Task[None]] = set()
        while outcomes.broken is None:
            if len(storing) >= at_once:  # outcomes gather meanwhile: the next group is larger
                _, storing = await asyncio.wait(storing, return_when=asyncio.FIRST_COMPLETED)
            if not (group := await outcomes.next_group()):
                break
            storing.add(asyncio.create_task(store(group)))
        if storing:
            await asyncio.wait(storing)

    recording = asyncio.create_task(recorder())
    try:
        async for claimed in batches:
            held.add(claimed)
            await send(senders, claimed, outcomes)
            # A message skipped for want of a sure lease has no result: it says nothing of the server.
            errors = [outcomes.results[m.id] for m in claimed if m.id in outcomes.results]
            if errors and all(e is not None and not isinstance(e, Undeliverable) for e in errors):
                report.stopped = True
                break
    finally:
        outcomes.close()
        await recording
        await batches.aclose()
    if outcomes.broken is not None:
        raise RecordingFailed("delivery outcomes cannot be stored") from outcomes.broken
    return report


async def drain(
    factory: sessionmaker[Session],
    senders: Mapping[str, Sender],
    *,
    secret: str,
    batch_size: int,
    max_attempts: int,
    lease: timedelta,
    hooks: Mapping[str, DeliveryHook] | None = None,
    failure_hooks: Mapping[str, FailureHook] | None = None,
    now: Callable[[], datetime] = utcnow,
    unrecorded_limit: int | None = None,
    held: Held | None = None,
) -> DrainReport:
    """Deliver every message due now, batch by batch, until none is left to claim; the next batch is
    claimed while one is sent. The caller closes the senders (their connections serve several
    drains). ``held`` (renewed by the caller) gets each claim as it is made; without it, leases are
    renewed here."""
    if held is None:
        async with leases_kept(factory, Held(lease), lease=lease, now=now) as own:
            return await drain(
                factory,
                senders,
                secret=secret,
                batch_size=batch_size,
                max_attempts=max_attempts,
                lease=lease,
                hooks=hooks,
                failure_hooks=failure_hooks,
                now=now,
                unrecorded_limit=unrecorded_limit,
                held=own,
            )
    holding = held

    def claim_batch() -> list[ClaimedMessage]:
        # A batch claimed ahead waits while the one before is sent: its lease runs from now.
        secured = time.monotonic()
        with transaction(factory) as session:
            claimed = claim(
                session,
                secret=secret,
                channels=senders.keys(),
                now=now(),
                limit=batch_size,
                lease=lease,
                failure_hooks=failure_hooks,
            )
        holding.add(claimed, secured=secured)
        return claimed

    def release_batch(claimed: list[ClaimedMessage]) -> None:
        if claimed:
            with transaction(factory) as session:
                release(session, claimed)
            holding.discard(m.id for m in claimed)

    async def claimed_batches() -> AsyncGenerator[list[ClaimedMessage], None]:
        prefetch = asyncio.create_task(asyncio.to_thread(claim_batch))
        try:
            while claimed := await prefetch:
                prefetch = asyncio.create_task(asyncio.to_thread(claim_batch))
                yield claimed
        finally:
            # Stopped early (server down): hand back the batch claimed ahead, unsent.
            await asyncio.to_thread(release_batch, await prefetch)

    return await deliver_batches(
        factory,
        senders,
        claimed_batches(),
        max_attempts=max_attempts,
        hooks=hooks,
        failure_hooks=failure_hooks,
        now=now,
        unrecorded_limit=unrecorded_limit,
        held=holding,
    )
