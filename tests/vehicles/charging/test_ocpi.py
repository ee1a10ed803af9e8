"""OCPI 2.2.1 Tokens, eMSP side: every answer parsed through the specification's models."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import make_account
from tests.conftest import Database
from tests.vehicles.charging.ocpi_support import CARDS, CONTRACTS, card_uid, make_cards, register_party
from vehicles.charging import ocpi_2_2_1 as ocpi

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
TOKENS = "/ocpi/2.2.1/tokens"


@pytest.fixture
def party(db: Database, settings: Settings, reference: None) -> dict[str, str]:
    return register_party(db.factory, settings, NOW)[1]


def cards(db: Database, settings: Settings, count: int, **kwargs: Any) -> list[int]:
    account_id = make_account(
        db.factory, settings, NOW, email=f"d{count}{kwargs.get('start', 0)}@example.com"
    )
    with transaction(db.factory) as session:
        ids = make_cards(session, account_id, NOW, count, **kwargs)
        for i, card_id in enumerate(ids):  # distinct last_updated, some equal (tie-break by id)
            session.execute(
                update(CARDS)
                .where(CARDS.c.id == card_id)
                .values(last_updated=NOW + timedelta(seconds=i // 2))
            )
    return ids


def envelope_of(response: Any) -> ocpi.Envelope[Any]:
    parsed = ocpi.Envelope[Any].model_validate(response.json())
    assert abs(parsed.timestamp - datetime.now(UTC)) < timedelta(minutes=5)
    return parsed


def tokens_of(response: Any) -> list[ocpi.Token]:
    body = envelope_of(response)
    assert response.status_code == 200 and body.status_code == 1000
    return [ocpi.Token.model_validate(item) for item in body.data or []]


def next_link(response: Any) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    url, _, rel = link.partition(";")
    assert rel.strip() == 'rel="next"'
    parts = urlsplit(url.strip().removeprefix("<").removesuffix(">"))
    return f"{parts.path}?{parts.query}"


def test_versions_and_details(client: TestClient, party: dict[str, str]) -> None:
    response = client.get("/ocpi/versions", headers=party)
    body = envelope_of(response)
    assert response.status_code == 200 and body.status_code == 1000
    versions = [ocpi.Version.model_validate(v) for v in body.data or []]
    assert [v.version for v in versions] == ["2.2.1"]
    details_response = client.get(urlsplit(versions[0].url).path, headers=party)
    details = ocpi.VersionDetails.model_validate(envelope_of(details_response).data)
    assert [(e.identifier, e.role) for e in details.endpoints] == [("tokens", ocpi.InterfaceRole.SENDER)]
    assert urlsplit(details.endpoints[0].url).path == TOKENS


@pytest.mark.parametrize(
    "header",
    [None, "Token " + base64.b64encode(b"not-a-party").decode(), "Bearer x", "Token"],
)
def test_unknown_credentials_401(client: TestClient, party: dict[str, str], header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "/ocpi/versions"), ("GET", TOKENS), ("POST", f"{TOKENS}/X/authorize")]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert envelope_of(response).status_code == 2000


def test_unencoded_token_only_when_configured(db: Database, settings: Settings, reference: None) -> None:
    from onboarding.ops.app import create_app

    _, headers = register_party(db.factory, settings, NOW)
    raw = {"Authorization": "Token " + base64.b64decode(headers["Authorization"][6:]).decode()}
    for accept, expected in [(False, 401), (True, 200)]:
        configured = settings.model_copy(update={"ocpi_accept_unencoded_tokens": accept})
        with TestClient(create_app(configured, session_factory=db.factory)) as client:
            assert client.get("/ocpi/versions", headers=raw).status_code == expected
            assert client.get("/ocpi/versions", headers=headers).status_code == 200


def test_token_fields(client: TestClient, db: Database, settings: Settings, party: dict[str, str]) -> None:
    cards(db, settings, 1)
    [token] = tokens_of(client.get(TOKENS, headers=party))
    assert token.uid == card_uid(0) and token.type is ocpi.TokenType.RFID
    assert (token.country_code, token.party_id) == ("SE", "NLM")
    assert token.contract_id.startswith("SENLMC") and token.issuer == settings.brand_name
    assert token.valid and token.whitelist is ocpi.WhitelistType.ALLOWED_OFFLINE


def test_pagination_walk_with_changes(
    client: TestClient, db: Database, settings: Settings, party: dict[str, str]
) -> None:
    """Changing a token moves it to the end of the order (its last_updated is newer): walking the
    Link headers still yields every token exactly once; the changed one arrives in its new state."""
    ids = cards(db, settings, 23)
    url: str | None = f"{TOKENS}?limit=5&date_from=2031-03-01T12:00:00Z"
    seen: list[ocpi.Token] = []
    pages = 0
    while url:
        response = client.get(url, headers=party)
        assert response.headers["x-limit"] == str(ocpi.MAX_LIMIT)
        assert int(response.headers["x-total-count"]) == 23
        assert "date_from=2031-03-01T12%3A00%3A00Z" in response.headers.get(
            "link", "date_from=2031-03-01T12%3A00%3A00Z"
        )
        seen.extend(tokens_of(response))
        pages += 1
        if pages == 2:  # a token on an already-read page changes (blocked)
            with transaction(db.factory) as session:
                session.execute(
                    update(CARDS)
                    .where(CARDS.c.id == ids[1])
                    .values(state="blocked", last_updated=NOW + timedelta(hours=1))
                )
        url = next_link(response)
    uids = [t.uid for t in seen]
    assert sorted(set(uids)) == sorted(card_uid(i) for i in range(23))
    assert uids.count(card_uid(1)) == 2  # seen before the change and again, changed, at the end
    assert seen[-1].uid == card_uid(1) and not seen[-1].valid
    assert [t.last_updated for t in seen] == sorted(t.last_updated for t in seen) or pages > 1


def test_date_filters(client: TestClient, db: Database, settings: Settings, party: dict[str, str]) -> None:
    cards(db, settings, 6)  # last_updated: +0, +0, +1, +1, +2, +2 s
    window = tokens_of(
        client.get(TOKENS + "?date_from=2031-03-01T12:00:01Z&date_to=2031-03-01T12:00:02Z", headers=party)
    )
    assert [t.uid for t in window] == [card_uid(2), card_uid(3)]
    after = tokens_of(client.get(TOKENS + "?date_from=2031-03-01T12:00:02", headers=party))
    assert [t.uid for t in after] == [card_uid(4), card_uid(5)]
    before = tokens_of(client.get(TOKENS + "?date_to=2031-03-01T12:00:01Z", headers=party))
    assert [t.uid for t in before] == [card_uid(0), card_uid(1)]


@pytest.mark.parametrize(
    "query", ["after=x_1", "offset=-1", "limit=x", "date_from=yesterday", "date_to=2031-13-01T00:00:00Z"]
)
def test_bad_parameters_400(client: TestClient, party: dict[str, str], query: str) -> None:
    response = client.get(f"{TOKENS}?{query}", headers=party)
    assert response.status_code == 400 and envelope_of(response).status_code == 2001


def authorize(client: TestClient, party: dict[str, str], uid: str, **kwargs: Any) -> Any:
    return client.post(f"{TOKENS}/{uid}/authorize", headers=party, **kwargs)


def test_every_authorisation_answer(
    client: TestClient, db: Database, settings: Settings, party: dict[str, str]
) -> None:
    ids = cards(db, settings, 4)
    with transaction(db.factory) as session:
        session.execute(update(CARDS).where(CARDS.c.id == ids[1]).values(state="blocked"))
        session.execute(update(CARDS).where(CARDS.c.id == ids[2]).values(state="replaced"))
        contract_id = session.execute(CARDS.select().where(CARDS.c.id == ids[3])).one().contract_id
        session.execute(update(CONTRACTS).where(CONTRACTS.c.id == contract_id).values(ended_at=NOW))
    location = {"location_id": "LOC1", "evse_uids": ["EVSE1", "EVSE2"]}
    expected = [
        (card_uid(0), ocpi.AllowedType.ALLOWED, True),
        (card_uid(1), ocpi.AllowedType.BLOCKED, False),
        (card_uid(2), ocpi.AllowedType.BLOCKED, False),
        (card_uid(3), ocpi.AllowedType.EXPIRED, False),
    ]
    for uid, allowed, valid in expected:
        for kwargs in ({}, {"json": location}):
            response = authorize(client, party, uid, params={"type": "RFID"}, **kwargs)
            body = envelope_of(response)
            assert response.status_code == 200 and body.status_code == 1000
            info = ocpi.AuthorizationInfo.model_validate(body.data)
            assert (info.allowed, info.token.uid, info.token.valid) == (allowed, uid, valid)
            if kwargs and allowed is ocpi.AllowedType.ALLOWED:
                assert info.location == ocpi.LocationReferences.model_validate(location)
            else:
                assert info.location is None
            if not valid:
                assert info.token.whitelist is ocpi.WhitelistType.NEVER
    # The uid is case-insensitive (CiString); an unknown uid or another type is 404 / 2004, no data.
    assert authorize(client, party, card_uid(0).lower()).status_code == 200
    for uid, params in [("04FFFFFFFFFFFF", {}), (card_uid(0), {"type": "APP_USER"})]:
        response = authorize(client, party, uid, params=params)
        body = envelope_of(response)
        assert response.status_code == 404 and body.status_code == 2004 and "data" not in response.json()
    for params, content in [({"type": "CARD"}, None), ({}, b"{not json"), ({}, b'{"evse_uids": []}')]:
        response = authorize(client, party, card_uid(0), params=params, content=content)
        assert response.status_code == 400 and envelope_of(response).status_code == 2001


def test_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths[f"{TOKENS}/{{uid}}/authorize"]["post"]["tags"] == ["ocpi"]
