"""Shared fixtures: real databases (SQLite always, PostgreSQL when ONBOARDING_TEST_DATABASE_URL is
set), a real SMTP server (aiosmtpd) on loopback, the app, an API key and reference data.

Every test that takes ``db`` runs once per available database."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from notifications.email import parse_email
from onboarding.api.keys import create_api_key
from onboarding.core.db import Base, make_engine, make_session_factory, transaction
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings
from onboarding.ops import migrations
from onboarding.ops.app import create_app
from vehicles.models import Powertrain
from vehicles.schemas import DealerIn, VehicleModelIn
from vehicles.service import upsert_dealer, upsert_model

PG_URL = os.environ.get("ONBOARDING_TEST_DATABASE_URL")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _fresh_postgres_database(base_url: str) -> tuple[str, Engine]:
    """A database of our own on the given server, so tests never touch another's data."""
    url = make_url(base_url)
    name = f"onboarding_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return url.set(database=name).render_as_string(hide_password=False), admin


@dataclass
class Database:
    kind: str
    url: str
    engine: Engine
    factory: sessionmaker[Session]

    def clear(self) -> None:
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        with self.engine.begin() as conn:
            if self.kind == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def _sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path = tmp_path_factory.mktemp("db") / "test.db"
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    engine = make_engine(url)
    yield Database("sqlite", url, engine, make_session_factory(engine))
    engine.dispose()


@pytest.fixture(scope="session")
def _postgresql_db() -> Iterator[Database]:
    if not PG_URL:
        pytest.skip("PostgreSQL tests need ONBOARDING_TEST_DATABASE_URL (CI sets it)")
    url, admin = _fresh_postgres_database(PG_URL)
    migrations.upgrade(url)
    engine = make_engine(url)
    yield Database("postgresql", url, engine, make_session_factory(engine))
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    database: Database = request.getfixturevalue(f"_{request.param}_db")
    database.clear()
    yield database


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db.url,
        secret_key="test-secret-" + "x" * 40,
        public_base_url="http://testserver",
        smtp_host=None,
        _env_file=None,
    )


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def api_headers(db: Database) -> dict[str, str]:
    with transaction(db.factory) as session:
        _key, plaintext = create_api_key(session, "test order system", now=NOW)
    ISSUED_API_KEYS.append(plaintext)
    return {"Authorization": f"Bearer {plaintext}"}


# --- every log line of the run: tests/core/test_log_privacy.py checks it for personal data and keys ---

ISSUED_API_KEYS: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def log_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    configure_logging()  # as the app and the command line do; jobs run here without either
    path = tmp_path_factory.mktemp("logs") / "run.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    # The root sees the service's and libraries' records; uvicorn's own loggers do not propagate.
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    for logger in loggers:
        logger.addHandler(handler)
    yield path
    for logger in loggers:
        logger.removeHandler(handler)
    handler.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "runs_last: runs after every other test of the run")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


SERVICES = {"SE": ["navigation", "remote_climate"], "DE": ["navigation"], "US": ["navigation"]}


def seed_reference(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        upsert_dealer(
            session,
            "SE-01",
            DealerIn(name="Centre Stockholm", country="SE", email="centre@dealer.example", language="sv"),
            NOW,
        )
        upsert_dealer(
            session,
            "US-01",
            DealerIn(name="Center Boston", country="US", email="boston@dealer.example", language="en"),
            NOW,
        )
        upsert_dealer(
            session,
            "ZA-01",
            DealerIn(name="Centre Cape Town", country="ZA", email="capetown@dealer.example", language="en"),
            NOW,
        )
        upsert_model(
            session,
            "E40",
            VehicleModelIn(
                name="Nordlicht E40",
                model_year=2027,
                powertrain=Powertrain.BEV,
                requires_security_pin=True,
                offers_data_pass=True,
                services=SERVICES,
            ),
            NOW,
        )
        upsert_model(
            session,
            "S90",
            VehicleModelIn(
                name="Nordlicht S90",
                model_year=2026,
                powertrain=Powertrain.ICE,
                requires_security_pin=False,
                offers_data_pass=False,
                services=SERVICES,
            ),
            NOW,
        )


@pytest.fixture
def reference(db: Database) -> None:
    seed_reference(db.factory)


# --- a real SMTP server on loopback --------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        message = parse_email(envelope.original_content or envelope.content)  # type: ignore[attr-defined]
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(Mailbox(), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port})


# Fixtures shared by several modules, defined beside their helpers.
from tests.browser_support import browser, page  # noqa: E402, F401
from tests.sms_gateway import sms_gateway  # noqa: E402, F401
