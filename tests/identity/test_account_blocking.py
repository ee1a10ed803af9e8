"""Blocking an ID (``onboarding accounts block EMAIL --reason …``, through the command's entry point):
the ID can no longer sign in (told only after the right password), its signed-in browsers are signed
out, and its charging cards are blocked at once: the operator receives a PUT with ``valid: false``
and the real-time authorisation answers BLOCKED. Unblocking lets it sign in again; the cards stay
blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.identity.dependencies import SESSION_COOKIE
from onboarding.identity.models import Account, AuditEvent
from onboarding.ops.app import create_app
from tests.account_support import PASSWORD, log_in, make_account
from tests.conftest import NOW, Database
from tests.helpers import run_jobs
from tests.vehicles.charging.ocpi_support import card_uid, make_cards, register_party
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging import ocpi_push
from vehicles.charging.models import ChargingCard, ChargingContract

EMAIL = "astrid@example.com"


@pytest.fixture
def operator() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers.get("content-length", "0")))))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status_code": 1000, "timestamp": "2031-03-01T12:00:00Z"}')

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ocpi/cpo/2.2.1/tokens", received
    server.shutdown()
    server.server_close()


def _cli(db: Database, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        ONBOARDING_DATABASE_URL=db.url,
        ONBOARDING_SECRET_KEY=settings.secret_key_value(),
    )
    command = [sys.executable, "-m", "onboarding.ops.cli", "accounts", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_blocked_id_cannot_sign_in_and_its_cards_stop_working(
    db: Database, settings: Settings, reference: None, operator: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = operator
    ocpi_push.install(settings)
    _party_id, party = register_party(db.factory, settings, NOW, tokens_url=url, their_token="theirs")
    account_id = make_account(db.factory, settings, NOW, email=EMAIL)
    other_id = make_account(db.factory, settings, NOW, email="erik@example.com")
    with transaction(db.factory) as session:
        make_cards(session, account_id, NOW, 2)
        make_cards(session, other_id, NOW, 1, start=2)

    with TestClient(create_app(settings, session_factory=db.factory)) as browser:
        assert log_in(browser).status_code == 303
        assert browser.get("/account", follow_redirects=False).status_code == 200

        refused = _cli(db, settings, "block", "nobody@example.com", "--reason", "fraud")
        assert refused.returncode == 1 and "no ID has the address" in refused.stderr
        no_reason = _cli(db, settings, "block", EMAIL, "--reason", "   ")
        assert no_reason.returncode == 1 and "reason: 1 to 200 characters" in no_reason.stderr
        with db.factory() as session:
            assert session.scalar(select(Account.blocked_at).where(Account.id == account_id)) is None

        done = _cli(db, settings, "block", EMAIL, "--reason", "Reported stolen identity")
        assert done.returncode == 0, done.stderr
        assert f"ID {EMAIL} blocked." in done.stdout
        again = _cli(db, settings, "block", EMAIL, "--reason", "twice")
        assert again.returncode == 0 and "blocked already" in again.stdout

        # The browser that was signed in is signed out.
        assert browser.get("/account", follow_redirects=False).status_code == 303
        # A wrong password learns nothing; the right one is told the ID is blocked.
        wrong = log_in(browser, password="not-the-password-1")
        assert wrong.status_code == 401 and "blocked" not in wrong.text
        right = log_in(browser, password=PASSWORD)
        assert right.status_code == 403 and "This ID is blocked" in right.text
        assert SESSION_COOKIE not in right.cookies

        # Charging: both of the ID's cards are blocked, the other ID's card is not.
        for n, allowed in [(0, "BLOCKED"), (1, "BLOCKED"), (2, "ALLOWED")]:
            answer = browser.post(f"/ocpi/2.2.1/tokens/{card_uid(n)}/authorize", headers=party)
            info = ocpi.AuthorizationInfo.model_validate(
                ocpi.Envelope[Any].model_validate(answer.json()).data
            )
            assert (info.allowed.value, info.token.valid) == (allowed, allowed == "ALLOWED")

    run_jobs(db.factory, settings, datetime.now(UTC) + timedelta(minutes=1))  # the command's clock is real
    pushed = sorted((ocpi.Token.model_validate(body) for body in received), key=lambda t: t.uid)
    assert [(t.uid, t.valid, t.whitelist) for t in pushed] == [
        (card_uid(0), False, ocpi.WhitelistType.NEVER),
        (card_uid(1), False, ocpi.WhitelistType.NEVER),
    ]
    with db.factory() as session:
        reasons = session.scalars(
            select(ChargingContract.ended_reason).where(ChargingContract.account_id == account_id)
        ).all()
        assert reasons == ["account_blocked", "account_blocked"]
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.account_id == account_id).order_by(AuditEvent.id)
        ).all()
        blocked = [e for e in events if e.kind == "account_blocked"]
        assert len(blocked) == 1 and blocked[0].actor == "cli"
        assert "Reported stolen identity" in json.dumps(blocked[0].details)
        assert any(e.kind == "login_refused_blocked" for e in events)

    undone = _cli(db, settings, "unblock", EMAIL)
    assert undone.returncode == 0 and f"ID {EMAIL} unblocked." in undone.stdout
    with TestClient(create_app(settings, session_factory=db.factory)) as browser:
        assert log_in(browser).status_code == 303
    with db.factory() as session:
        states = session.scalars(
            select(ChargingCard.state)
            .join(ChargingContract, ChargingContract.id == ChargingCard.contract_id)
            .where(ChargingContract.account_id == account_id)
        ).all()
        assert states == ["blocked", "blocked"]  # what ended stays ended
