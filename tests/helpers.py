"""Small helpers shared by tests: building orders, running the scheduler, reading links."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime
from email.message import EmailMessage
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.orm import Session, sessionmaker

from notifications.email import body_parts
from onboarding.activation.jobs import JobReport, run_due_jobs
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from vehicles.schemas import OrderIn
from vehicles.service import upsert_order, validate_order

LINK = re.compile(r"https?://[^\s\"'<>]+/i/[A-Za-z0-9_\-]+")


def order_payload(delivery: date, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "dealer_code": "SE-01",
        "model_code": "E40",
        "vin": None,
        "buyer_first_name": "Astrid",
        "buyer_last_name": "Lindqvist",
        "buyer_email": "astrid@example.com",
        "buyer_phone": "+46 70 123 45 67",
        "country": "SE",
        "language": "sv",
        "planned_delivery_date": delivery.isoformat(),
    }
    payload.update(overrides)
    return payload


def put_order(
    factory: sessionmaker[Session], settings: Settings, number: str, now: datetime, **payload: Any
) -> None:
    with transaction(factory) as session:
        clean = validate_order(session, number, OrderIn.model_validate(payload), today=now.date())
        upsert_order(session, clean, now=now, actor="test", lead_days=settings.invitation_lead_days)


def run_jobs(factory: sessionmaker[Session], settings: Settings, now: datetime) -> JobReport:
    return asyncio.run(run_due_jobs(factory, settings, now=lambda: now))


def link_in(message: EmailMessage) -> str:
    text, html = body_parts(message)
    found = LINK.search(text)
    assert found, f"no invitation link in: {text!r}"
    assert html is not None and found.group(0) in html
    return found.group(0)


def path_of(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def dev_mailbox_links(factory: sessionmaker[Session]) -> list[str]:
    """The invitation links in the development mailbox, oldest first."""
    from sqlalchemy import select

    from notifications.models import DevMailboxMessage

    with factory() as session:
        bodies = session.scalars(select(DevMailboxMessage.text_body).order_by(DevMailboxMessage.id)).all()
    return [found.group(0) for body in bodies if (found := LINK.search(body))]


def invite_through_api(
    client: Any,
    factory: sessionmaker[Session],
    settings: Settings,
    api_headers: dict[str, str],
    **fields: Any,
) -> str:
    """Order SO-1 through the API (delivery in 4 days), one scheduler pass, and its emailed link."""
    from datetime import timedelta

    from onboarding.core.clock import utcnow

    now = utcnow()
    response = client.put(
        "/api/v1/orders/SO-1",
        json=order_payload((now + timedelta(days=4)).date(), **fields),
        headers=api_headers,
    )
    assert response.status_code in (200, 201), response.text
    run_jobs(factory, settings, now)
    [link] = dev_mailbox_links(factory)
    return link


SMS_CODE = re.compile(r"#(\d{6})\s*$")
PIN = "7291"
ID_PASSWORD = "violet-harbour-kettle-42"


def sms_codes_sent(factory: sessionmaker[Session], phone: str) -> list[str]:
    """The codes texted to ``phone`` through the development SMS outbox, oldest first."""
    from sqlalchemy import select

    from notifications.models import DevMailboxMessage

    with factory() as session:
        bodies = session.scalars(
            select(DevMailboxMessage.text_body)
            .where(DevMailboxMessage.channel == "sms", DevMailboxMessage.recipient == phone)
            .order_by(DevMailboxMessage.id)
        ).all()
    return [found.group(1) for body in bodies if (found := SMS_CODE.search(body))]


def csrf(client: Any) -> dict[str, str]:
    if "onb_csrf" not in client.cookies:
        client.get("/login")
    return {"csrf_token": client.cookies["onb_csrf"]}


def verify_phone_step(client: Any, factory: sessionmaker[Session], phone: str = "+46701234567") -> Any:
    """The activation's SMS step: ask for the code, read it from the SMS outbox, enter it."""
    sent = client.post("/activate/phone/send", data=csrf(client))
    assert sent.status_code == 200, sent.text
    code = sms_codes_sent(factory, phone)[-1]
    return client.post("/activate/phone", data={**csrf(client), "code": code}, follow_redirects=False)


def set_pin_step(client: Any, pin: str = PIN) -> Any:
    return client.post(
        "/activate/pin", data={**csrf(client), "pin": pin, "pin_confirmation": pin}, follow_redirects=False
    )


def id_form(client: Any, **overrides: str) -> dict[str, str]:
    """The activation's ID form, filled in for the test buyer (password: ``ID_PASSWORD``)."""
    form = {
        **csrf(client),
        "first_name": "Astrid",
        "last_name": "Lindqvist",
        "birth_date": "1985-04-12",
        "country": "SE",
        "language": "sv",
        "password": ID_PASSWORD,
        "password_confirmation": ID_PASSWORD,
        "accept_terms": "true",
        "accept_privacy": "true",
    }
    form.update(overrides)
    return form


def terms_step(client: Any, **overrides: str) -> Any:
    """Terms of use and privacy notice accepted; no partner or marketing consent."""
    form = {**csrf(client), "accept_terms": "yes", "accept_privacy": "yes", **overrides}
    return client.post("/activate/terms", data=form, follow_redirects=False)


SWEDISH_ADDRESS = {"street": "Storgatan 1", "postal_code": "114 51", "city": "Stockholm", "country": "SE"}


def billing_step(client: Any, **overrides: str) -> Any:
    """A private billing address in Stockholm (the recipient as prefilled: the ID's name)."""
    form = {
        **csrf(client),
        "kind": "private",
        "recipient_name": "Astrid Lindqvist",
        **SWEDISH_ADDRESS,
        **overrides,
    }
    return client.post("/activate/billing", data=form, follow_redirects=False)


def data_pass_step(client: Any, choice: str = "accept") -> Any:
    return client.post("/activate/data-pass", data={**csrf(client), "choice": choice}, follow_redirects=False)


def services_step(client: Any) -> Any:
    return client.post("/activate/services", data={**csrf(client), "confirm": "yes"}, follow_redirects=False)


def vehicle_step(client: Any) -> Any:
    """With a VIN the page links the car and moves on at once; without one the buyer reads that the link
    follows the VIN and continues."""
    shown = client.get("/activate/vehicle", follow_redirects=False)
    if shown.status_code == 303:
        return shown
    assert shown.status_code == 200, shown.text
    return client.post("/activate/vehicle", data=csrf(client), follow_redirects=False)


def charging_step(client: Any, choice: str = "book") -> Any:
    """The charging offer (plug-in hybrids and electric cars): ``book`` books where the car is linked
    already (otherwise the page offers only "Not now", which is taken), ``decline`` is "Not now"."""
    shown = client.get("/activate/charging", follow_redirects=False)
    assert shown.status_code == 200, shown.text[:500]
    if choice == "book" and 'name="choice" value="book"' not in shown.text:
        choice = "decline"
    return client.post("/activate/charging", data={**csrf(client), "choice": choice}, follow_redirects=False)


def finish_after_pin(client: Any, stop_at: str = "/activate/done") -> Any:
    """The steps after the PIN, each as the page that is due asks (Data Pass only where offered), up to
    the step ``stop_at``; the last answer (the redirect to the done page or to ``stop_at``)."""
    do = {
        "/activate/terms": terms_step,
        "/activate/billing": billing_step,
        "/activate/data-pass": data_pass_step,
        "/activate/services": services_step,
        "/activate/vehicle": vehicle_step,
        "/activate/charging": charging_step,
    }
    answer = None
    due = _due_step(client)
    while due in do and due != stop_at:
        answer = do[due](client)
        assert answer.status_code == 303, (due, answer.status_code, answer.text[:500])
        due = answer.headers["location"]
    assert due == stop_at, due
    return answer


def _due_step(client: Any) -> str:
    # The landing page links the step that is due.
    landing = client.get("/activate", follow_redirects=False)
    if landing.status_code == 303:
        return str(landing.headers["location"])
    found = re.search(r'href="(/activate/[a-z-]+)"', landing.text)
    assert found, landing.text[:500]
    return found.group(1)


def app_routes(routes: list[Any]) -> list[tuple[str, APIRoute]]:
    """(path as served, route) for every APIRoute of the app: ``app.routes`` lists an included
    router as one entry, which ``iter_route_contexts`` expands."""
    return [
        (context.path or route.path, route)
        for context in iter_route_contexts(routes)
        if isinstance(route := context.original_route, APIRoute)
    ]
