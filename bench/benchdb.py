"""What both benchmarks need: a fresh database (SQLite or a throw-away PostgreSQL database) and a
free loopback port."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.db import make_engine, make_session_factory
from onboarding.ops import migrations


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BenchDb:
    kind: str
    url: str
    engine: Engine
    factory: sessionmaker[Session]


@contextmanager
def fresh_database(base_url: str | None, workdir: Path, label: str) -> Iterator[BenchDb]:
    """A migrated, empty database: a SQLite file in ``workdir``, or a new database on the PostgreSQL
    server of ``base_url``, dropped on exit."""
    admin: Engine | None = None
    if base_url is None:
        url = f"sqlite:///{workdir / label}.db"
    else:
        parsed = make_url(base_url)
        if parsed.get_backend_name() != "postgresql":
            raise SystemExit("--database-url takes a PostgreSQL URL; leave it out for SQLite")
        name = f"bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = parsed.set(database=name).render_as_string(hide_password=False)
    engine: Engine | None = None
    try:
        migrations.upgrade(url)
        engine = make_engine(url)
        yield BenchDb(engine.dialect.name, url, engine, make_session_factory(engine))
    finally:
        if engine is not None:
            engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            admin.dispose()
