"""SMS codes (SPEC §3.3) through the outbox and a real HTTP gateway, the activation's phone step,
"wrong number?" help, and the vehicle security PIN with its 3-strikes lock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from notifications.models import OutboxMessage
from onboarding.activation.models import SupportRequest
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.i18n import gettext_, use_language
from onboarding.core.settings import Settings
from onboarding.identity import pin, sms_codes
from onboarding.identity.models import Account, AuditEvent, SecurityPin
from onboarding.ops.app import create_app
from tests.account_support import PASSWORD, account, log_in, make_account, run_and_send
from tests.conftest import Database
from tests.helpers import (
    PIN,
    csrf,
    id_form,
    invite_through_api,
    path_of,
    run_jobs,
    set_pin_step,
    sms_codes_sent,
    verify_phone_step,
)
from tests.sms_gateway import Gateway

PHONE = "+46701234567"


def _send(db: Database, settings: Settings, now: datetime) -> sms_codes.SendOutcome:
    def work(session: Session) -> sms_codes.SendOutcome:
        acc = session.get(Account, account(db.factory).id)
        assert acc is not None
        return sms_codes.send_code(session, settings, acc, purpose=sms_codes.PHONE, phone=PHONE, now=now)

    return run_and_send(db.factory, settings, work)


def _check(db: Database, settings: Settings, code: str, now: datetime) -> sms_codes.CheckOutcome:
    with transaction(db.factory) as session:
        acc = session.get(Account, account(db.factory).id)
        assert acc is not None
        return sms_codes.check_code(
            session, settings, acc, purpose=sms_codes.PHONE, phone=PHONE, code=code, now=now
        )


def test_sms_code_rules_cooldown_hourly_limit_expiry_and_failures(db: Database, settings: Settings) -> None:
    now = utcnow()
    make_account(db.factory, settings, now)
    assert _send(db, settings, now) is sms_codes.SendOutcome.SENT
    assert _send(db, settings, now + timedelta(seconds=59)) is sms_codes.SendOutcome.COOLDOWN
    for minutes in (1, 2, 3, 4):
        assert _send(db, settings, now + timedelta(minutes=minutes)) is sms_codes.SendOutcome.SENT
    # Five codes in the hour: the sixth waits.
    assert _send(db, settings, now + timedelta(minutes=5)) is sms_codes.SendOutcome.LIMIT
    codes = sms_codes_sent(db.factory, PHONE)
    assert len(codes) == 5
    latest = codes[-1]
    at = now + timedelta(minutes=4, seconds=30)
    # An earlier code no longer works once a newer one was sent (unless it happens to be equal).
    if codes[0] != latest:
        assert _check(db, settings, codes[0], at) is sms_codes.CheckOutcome.WRONG
    # A code is valid 10 minutes.
    assert _check(db, settings, latest, now + timedelta(minutes=15)) is sms_codes.CheckOutcome.EXPIRED
    assert _check(db, settings, latest, at) is sms_codes.CheckOutcome.OK


def test_five_wrong_codes_lock_and_a_new_code_does_not_reset_the_count(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    make_account(db.factory, settings, now)
    _send(db, settings, now)
    wrong = "000000" if sms_codes_sent(db.factory, PHONE)[-1] != "000000" else "111111"
    for _ in range(3):
        assert _check(db, settings, wrong, now) is sms_codes.CheckOutcome.WRONG
    later = now + timedelta(minutes=2)
    assert _send(db, settings, later) is sms_codes.SendOutcome.SENT
    new_code = sms_codes_sent(db.factory, PHONE)[-1]
    wrong = "000000" if new_code != "000000" else "111111"
    assert _check(db, settings, wrong, later) is sms_codes.CheckOutcome.WRONG
    assert _check(db, settings, wrong, later) is sms_codes.CheckOutcome.LOCKED  # the fifth
    assert _check(db, settings, new_code, later) is sms_codes.CheckOutcome.LOCKED
    assert _send(db, settings, later + timedelta(minutes=5)) is sms_codes.SendOutcome.LOCKED
    # An hour after the last send a fresh start is allowed.
    assert _send(db, settings, later + timedelta(minutes=61)) is sms_codes.SendOutcome.SENT
    with db.factory() as session:
        assert "sms_code_locked" in {e.kind for e in session.scalars(select(AuditEvent))}


@pytest.mark.parametrize("model", ["E40"])
def test_activation_phone_step_through_a_real_http_gateway_with_a_retry(
    db: Database,
    reference: None,
    settings: Settings,
    api_headers: dict[str, str],
    sms_gateway: Gateway,
    model: str,
) -> None:
    http = settings.model_copy(update={"sms_backend": "http", "sms_http_url": sms_gateway.url})
    with TestClient(create_app(http, session_factory=db.factory)) as client:
        link = invite_through_api(client, db.factory, settings, api_headers, model_code=model)
        client.get(path_of(link))
        form = id_form(client)
        assert (
            client.post("/activate/id", data=form, follow_redirects=False).headers["location"]
            == "/activate/phone"
        )
        # The gateway is busy for the first attempt: the outbox keeps the message and retries it.
        sms_gateway.fail_next = 1
        page = client.post("/activate/phone/send", data=csrf(client))
        assert page.status_code == 200 and "••• ••• 45 67" in page.text
        assert sms_gateway.codes_to(PHONE) == []
        with db.factory() as session:
            message = session.scalars(select(OutboxMessage).where(OutboxMessage.channel == "sms")).one()
            assert message.state == "pending" and "503" in (message.last_error or "")
        run_jobs(db.factory, http, message.next_attempt_at + timedelta(seconds=1))
        [code] = sms_gateway.codes_to(PHONE)
        [payload] = sms_gateway.received
        assert set(payload) == {"to", "body", "reference"} and payload["to"] == PHONE
        wrong = client.post(
            "/activate/phone", data={**csrf(client), "code": "999999" if code != "999999" else "888888"}
        )
        assert wrong.status_code == 422 and "försök kvar: 4." in wrong.text.lower()
        ok = client.post("/activate/phone", data={**csrf(client), "code": code}, follow_redirects=False)
        assert ok.headers["location"] == "/activate/pin"
    assert account(db.factory).phone_verified_at is not None


def test_the_development_sms_outbox_page_shows_each_text_to_its_recipient(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    """Without a gateway (``sms_backend=dev``) a local run reads its codes at /dev/sms; with one, the
    page does not exist."""
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    client.post("/activate/id", data=id_form(client))
    assert client.post("/activate/phone/send", data=csrf(client)).status_code == 200
    code = sms_codes_sent(db.factory, PHONE)[-1]
    page = client.get("/dev/sms", params={"to": PHONE})
    assert page.status_code == 200 and f"to {PHONE}" in page.text and code in page.text
    other = client.get("/dev/sms", params={"to": "+46709999999"})
    assert other.status_code == 200 and code not in other.text and "No text messages yet." in other.text
    assert code in client.get("/dev/sms").text
    http = settings.model_copy(update={"sms_backend": "http", "sms_http_url": "http://127.0.0.1:9/sms"})
    with TestClient(create_app(http, session_factory=db.factory)) as with_gateway:
        assert with_gateway.get("/dev/sms").status_code == 404


def test_wrong_number_help_creates_a_routed_support_request(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    form = id_form(client)
    client.post("/activate/id", data=form)
    assert client.get("/activate/phone/wrong").status_code == 200
    response = client.post(
        "/activate/phone/wrong",
        data={**csrf(client), "kind": "wrong_phone", "message": "It is +46 70 999 99 99"},
    )
    assert response.status_code == 200
    with db.factory() as session:
        request = session.scalars(select(SupportRequest)).one()
    assert request.kind == "wrong_phone" and request.country == "SE"
    assert (
        request.routed_to == "smartmobility@se.nordlicht-motors.example"
        and request.contact_email == "astrid@example.com"
    )


def test_later_steps_need_the_signed_in_buyer(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    link = invite_through_api(client, db.factory, settings, api_headers)
    client.get(path_of(link))
    form = id_form(client)
    client.post("/activate/id", data=form)
    # Someone else holding the link (the cookie) but not signed in as the buyer gets the login page.
    stranger = TestClient(client.app)
    stranger.get(path_of(link))
    assert (
        stranger.get("/activate/phone", follow_redirects=False).headers["location"]
        == "/login?next=/activate/phone"
    )
    # The buyer resumes where they left off, here at the PIN after the phone step.
    assert verify_phone_step(client, db.factory).headers["location"] == "/activate/pin"
    assert client.get("/activate/phone", follow_redirects=False).headers["location"] == "/activate/pin"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("123", "exactly 4 digits"),
        ("12a4", "exactly 4 digits"),
        ("7777", "All four digits are the same"),
        ("1234", "run in order"),
        ("9876", "run in order"),
        ("1985", "birth year"),
        ("1204", "birthday"),
    ],
)
def test_trivial_pins_are_refused_with_the_reason(
    db: Database, settings: Settings, value: str, reason: str
) -> None:
    make_account(db.factory, settings, utcnow())  # born 1985-04-12
    with db.factory() as session:
        acc = session.get(Account, account(db.factory).id)
        assert acc is not None
        with pytest.raises(Exception) as raised:
            pin.set_pin(session, settings, acc, value, value, now=utcnow(), ip=None)
        assert reason in str(raised.value)
        assert session.scalars(select(SecurityPin)).first() is None


def test_three_wrong_pins_lock_and_a_web_reset_with_the_password_unlocks(
    db: Database, settings: Settings, client: TestClient
) -> None:
    now = utcnow()
    make_account(db.factory, settings, now)
    with transaction(db.factory) as session:
        acc = session.get(Account, account(db.factory).id)
        assert acc is not None
        pin.set_pin(session, settings, acc, PIN, PIN, now=now, ip=None)
    with db.factory() as session:
        stored = session.get(SecurityPin, account(db.factory).id)
        assert stored is not None and PIN not in stored.pin_hash and stored.pin_hash.startswith("$argon2id$")

    def check(value: str) -> pin.PinResult:
        with transaction(db.factory) as session:
            acc = session.get(Account, account(db.factory).id)
            assert acc is not None
            return pin.check_pin(session, settings, acc, value, now=now, actor="vehicle:TEST")

    assert check(PIN).outcome is pin.PinCheck.OK
    assert [check("0000").outcome for _ in range(3)] == [
        pin.PinCheck.WRONG,
        pin.PinCheck.WRONG,
        pin.PinCheck.LOCKED,
    ]
    assert check(PIN).outcome is pin.PinCheck.LOCKED  # even the right PIN, until reset

    log_in(client)
    assert "Locked after 3 wrong entries" in client.get("/account/security").text
    refused = client.post(
        "/account/security/pin",
        data={**csrf(client), "password": "wrong-password-1", "pin": "5190", "pin_confirmation": "5190"},
    )
    assert refused.status_code == 422 and check(PIN).outcome is pin.PinCheck.LOCKED
    reset = client.post(
        "/account/security/pin",
        data={**csrf(client), "password": PASSWORD, "pin": "5190", "pin_confirmation": "5190"},
        follow_redirects=False,
    )
    assert reset.status_code == 303
    assert check("5190").outcome is pin.PinCheck.OK and check(PIN).outcome is pin.PinCheck.WRONG
    with db.factory() as session:
        kinds = [e.kind for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert {"pin_set", "pin_failed", "pin_locked", "pin_unlocked"} <= set(kinds)


def test_the_pin_step_leads_to_the_terms(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    client.get(path_of(invite_through_api(client, db.factory, settings, api_headers)))
    form = id_form(client)
    client.post("/activate/id", data=form)
    verify_phone_step(client, db.factory)
    trivial = set_pin_step(client, "1111")
    assert trivial.status_code == 422 and 'id="pin-error"' in trivial.text
    assert set_pin_step(client).headers["location"] == "/activate/terms"
    assert client.get("/api/v1/orders/SO-1", headers=api_headers).json()["onboarding"]["stage"] == "pin_set"


def test_only_the_primary_user_sets_the_pin(
    db: Database, reference: None, settings: Settings, client: TestClient, api_headers: dict[str, str]
) -> None:
    """Someone else signed in with their own ID, holding the buyer's link, cannot set the car's PIN."""
    link = invite_through_api(client, db.factory, settings, api_headers)
    client.get(path_of(link))
    client.post("/activate/id", data=id_form(client))
    verify_phone_step(client, db.factory)
    other = TestClient(client.app)
    make_account(db.factory, settings, utcnow(), email="other@example.com")
    log_in(other, email="other@example.com")
    other.get(path_of(link))
    refused = set_pin_step(other)
    assert refused.status_code == 303 and refused.headers["location"] == "/login?next=/activate/pin"
    with db.factory() as session:
        assert session.scalars(select(SecurityPin)).first() is None
    assert set_pin_step(client).headers["location"] == "/activate/terms"


def test_the_pages_state_the_configured_rules_in_the_readers_language(
    db: Database, reference: None, settings: Settings, api_headers: dict[str, str]
) -> None:
    """Validity periods, waits and limits in the texts come from the settings, and the texts a route
    passes to its page are translated in the page's language (the Swedish buyer's here)."""
    rules = settings.model_copy(
        update={
            "sms_code_valid_minutes": 7,
            "sms_resend_seconds": 45,
            "email_verification_valid_hours": 48,
            "email_change_valid_hours": 12,
            "password_reset_valid_minutes": 30,
        }
    )

    def swedish(message: str, **values: int) -> str:
        with use_language("sv"):
            return str(escape(gettext_(message, **values)))

    with TestClient(create_app(rules, session_factory=db.factory)) as client:
        client.get(path_of(invite_through_api(client, db.factory, rules, api_headers)))
        client.post("/activate/id", data=id_form(client))
        sent = client.post("/activate/phone/send", data=csrf(client))
        assert '<html lang="sv"' in sent.text
        assert swedish("We sent a code. It is valid for %(minutes)s minutes.", minutes=7) in sent.text
        assert swedish("Wait %(seconds)s seconds, then ask for a new code.", seconds=45) in sent.text
        again = client.post("/activate/phone/send", data=csrf(client))
        cooldown = swedish("Wait %(seconds)s seconds before asking for another code.", seconds=45)
        assert again.status_code == 429 and cooldown in again.text
        pages = {
            "/register/verify/unknown": swedish(
                "Activation links work once and for %(hours)s hours.", hours=48
            ),
            "/password/reset/unknown": swedish(
                "Password reset links work once and for %(minutes)s minutes. Ask for a new one.", minutes=30
            ),
            "/account/email/confirm/unknown": swedish(
                "Confirmation links work once and for %(hours)s hours, and not if the address has an ID "
                "meanwhile.",
                hours=12,
            ),
        }
        for path, text in pages.items():
            page = client.get(path, params={"lang": "sv"})
            assert page.status_code == 410 and text in page.text, path
