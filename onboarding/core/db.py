"""Database engine, sessions and the declarative base shared by every package's models.

SQLite (local runs, tests) and PostgreSQL (production, CI) through one code path. On SQLite every
transaction starts with ``BEGIN IMMEDIATE``: writers queue on the busy timeout instead of failing when
two processes (several schedulers) upgrade a read lock at the same moment. A transaction begun with
``begin_read`` is a plain (deferred) ``BEGIN`` instead: a read waits for no writer.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, DateTime, Engine, MetaData, Select, create_engine, event
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
        options = connection.get_execution_options()
        if options.get(_SINGLE_STATEMENT, False):
            return  # the driver's autocommit: the statement is a transaction of its own
        connection.exec_driver_sql("BEGIN" if options.get(_READ_ONLY, False) else "BEGIN IMMEDIATE")


_READ_ONLY = "onboarding_read_only"
_SINGLE_STATEMENT = "onboarding_single_statement"


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


@contextmanager
def read_connection(engine: Engine, *, single_statement: bool = False) -> Iterator[Connection]:
    """A connection for a read of a statement or two, without an ORM session (a hot path's lookups):
    begun as ``begin_read`` begins a session's read, rolled back and returned to the pool on exit.

    ``single_statement``: the caller runs one ``SELECT``, which is then a transaction of its own on
    SQLite too (no ``BEGIN`` and ``ROLLBACK``: each is a trip into the driver that lets go of the
    GIL, and under load getting it back costs more than the statement)."""
    options: dict[str, Any] = {_READ_ONLY: True}
    if engine.dialect.name != "sqlite":  # see begin_read
        options["isolation_level"] = "AUTOCOMMIT"
    elif single_statement:
        options[_SINGLE_STATEMENT] = True
    with engine.connect() as connection:
        connection.execution_options(**options)
        yield connection


AnySelect: TypeAlias = Select[*tuple[Any, ...]]


class PointReads:
    """One-statement reads (a row by its key) answered on the event loop, without a worker thread:
    the hot paths whose whole work is one lookup (an operator's real-time authorisation).

    A worker thread costs a hop there and back, and every driver call in it lets go of the GIL and
    must win it back from the busy event loop: measured (bench/ocpi.py), that cost more than the
    statement. On PostgreSQL the statement runs on psycopg's asyncio connections (autocommit, a
    ``psycopg_pool`` pool of its own as large as the admission's slots), compiled once by SQLAlchemy;
    SQLAlchemy's asyncio engine was measured at three times the CPU of a bare psycopg query. Rows
    then carry the driver's values (timestamps aware, in the server's zone). On SQLite it runs on the
    loop itself: a local read of an indexed row in WAL mode takes tens of microseconds and never
    waits for a writer (readers see the last commit; only a checkpoint in RESTART or TRUNCATE mode
    could make them wait, and nothing here runs one)."""

    def __init__(self, engine: Engine, pool_size: int) -> None:
        self.engine = engine
        self.pool_size = pool_size
        self._compiled: dict[int, tuple[AnySelect, str, dict[str, Any]]] = {}
        # One pool per event loop: a test client may run each request on a loop of its own.
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = (
            weakref.WeakKeyDictionary()
        )

    def _sql(self, statement: AnySelect) -> tuple[str, dict[str, Any]]:
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            compiled = statement.compile(dialect=self.engine.dialect)
            found = (statement, str(compiled), dict(compiled.params))
            self._compiled[id(statement)] = found
        return found[1], found[2]

    async def _pool(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            pool = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "row_factory": namedtuple_row},
                open=False,
            )
            self._pools[loop] = pool
            await pool.open()
        return pool

    async def first(self, statement: AnySelect, parameters: dict[str, Any]) -> Any:
        """The first row (attributes by column name), or None."""
        if self.engine.dialect.name == "sqlite":
            with read_connection(self.engine, single_statement=True) as connection:
                return connection.execute(statement, parameters).first()
        sql, defaults = self._sql(statement)
        pool = await self._pool()
        for attempt in (1, 2):
            try:
                async with pool.connection() as connection:
                    cursor = await connection.execute(sql, {**defaults, **parameters})
                    return await cursor.fetchone()
            except psycopg.OperationalError:
                # A connection that died while idle (a server restart): the pool drops it; once more.
                if attempt == 2:
                    raise
        return None

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        pool = self._pools.pop(loop, None)
        if pool is not None:
            await pool.close()


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
