"""Issue 11, items 4 and 5: implausible delivery dates and a dealer of another country are warned about
(API answer and CSV report), an invitation never names a delivery date that has passed, and one
answer names every bad field of an order, whether its value did not parse (a bad date) or broke a
rule (API 422 and CSV report alike)."""

from __future__ import annotations

import io
from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from notifications.email import body_parts
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database, SmtpServer
from tests.helpers import order_payload, put_order, run_jobs
from vehicles.csv_import import ImportReport, import_orders_csv
from vehicles.models import Order
from vehicles.service import CSV_COLUMNS

DAY = timedelta(days=1)
NORWAY: dict[str, Any] = {"country": "NO", "language": "nb", "buyer_phone": "+47 412 34 567"}


def _orders(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count()).select_from(Order)) or 0


def _payload(delivery: date | None = None, **overrides: Any) -> dict[str, Any]:
    return order_payload(delivery or (utcnow() + 30 * DAY).date(), **overrides)


def _errors(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["title"], body["detail"]) == (
        422,
        "Invalid request",
        "One or more fields are invalid.",
    )
    return {e["field"]: e for e in body["errors"]}


# --- item 5: every error at once ------------------------------------------------------------------


def test_api_names_a_bad_date_together_with_the_other_bad_fields(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/orders/SO-1",
        json=_payload(planned_delivery_date="2026-02-30", buyer_email="x@", dealer_code="NOPE"),
        headers=api_headers,
    )
    errors = _errors(response)
    assert set(errors) == {"planned_delivery_date", "buyer_email", "dealer_code"}
    assert {name: e["pointer"] for name, e in errors.items()} == {
        "planned_delivery_date": "/planned_delivery_date",
        "buyer_email": "/buyer_email",
        "dealer_code": "/dealer_code",
    }
    assert errors["dealer_code"]["code"] == "unknown"
    assert _orders(db) == 0


def test_api_names_values_of_the_wrong_type_missing_fields_and_the_number_together(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    payload = _payload(planned_delivery_date="soon", model_code="NOPE", language="fr")
    del payload["buyer_last_name"]
    payload["buyer_first_name"] = 42  # not a string: a parsing error, like the date
    payload["colour"] = "red"  # not a field at all
    response = client.put("/api/v1/orders/" + "N" * 70, json=payload, headers=api_headers)
    errors = _errors(response)
    assert set(errors) == {
        "order_number",
        "planned_delivery_date",
        "buyer_first_name",
        "buyer_last_name",
        "colour",
        "model_code",
        "language",
    }
    assert errors["buyer_last_name"]["code"] == "missing"
    assert errors["colour"]["code"] == "extra_forbidden"
    # A nested buyer's errors are named as the flat fields, next to the others.
    nested = {
        k: v for k, v in _payload(planned_delivery_date="2026-13-01").items() if not k.startswith("buyer_")
    }
    nested["buyer"] = {"first_name": "Astrid", "last_name": "L", "email": "astrid@", "phone": "+46701234567"}
    assert set(_errors(client.put("/api/v1/orders/SO-2", json=nested, headers=api_headers))) == {
        "planned_delivery_date",
        "buyer_email",
    }
    assert _orders(db) == 0


def test_api_still_answers_bodies_that_are_no_order_object(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    errors = _errors(client.put("/api/v1/orders/SO-1", json=[1, 2], headers=api_headers))
    assert errors["body"]["pointer"] == ""
    malformed = client.put(
        "/api/v1/orders/SO-1", content=b"{", headers={**api_headers, "content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["errors"][0]["pointer"] == ""
    assert _orders(db) == 0


HEADER = ",".join(CSV_COLUMNS)


def _import(db: Database, *rows: str) -> ImportReport:
    data = "\n".join([HEADER, *rows]).encode() + b"\n"
    with transaction(db.factory) as session:
        return import_orders_csv(session, io.BytesIO(data), now=NOW, actor="test", lead_days=14)


def _row(number: str, *, dealer: str = "SE-01", email: str = "astrid@example.com", delivery: str) -> str:
    return f"{number},{dealer},E40,,Astrid,Lindqvist,{email},+46701234567,SE,sv,{delivery}"


def test_csv_names_a_bad_date_together_with_the_other_bad_fields(db: Database, reference: None) -> None:
    good = _row("O-1", delivery=(NOW + 30 * DAY).date().isoformat())
    bad = _row("O-2", dealer="NOPE", email="x@", delivery="2026-02-30")
    report = _import(db, good, bad)
    assert not report.imported and _count_rows(report) == {
        3: ["planned_delivery_date", "dealer_code", "buyer_email"]
    }
    assert _orders(db) == 0


def _count_rows(report: ImportReport) -> dict[int, list[str]]:
    by_row: dict[int, list[str]] = {}
    for error in report.errors:
        by_row.setdefault(error.row, []).append(error.field)
    return by_row


# --- item 4: warnings -----------------------------------------------------------------------------


def test_api_warns_about_past_and_far_dates_and_a_dealer_of_another_country(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str]
) -> None:
    today = utcnow().date()

    def warnings(number: str, payload: dict[str, Any]) -> list[str]:
        response = client.put(f"/api/v1/orders/{number}", json=payload, headers=api_headers)
        assert response.status_code == 201, response.text
        found: list[str] = response.json()["warnings"]
        return found

    assert warnings("PLAIN", _payload()) == []
    [past] = warnings("PAST", _payload(date(2020, 1, 1), buyer_email="p@example.com"))
    assert past.startswith("planned_delivery_date: 2020-01-01 has passed")
    # A delivered order's date is expected to have passed: no warning.
    done = _payload(date(2020, 1, 1), buyer_email="d@example.com", production_status="delivered")
    assert warnings("DONE", done) == []
    [far] = warnings("FAR", _payload(today + 4 * 366 * DAY, buyer_email="f@example.com"))
    assert far.startswith("planned_delivery_date: ") and "more than three years ahead" in far
    [foreign] = warnings("ABROAD", _payload(buyer_email="n@example.com", **NORWAY))
    assert foreign.startswith("dealer_code: dealer SE-01 is in SE, the order in NO")
    assert _orders(db) == 5
    # Beyond any delivery date: still refused.
    too_far = client.put("/api/v1/orders/TOO-FAR", json=_payload(today + 11 * 366 * DAY), headers=api_headers)
    assert "planned_delivery_date" in _errors(too_far)


def test_csv_reports_the_same_warnings_by_field(db: Database, reference: None) -> None:
    far = (NOW + 4 * 366 * DAY).date().isoformat()
    abroad = f"O-4,SE-01,E40,,Ola,Nordmann,o@example.com,+4741234567,NO,nb,{(NOW + 30 * DAY).date()}"
    report = _import(
        db,
        _row("O-1", delivery=(NOW + 30 * DAY).date().isoformat()),
        _row("O-2", email="p@example.com", delivery="2020-01-01"),
        _row("O-3", email="f@example.com", delivery=far),
        abroad,
    )
    assert report.imported and report.errors == [] and report.created == 4
    hints = {(h.row, h.field): h.message for h in report.hints}
    assert set(hints) == {(3, "planned_delivery_date"), (4, "planned_delivery_date"), (5, "dealer_code")}
    assert "2020-01-01 has passed" in hints[(3, "planned_delivery_date")]
    assert "more than three years ahead" in hints[(4, "planned_delivery_date")]
    assert "is in SE, the order in NO" in hints[(5, "dealer_code")]


# --- item 4: the email never names a date that has passed ------------------------------------------


def _text(message: Any) -> str:
    text, html = body_parts(message)
    assert html is not None
    return f"{message['Subject']}\n{text}\n{html}"


def test_invitation_of_an_order_whose_date_has_passed_does_not_name_it(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "PAST", NOW, **order_payload(date(2020, 1, 1)))
    put_order(
        db.factory,
        smtp_settings,
        "SOON",
        NOW,
        **order_payload((NOW + 10 * DAY).date(), buyer_email="b@example.com", language="en"),
    )
    assert run_jobs(db.factory, smtp_settings, NOW).sent == 2
    [past] = smtp.mailbox.to("astrid@example.com")
    text = _text(past)
    assert "2020" not in text and "planerad att levereras" not in text
    assert "Tack för att du valde Nordlicht E40 från Centre Stockholm." in text  # Swedish, as the order
    assert "när du hämtar din bil" not in text  # it may have been collected already
    # A date ahead is still named.
    [soon] = smtp.mailbox.to("b@example.com")
    assert "planned for delivery on March 12, 2026 by Centre Stockholm" in _text(soon)


def test_reminder_does_not_name_a_date_that_has_passed_since_the_invitation(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 3 * DAY).date(), language="en"))
    run_jobs(db.factory, smtp_settings, NOW)
    [invitation] = smtp.mailbox.messages
    assert "planned for delivery on March 5, 2026" in _text(invitation)
    assert run_jobs(db.factory, smtp_settings, NOW + 7 * DAY).reminded == 1
    reminder = _text(smtp.mailbox.messages[1])
    assert "March 5" not in reminder and "planned for delivery" not in reminder
    assert "before your Nordlicht E40 arrives" not in reminder
    assert "You have not finished activating the connected services of your Nordlicht E40 yet." in reminder
