"""Concurrent requests (issue #9): creating one order, dealer or model from many requests at once
gives one 201 and otherwise 200, never a 500; one VIN ends up on one live order only.

On PostgreSQL the race is made certain rather than left to timing: the test holds a SHARE lock on
the table, so every request reads (and finds nothing) and then waits at its INSERT until all have
come that far; then the lock goes and they all insert at once. SQLite has one writer at a time
(``BEGIN IMMEDIATE``), so there the requests simply run concurrently."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from onboarding.core.clock import utcnow
from tests.conftest import Database
from tests.helpers import order_payload
from vehicles.models import Dealer, Order, OrderEvent, ProductionStatus, VehicleModel

VIN = "YV1ZWA8UDL1234567"


def _payload(**overrides: Any) -> dict[str, Any]:
    return order_payload((utcnow() + timedelta(days=30)).date(), **overrides)


@contextmanager
def _inserts_held_back(db: Database, table: str, requests: int) -> Iterator[Callable[[], None]]:
    """On PostgreSQL: a SHARE lock on ``table`` that the yielded function releases once ``requests``
    inserts wait for it (or a few, when the pool admits fewer at a time)."""
    if db.kind != "postgresql":
        yield lambda: None
        return
    with db.engine.connect() as holder:
        holder.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))

        def release() -> None:
            deadline, waiting, seen_at = time.monotonic() + 15, 0, time.monotonic()
            try:
                with db.engine.connect() as probe:
                    while time.monotonic() < deadline and waiting < requests:
                        now_waiting = probe.execute(
                            text(
                                "SELECT count(*) FROM pg_locks"
                                " WHERE NOT granted AND relation = CAST(:t AS regclass)"
                            ),
                            {"t": table},
                        ).scalar_one()
                        if now_waiting != waiting:
                            waiting, seen_at = now_waiting, time.monotonic()
                        elif waiting >= 2 and time.monotonic() - seen_at > 1.0:
                            break  # as many as the pool lets in at once
                        time.sleep(0.02)
            finally:
                holder.rollback()
            assert waiting >= 2, "the requests never met at the insert"

        yield release
        holder.rollback()


@pytest.fixture
def used_key(client: TestClient, api_headers: dict[str, str]) -> dict[str, str]:
    """The API key, its use noted already: the requests below then write nothing to ``api_keys``
    (the first one's note of use would otherwise hold the others back at the key, not the insert)."""
    client.get("/api/v1/orders/none", headers=api_headers)
    return api_headers


def _at_once(count: int, call: Callable[[int], Any], release: Callable[[], None]) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(call, i) for i in range(count)]
        release()
        return [f.result(timeout=60) for f in futures]


def test_twenty_concurrent_puts_of_one_new_order_create_it_once(
    db: Database, reference: None, client: TestClient, used_key: dict[str, str]
) -> None:
    payload = _payload()
    with _inserts_held_back(db, "orders", 20) as release:
        responses = _at_once(
            20, lambda _i: client.put("/api/v1/orders/SO-RACE", json=payload, headers=used_key), release
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 19}, [(r.status_code, r.text[:200]) for r in responses]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 1
        kinds = list(session.scalars(select(OrderEvent.kind)))
    assert kinds == ["created"]  # the others changed nothing


def test_two_new_orders_with_one_vin_store_one_and_name_the_vin_for_the_other(
    db: Database, reference: None, client: TestClient, used_key: dict[str, str]
) -> None:
    def put(i: int) -> Any:
        payload = _payload(vin=VIN, buyer_email=f"buyer{i}@example.com")
        return client.put(f"/api/v1/orders/SO-{i}", json=payload, headers=used_key)

    with _inserts_held_back(db, "orders", 2) as release:
        first, second = _at_once(2, put, release)
    assert sorted((first.status_code, second.status_code)) == [201, 422], (first.text, second.text)
    refused = first if first.status_code == 422 else second
    assert refused.headers["content-type"] == "application/problem+json"
    [error] = refused.json()["errors"]
    assert (error["field"], error["code"]) == ("vin", "duplicate"), error
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Order).where(Order.vin == VIN)) == 1


def test_the_database_holds_one_live_order_per_vin(
    db: Database, reference: None, client: TestClient, used_key: dict[str, str]
) -> None:
    """The partial unique index: a cancelled order frees its VIN, and cannot take it back while a
    live order has it."""
    put = client.put
    assert put("/api/v1/orders/A", json=_payload(vin=VIN), headers=used_key).status_code == 201
    cancel = {"production_status": ProductionStatus.CANCELLED.value}
    assert put("/api/v1/orders/A/status", json=cancel, headers=used_key).status_code == 200
    assert put("/api/v1/orders/B", json=_payload(vin=VIN), headers=used_key).status_code == 201
    reopen = put("/api/v1/orders/A/status", json={"production_status": "ordered"}, headers=used_key)
    assert reopen.status_code == 422, reopen.text
    assert reopen.json()["errors"][0]["code"] == "duplicate"
    # Written around the service, the database itself refuses a second live order with the VIN.
    with db.engine.connect() as conn:
        taken = False
        try:
            conn.execute(text("UPDATE orders SET production_status = 'ordered' WHERE order_number = 'A'"))
        except Exception as exc:  # the driver's IntegrityError
            taken = "unique" in str(exc).lower()
        conn.rollback()
    assert taken


def test_concurrent_creates_of_one_dealer_and_one_model_answer_201_once(
    db: Database, client: TestClient, used_key: dict[str, str]
) -> None:
    dealer = {"name": "Centre Malmö", "country": "SE", "email": "malmo@dealer.example", "language": "sv"}
    with _inserts_held_back(db, "dealers", 10) as release:
        dealers = _at_once(
            10, lambda _i: client.put("/api/v1/dealers/SE-RACE", json=dealer, headers=used_key), release
        )
    assert Counter(r.status_code for r in dealers) == {201: 1, 200: 9}, [r.text[:200] for r in dealers]
    model = {
        "name": "Nordlicht E60",
        "model_year": 2027,
        "powertrain": "BEV",
        "requires_security_pin": True,
        "offers_data_pass": True,
        "services": {"SE": ["navigation"]},
    }
    with _inserts_held_back(db, "vehicle_models", 10) as release:
        models = _at_once(
            10, lambda _i: client.put("/api/v1/models/E60", json=model, headers=used_key), release
        )
    assert Counter(r.status_code for r in models) == {201: 1, 200: 9}, [r.text[:200] for r in models]
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Dealer)) == 1
        assert session.scalar(select(func.count()).select_from(VehicleModel)) == 1
