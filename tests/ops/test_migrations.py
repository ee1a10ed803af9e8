"""The schema comes only from Alembic: upgrade from empty works and matches the models."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from onboarding.core.db import Base
from onboarding.ops import migrations


def _check(url: str) -> None:
    migrations.upgrade(url)
    migrations.check(url)  # raises if the models and the migrations disagree
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty_and_check(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'empty.db'}")


def test_postgresql_upgrade_from_empty_and_check() -> None:
    base = os.environ.get("ONBOARDING_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL tests need ONBOARDING_TEST_DATABASE_URL (CI sets it)")
    name = f"onboarding_migrate_{secrets.token_hex(4)}"
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _check(make_url(base).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
