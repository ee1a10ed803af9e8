"""Pooled connections: alive is checked only for one that sat idle (no round trip per request under
load), and a connection the server ended while it was idle is replaced, not handed to a request."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

import onboarding.core.db
from onboarding.core.db import make_engine
from tests.conftest import Database


def counted_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    real_ping = engine.dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    return pings


def test_only_a_connection_that_sat_idle_is_pinged(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.kind != "postgresql":
        pytest.skip("a SQLite file needs no liveness check")
    engine = make_engine(db.url)
    try:
        pings = counted_pings(engine, monkeypatch)
        for _ in range(5):  # back to back, as under load
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        assert pings == []
        monkeypatch.setattr(onboarding.core.db, "_PING_AFTER_IDLE_SECONDS", 0.05)
        time.sleep(0.1)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_connection_ended_while_idle_is_replaced_at_checkout(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.kind != "postgresql":
        pytest.skip("SQLite has no server that could end a connection")
    monkeypatch.setattr(onboarding.core.db, "_PING_AFTER_IDLE_SECONDS", 0.05)
    engine = make_engine(db.url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        time.sleep(0.2)
        with engine.connect() as conn:  # the pool's only connection is dead: a request must not see it
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != first
    finally:
        engine.dispose()
