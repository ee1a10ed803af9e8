"""No personal data or keys in logs, and every 5xx a problem document (issue #9).

``conftest.log_capture`` writes every log line of the test run to a file; the last test of the run
reads it for the test data's buyers and API keys. The tests before it make the riskiest logs on
purpose: a database error whose statement carries a buyer, and log events naming one."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from onboarding.core.settings import Settings
from tests.browser_support import live_server
from tests.conftest import ISSUED_API_KEYS, Database
from tests.web.test_input_hygiene import exchange
from vehicles import service

# A buyer only these tests use, so that finding them in the log can only mean a leak.
BUYER = {
    "first_name": "Ingeborg",
    "last_name": "Quarnström",
    "email": "ingeborg.quarnstrom@example.com",
    "phone": "+46701239876",
}
# The buyers of the other tests' data (tests/helpers.py and others).
TEST_DATA = [
    "astrid@example.com",
    "Astrid@example.com",
    "Lindqvist",
    "+46701234567",
    "+46 70 123 45 67",
    "+1 617 555 0100",
    "+16175550100",
]
API_KEY = re.compile(r"onb_[0-9a-f]{12}_[\w-]{20,}")


def _lookup_that_fails_with_a_buyer(session: Session, order_number: str, scope: Any = None) -> Any:
    """In place of ``service.get_order``: a statement carrying a buyer that the database refuses
    (NOT NULL), as a bug could write it. On PostgreSQL the error's detail holds the whole row."""
    session.execute(
        text(
            "INSERT INTO orders (order_number, buyer_first_name, buyer_last_name, buyer_email, buyer_phone)"
            " VALUES (:number, :first, :last, :email, :phone)"
        ),
        {"number": order_number, "first": BUYER["first_name"], "last": BUYER["last_name"]}
        | {"email": BUYER["email"], "phone": BUYER["phone"]},
    )
    raise AssertionError("the database accepted an order without a dealer")


@pytest.fixture
def failing_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "get_order", _lookup_that_fails_with_a_buyer)


def _leaks(log: str) -> list[str]:
    values = [*BUYER.values(), *TEST_DATA, *ISSUED_API_KEYS]
    found = [value for value in values if value in log]
    return found + API_KEY.findall(log)


def test_an_unexpected_error_is_a_problem_with_a_correlation_id_and_no_personal_data(
    db: Database, client: TestClient, api_headers: dict[str, str], failing_lookup: None, log_capture: Path
) -> None:
    response = client.get("/api/v1/orders/SO-1", headers={**api_headers, "X-Request-ID": "req-4711.a"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 500 and problem["title"] and problem["type"]
    assert problem["correlation_id"] == response.headers["x-correlation-id"] == "req-4711.a"
    assert not [value for value in BUYER.values() if value in response.text]
    log = log_capture.read_text(encoding="utf-8")
    failure = [line for line in log.splitlines() if "req-4711.a" in line]
    assert failure and "IntegrityError" in failure[-1], failure  # logged: its type and its id
    assert _leaks(log) == []
    # An id that is not sane (too long, odd characters) is replaced by one of ours.
    odd = client.get("/api/v1/orders/SO-1", headers={**api_headers, "X-Correlation-ID": "x" * 300})
    assert re.fullmatch(r"[0-9a-f]{32}", odd.json()["correlation_id"])
    assert odd.headers["x-correlation-id"] == odd.json()["correlation_id"]


def test_every_response_carries_a_correlation_id(client: TestClient, db: Database) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["x-correlation-id"])
    missing_key = client.get("/api/v1/orders/SO-1", headers={"X-Correlation-ID": "abc-123"})
    assert missing_key.status_code == 401
    assert missing_key.json()["correlation_id"] == missing_key.headers["x-correlation-id"] == "abc-123"


def test_a_500_keeps_the_connection_open(
    db: Database, settings: Settings, api_headers: dict[str, str], failing_lookup: None
) -> None:
    """Starlette's ServerErrorMiddleware re-raises to uvicorn, which then closes the connection."""
    request = (
        b"GET /api/v1/orders/SO-1 HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: " + api_headers["Authorization"].encode() + b"\r\n\r\n"
    )
    with live_server(settings, db.factory) as server:
        address = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=10) as sock:
            for _ in range(3):  # on one connection
                status, headers, _body = exchange(sock, request)
                assert status == 500
                assert headers["content-type"] == "application/problem+json"
                assert headers.get("connection", "").lower() != "close"


def test_log_events_and_library_records_are_redacted(log_capture: Path) -> None:
    from onboarding.core.logconfig import configure_logging

    configure_logging()
    key = "onb_0123456789ab_" + "k" * 43
    structlog.get_logger("onboarding.test").warning(
        "smtp.refused",
        error=f"550 <{BUYER['email']}>: no such user; call {BUYER['phone']}",
        headers={"Authorization": f"Bearer {key}"},
        link="https://brand.example/i/" + "t" * 43,
    )
    # A library's record (uvicorn's own handlers print theirs, redacted the same way when made).
    logging.getLogger("sqlalchemy.pool").warning(
        "refused %s for %s", BUYER["email"], "Bearer " + key, extra={}
    )
    logging.getLogger("sqlalchemy.engine").error(
        "failed", exc_info=ValueError(f"Failing row contains ({BUYER['first_name']}, {BUYER['email']})")
    )
    log = log_capture.read_text(encoding="utf-8")
    assert "smtp.refused" in log and "refused [redacted] for Bearer [redacted]" in log
    assert "ValueError: [redacted]" in log
    assert _leaks(log) == []


@pytest.mark.runs_last
def test_no_personal_data_or_keys_were_logged_in_the_whole_run(log_capture: Path) -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    log = log_capture.read_text(encoding="utf-8")
    assert _leaks(log) == [], "personal data or keys in the log of this run"
