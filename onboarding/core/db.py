"""Database engine, sessions and the declarative base shared by every package's models.

SQLite (local runs, tests) and PostgreSQL (production, CI) through one code path. On SQLite every
transaction starts with ``BEGIN IMMEDIATE``: writers queue on the busy timeout instead of failing when
two processes (several schedulers) upgrade a read lock at the same moment. A transaction begun with
``begin_read`` is a plain (deferred) ``BEGIN`` instead: a read waits for no writer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, sqlite_busy_seconds: float = 60.0, **kwargs: Any) -> Engine:
    """``sqlite_busy_seconds``: how long a SQLite writer waits for the write lock before it fails
    (jobs and the command line wait long; requests briefly, then answer 503)."""
    kwargs.setdefault("hide_parameters", True)  # database errors (logged, printed) carry no row values
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": sqlite_busy_seconds, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine, busy_milliseconds=round(sqlite_busy_seconds * 1000))
        return engine
    engine = create_engine(url, **kwargs)
    _ping_connections_that_sat_idle(engine)
    return engine


def engine_of(factory: sessionmaker[Session]) -> Engine:
    engine = factory.kw["bind"]
    assert isinstance(engine, Engine)
    return engine


def pool_capacity(engine: Engine) -> int | None:
    """Connections the engine's pool keeps (its overflow not counted); None for pools without a
    bound (SQLite's in-memory and NullPool)."""
    size = getattr(engine.pool, "size", None)
    return int(size()) if callable(size) else None


def sibling_engine(engine: Engine, **kwargs: Any) -> Engine:
    """A second engine on the same database with a pool of its own (the scheduler's)."""
    return make_engine(engine.url.render_as_string(hide_password=False), **kwargs)


def is_lock_timeout(exc: BaseException) -> bool:
    """SQLite's write lock was not free within the busy timeout."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


# A pooled connection that was in use this recently is taken to be alive (HikariCP's
# "aliveBypassWindowMs" is 500 ms): under load no request pays a round trip to ask. SQLAlchemy's
# ``pool_pre_ping`` would ping at every checkout, twice per login.
_PING_AFTER_IDLE_SECONDS = 1.0


def _ping_connections_that_sat_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < _PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (SQLAlchemy's documented way).
            raise DisconnectionError() from exc


def _configure_sqlite(engine: Engine, *, busy_milliseconds: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_milliseconds)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


_READ_ONLY = "onboarding_read_only"


def begin_read(session: Session) -> None:
    """Begins the session's transaction as a read of a statement or two, which must write nothing.

    On SQLite it is a plain (deferred) ``BEGIN``, which takes no write lock, so it neither waits for
    nor holds up writers. On PostgreSQL it runs in the driver's autocommit, each statement on its own:
    no ``BEGIN`` and ``COMMIT`` to send, two round trips fewer. A session already in a transaction
    stays in that one."""
    if session.in_transaction():
        return
    if session.get_bind().dialect.name == "sqlite":
        # Not the driver's autocommit here: resetting it afterwards hands transaction control back to
        # the sqlite3 module, which the "begin" hook has taken over.
        session.connection(execution_options={_READ_ONLY: True})
    else:
        session.connection(execution_options={_READ_ONLY: True, "isolation_level": "AUTOCOMMIT"})
    session.info[_READ_ONLY] = session.get_transaction()  # see in_read


def in_read(session: Session) -> bool:
    """The session's transaction is a read begun by ``begin_read``: ending it sends nothing to
    PostgreSQL (autocommit) and on SQLite only releases the file's read lock, so it may end where
    a thread hop would cost more."""
    transaction = session.get_transaction()
    # Asked without ``session.connection()``, which would check a connection out if none is.
    return transaction is not None and session.info.get(_READ_ONLY) is transaction


def begin_single_statement(session: Session) -> None:
    """Begins a unit of work that is one statement. On PostgreSQL it runs in autocommit: a statement
    is atomic on its own, and ``BEGIN`` and ``COMMIT`` would be two round trips more. Only when the
    session has no transaction yet and nothing to flush (a flush would commit apart from it);
    otherwise, and on other databases (``sessions.rotate`` is one statement only on PostgreSQL), the
    usual transaction."""
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error. Jobs and requests use this;
    services never commit."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
