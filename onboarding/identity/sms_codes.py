"""SMS codes (SPEC §3.3): 6 digits, valid 10 minutes, at most 5 wrong tries, a new code at most every
60 seconds and 5 per hour; a new code does not reset the failure count.

One ``SmsChallenge`` row per ID, purpose and number lives across resends. After the last wrong try it
stays locked for an hour from that try; then a new challenge may start. Codes are stored as an HMAC
under the configured key (a plain hash of six digits is reversed in microseconds)."""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.senders import enqueue_now
from onboarding.core.crypto import keyed_digest
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity import audit
from onboarding.identity.models import Account, SmsChallenge

PHONE, LOGIN, RESET = "phone", "login", "reset"
SECONDARY = "secondary"  # accepting an invitation as a vehicle's secondary user (SPEC §3.5)
LOCK_HOURS = 1


class SendOutcome(StrEnum):
    SENT = "sent"
    COOLDOWN = "cooldown"
    LIMIT = "limit"
    LOCKED = "locked"


class CheckOutcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    LOCKED = "locked"
    NO_CODE = "no_code"


@dataclass(frozen=True)
class ChallengeState:
    """What a page shows about a challenge; no secret in it."""

    masked_phone: str
    wait_seconds: int  # until a new code may be requested
    sends_left: int
    tries_left: int
    locked: bool
    code_sent: bool
    valid_minutes: int  # the rules, for the page's texts
    resend_seconds: int


def mask_phone(phone: str) -> str:
    """``+46701234567`` → ``••• ••• 45 67``: enough to recognise one's number, no more."""
    digits = [c for c in phone if c.isdigit()]
    last = "".join(digits[-4:])
    return f"••• ••• {last[:2]} {last[2:]}"


def valid_minutes(settings: Settings, purpose: str) -> int:
    """How long a code for ``purpose`` is valid: the SMS code's minutes, but a secondary user's code
    (sent when they accept a primary user's invitation, maybe hours later) for its own hours."""
    if purpose == SECONDARY:
        return settings.secondary_code_valid_hours * 60
    return settings.sms_code_valid_minutes


def _code_hash(settings: Settings, account_id: int, purpose: str, phone: str, code: str) -> str:
    return keyed_digest(settings.secret_key_value(), "sms-code", account_id, purpose, phone, code)


def current(session: Session, account_id: int, purpose: str, phone: str) -> SmsChallenge | None:
    return session.scalar(
        select(SmsChallenge)
        .where(
            SmsChallenge.account_id == account_id,
            SmsChallenge.purpose == purpose,
            SmsChallenge.phone == phone,
            SmsChallenge.closed_at.is_(None),
            SmsChallenge.verified_at.is_(None),
        )
        .order_by(SmsChallenge.id.desc())
        .limit(1)
    )


def _recent_sends(challenge: SmsChallenge, now: datetime) -> list[datetime]:
    hour_ago = now - timedelta(hours=1)
    return [t for t in (datetime.fromisoformat(s) for s in challenge.send_times) if t > hour_ago]


def _locked(settings: Settings, challenge: SmsChallenge) -> bool:
    return challenge.failures >= settings.sms_code_max_failures


def _lock_over(challenge: SmsChallenge, now: datetime) -> bool:
    last = max((datetime.fromisoformat(s) for s in challenge.send_times), default=challenge.created_at)
    return now >= max(last, challenge.code_sent_at) + timedelta(hours=LOCK_HOURS)


def _seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds left, rounded up: right after a send the page says the configured wait (60, not
    59), and it says 0 only once a new code may be sent."""
    return max(0, math.ceil((moment - now).total_seconds()))


def state(
    session: Session, settings: Settings, account_id: int, purpose: str, phone: str, *, now: datetime
) -> ChallengeState:
    challenge = current(session, account_id, purpose, phone)
    if challenge is None or (_locked(settings, challenge) and _lock_over(challenge, now)):
        return ChallengeState(
            masked_phone=mask_phone(phone),
            wait_seconds=0,
            sends_left=settings.sms_max_sends_per_hour,
            tries_left=settings.sms_code_max_failures,
            locked=False,
            code_sent=False,
            valid_minutes=valid_minutes(settings, purpose),
            resend_seconds=settings.sms_resend_seconds,
        )
    sends = _recent_sends(challenge, now)
    wait = 0
    if sends:
        wait = _seconds_until(max(sends) + timedelta(seconds=settings.sms_resend_seconds), now)
    if len(sends) >= settings.sms_max_sends_per_hour:
        wait = max(wait, _seconds_until(min(sends) + timedelta(hours=1), now))
    return ChallengeState(
        masked_phone=mask_phone(phone),
        wait_seconds=wait,
        sends_left=max(0, settings.sms_max_sends_per_hour - len(sends)),
        tries_left=max(0, settings.sms_code_max_failures - challenge.failures),
        locked=_locked(settings, challenge),
        code_sent=True,
        valid_minutes=valid_minutes(settings, purpose),
        resend_seconds=settings.sms_resend_seconds,
    )


def sms_text(settings: Settings, code: str, language: str, *, minutes: int | None = None) -> str:
    """The SMS; ``minutes`` is the code's validity (the SMS code's by default), said in hours when
    it is whole hours longer than one."""
    host = urlsplit(settings.public_base_url).hostname or "localhost"
    minutes = settings.sms_code_valid_minutes if minutes is None else minutes
    with use_language(language):
        if minutes > 60 and minutes % 60 == 0:
            text = gettext_(
                "%(code)s is your %(brand)s verification code. It is valid for %(hours)s hours. "
                "Never share it: we will never ask you for it.",
                code=code,
                brand=settings.brand_name,
                hours=minutes // 60,
            )
        else:
            text = gettext_(
                "%(code)s is your %(brand)s verification code. It is valid for %(minutes)s minutes. "
                "Never share it: we will never ask you for it.",
                code=code,
                brand=settings.brand_name,
                minutes=minutes,
            )
    # The last line lets phones offer the code to this site only (WebOTP, origin-bound one-time codes).
    return f"{text}\n\n@{host} #{code}"


def send_code(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    purpose: str,
    phone: str,
    now: datetime,
    ip: str | None = None,
) -> SendOutcome:
    """Send a new code if the limits allow; the message goes out right after the caller commits."""
    challenge = current(session, account.id, purpose, phone)
    if challenge is not None and _locked(settings, challenge):
        if not _lock_over(challenge, now):
            return SendOutcome.LOCKED
        challenge.closed_at = now
        challenge = None
    if challenge is not None:
        sends = _recent_sends(challenge, now)
        if len(sends) >= settings.sms_max_sends_per_hour:
            return SendOutcome.LIMIT
        if sends and now < max(sends) + timedelta(seconds=settings.sms_resend_seconds):
            return SendOutcome.COOLDOWN
    code = f"{secrets.randbelow(10**6):06d}"
    valid = timedelta(minutes=valid_minutes(settings, purpose))
    digest = _code_hash(settings, account.id, purpose, phone, code)
    if challenge is None:
        challenge = SmsChallenge(
            account_id=account.id,
            purpose=purpose,
            phone=phone,
            code_hash=digest,
            code_sent_at=now,
            code_expires_at=now + valid,
            send_times=[now.isoformat()],
            failures=0,
            created_at=now,
        )
        session.add(challenge)
        session.flush()
    else:
        challenge.code_hash = digest
        challenge.code_sent_at = now
        challenge.code_expires_at = now + valid
        challenge.send_times = [t.isoformat() for t in _recent_sends(challenge, now)] + [now.isoformat()]
    enqueue_now(
        session,
        outbox.NewMessage(
            channel="sms",
            purpose=f"sms_code_{purpose}",
            recipient=phone,
            payload=sms_text(
                settings, code, account.language, minutes=valid_minutes(settings, purpose)
            ).encode(),
            reference_id=challenge.id,
        ),
        settings=settings,
        now=now,
    )
    audit.record(session, "sms_code_sent", now=now, account_id=account.id, ip=ip, purpose=purpose)
    return SendOutcome.SENT


def check_code(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    purpose: str,
    phone: str,
    code: str,
    now: datetime,
    ip: str | None = None,
) -> CheckOutcome:
    challenge = current(session, account.id, purpose, phone)
    if challenge is None:
        return CheckOutcome.NO_CODE
    if _locked(settings, challenge):
        return CheckOutcome.LOCKED
    cleaned = "".join(c for c in code if c.isdigit())
    expected = _code_hash(settings, account.id, purpose, phone, cleaned)
    matches = len(cleaned) == 6 and hmac.compare_digest(expected, challenge.code_hash)
    if matches and now < challenge.code_expires_at:
        challenge.verified_at = now
        return CheckOutcome.OK
    if matches:
        return CheckOutcome.EXPIRED
    challenge.failures += 1
    if _locked(settings, challenge):
        audit.record(session, "sms_code_locked", now=now, account_id=account.id, ip=ip, purpose=purpose)
        return CheckOutcome.LOCKED
    return CheckOutcome.WRONG


def verify_phone(
    session: Session,
    settings: Settings,
    account: Account,
    *,
    phone: str,
    code: str,
    now: datetime,
    ip: str | None = None,
) -> CheckOutcome:
    """A code sent to ``phone`` entered right: that number becomes the ID's verified mobile number."""
    outcome = check_code(session, settings, account, purpose=PHONE, phone=phone, code=code, now=now, ip=ip)
    if outcome is CheckOutcome.OK:
        changed = account.phone != phone
        account.phone, account.phone_verified_at = phone, now
        audit.record(session, "phone_verified", now=now, account_id=account.id, ip=ip, changed=changed)
    return outcome
