"""The OCPI token push: a real operator endpoint on loopback receives one PUT per change, and a
change made while it is down arrives once it is back (the scheduler's outbox pass)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import update

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import make_account
from tests.conftest import Database
from tests.helpers import run_jobs
from tests.vehicles.charging.ocpi_support import CARDS, card_uid, make_cards, register_party
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging import ocpi_push
from vehicles.charging.changes import tokens_changed

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
THEIR_TOKEN = "operator-token-for-us"


@dataclass
class Operator:
    url: str = ""
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def operator() -> Iterator[Operator]:
    state = Operator()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with state.lock:
                if not state.down:
                    state.received.append((self.path, self.headers.get("authorization", ""), body))
            self.send_response(503 if state.down else 200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status_code": 1000, "timestamp": "2031-03-01T12:00:00Z"}')

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/ocpi/cpo/2.2.1/tokens"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def pushing(db: Database, settings: Settings, reference: None, operator: Operator) -> list[int]:
    ocpi_push.install(settings)
    register_party(db.factory, settings, NOW, tokens_url=operator.url, their_token=THEIR_TOKEN)
    register_party(db.factory, settings, NOW, party_id="OLD")  # no Tokens endpoint: nothing pushed
    account_id = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        return make_cards(session, account_id, NOW, 3)


def block(db: Database, card_id: int, at: datetime) -> None:
    with transaction(db.factory) as session:
        session.execute(update(CARDS).where(CARDS.c.id == card_id).values(state="blocked", last_updated=at))
        tokens_changed(session, [card_id], now=at)


def test_one_put_per_change(db: Database, settings: Settings, operator: Operator, pushing: list[int]) -> None:
    block(db, pushing[1], NOW)
    run_jobs(db.factory, settings, NOW)
    run_jobs(db.factory, settings, NOW + timedelta(hours=2))  # nothing is sent twice
    assert len(operator.received) == 1
    path, authorization, body = operator.received[0]
    assert path == f"/ocpi/cpo/2.2.1/tokens/SE/NLM/{card_uid(1)}?type=RFID"
    assert authorization == "Token " + base64.b64encode(THEIR_TOKEN.encode()).decode()
    token = ocpi.Token.model_validate(body)
    assert (token.uid, token.valid, token.whitelist) == (card_uid(1), False, ocpi.WhitelistType.NEVER)


def test_change_arrives_after_operator_is_back(
    db: Database, settings: Settings, operator: Operator, pushing: list[int]
) -> None:
    operator.down = True
    block(db, pushing[2], NOW)
    run_jobs(db.factory, settings, NOW)
    assert operator.received == []
    operator.down = False
    run_jobs(db.factory, settings, NOW + timedelta(hours=1))  # past the back-off
    run_jobs(db.factory, settings, NOW + timedelta(hours=3))
    assert [ocpi.Token.model_validate(body).uid for _, _, body in operator.received] == [card_uid(2)]
