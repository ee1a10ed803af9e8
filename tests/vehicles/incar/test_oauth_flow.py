"""The in-car OAuth server end to end on a real uvicorn server, driven by two client libraries we did
not write: authlib's ``OAuth2Client`` (httpx) and oauthlib's ``DeviceClient`` (requests it builds,
sent with httpx). The web approval is simulated in the database (the page is tested with it)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from oauthlib.oauth2 import DeviceClient
from sqlalchemy import select, update

from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import make_account
from tests.browser_support import LiveServer, live_server
from tests.conftest import NOW, Database
from vehicles.incar import device_login, tokens
from vehicles.incar.models import DeviceAuthorization, InCarGrant, RefreshToken, VehicleClient
from vehicles.models import Vehicle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.integrations.httpx_client import OAuthError as AuthlibOAuthError

VIN = "YV1DZ8256C2271234"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def live(settings: Settings, db: Database, reference: None) -> Iterator[LiveServer]:
    with live_server(settings, db.factory) as server:
        yield server


@pytest.fixture
def api(live: LiveServer, api_headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers=api_headers, timeout=30) as client:
        yield client


def provision(api: httpx.Client, vin: str = VIN) -> tuple[str, str, int]:
    response = api.put(f"/api/v1/vehicles/{vin}/credential")
    assert response.status_code in (200, 201), response.text
    body = response.json()
    return body["client_id"], body["client_secret"], response.status_code


def add_car(db: Database, model_code: str = "E40") -> None:
    with transaction(db.factory) as session:
        session.add(Vehicle(vin=VIN, model_code=model_code, country="SE", created_at=NOW))


def set_login(db: Database, device_code: str, **values: Any) -> None:
    with transaction(db.factory) as session:
        authorization = device_login.by_device_code(session, device_code)
        assert authorization is not None
        session.execute(
            update(DeviceAuthorization).where(DeviceAuthorization.id == authorization.id).values(**values)
        )


def start_login(live: LiveServer, client_id: str, secret: str) -> dict[str, Any]:
    response = httpx.post(live.url + "/oauth/device_authorization", data={}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return dict(response.json())


def poll(live: LiveServer, client_id: str, secret: str, device_code: str) -> httpx.Response:
    """One poll as oauthlib's DeviceClient words it (client_secret_basic)."""
    body = DeviceClient(client_id).prepare_request_body(device_code=device_code)
    return httpx.post(live.url + "/oauth/token", content=body, headers=FORM, auth=(client_id, secret))


def context(db: Database, access_token: str) -> tokens.AccessContext | None:
    with db.factory() as session:
        return tokens.access_context(session, access_token, now=utcnow())


def test_device_login_pin_tokens_refresh_retry_reuse_and_revocation(
    live: LiveServer, api: httpx.Client, db: Database, settings: Settings
) -> None:
    client_id, secret, status = provision(api)
    assert (client_id, status) == ("vehicle-" + VIN, 201)
    add_car(db)  # the E40 needs the security PIN
    account_id = make_account(db.factory, settings, NOW)

    metadata = httpx.get(live.url + "/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == live.url
    assert metadata["token_endpoint"] == live.url + "/oauth/token"
    assert metadata["device_authorization_endpoint"] == live.url + "/oauth/device_authorization"
    assert metadata["revocation_endpoint"] == live.url + "/oauth/revoke"
    assert set(metadata["grant_types_supported"]) == {DEVICE_GRANT, "refresh_token", "client_credentials"}
    assert metadata["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]

    login = start_login(live, client_id, secret)
    user_code = login["user_code"]
    assert len(user_code) == 9 and user_code[4] == "-"
    assert login["verification_uri"] == live.url + "/device"
    assert login["verification_uri_complete"] == f"{live.url}/device?user_code={user_code}"
    assert (login["expires_in"], login["interval"]) == (600, 5)
    device_code = login["device_code"]

    first = poll(live, client_id, secret, device_code)
    assert (first.status_code, first.json()["error"]) == (400, "authorization_pending")
    assert first.headers["cache-control"] == "no-store"
    fast = poll(live, client_id, secret, device_code)
    assert (fast.status_code, fast.json()["error"]) == (400, "slow_down")

    # Approved on the web by the user; the PIN is still missing, so the car keeps waiting.
    set_login(db, device_code, account_id=account_id, approved_at=NOW, last_polled_at=None)
    assert poll(live, client_id, secret, device_code).json()["error"] == "authorization_pending"
    set_login(db, device_code, pin_verified_at=NOW, last_polled_at=None)

    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_basic") as car:
        token = car.fetch_token(live.url + "/oauth/token", grant_type=DEVICE_GRANT, device_code=device_code)
        assert token["token_type"] == "Bearer" and token["expires_in"] == 600
        found = context(db, token["access_token"])
        assert found is not None and found.account_id == account_id and found.vin == VIN
        again = poll(live, client_id, secret, device_code)
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")

        rotated = car.refresh_token(live.url + "/oauth/token", refresh_token=token["refresh_token"])
        assert rotated["refresh_token"] != token["refresh_token"]
        # The answer was lost: the car sends the same refresh token again and gets the same successor.
        retry = httpx.post(
            live.url + "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
            auth=(client_id, secret),
        )
        assert retry.status_code == 200 and retry.json()["refresh_token"] == rotated["refresh_token"]
        assert retry.headers["cache-control"] == "no-store" and retry.headers["pragma"] == "no-cache"
        newest = car.refresh_token(live.url + "/oauth/token", refresh_token=rotated["refresh_token"])
        assert context(db, newest["access_token"]) is not None

        # The successor was used: the old token is now a reuse, and the whole grant ends.
        with pytest.raises(AuthlibOAuthError) as reuse:
            car.refresh_token(live.url + "/oauth/token", refresh_token=token["refresh_token"])
        assert reuse.value.error == "invalid_grant"
        assert context(db, newest["access_token"]) is None
        with db.factory() as session:
            assert session.scalars(select(InCarGrant.revoked_reason)).one() == tokens.REUSE


def test_secret_rotation_wrong_secret_client_credentials_and_revocation(
    live: LiveServer, api: httpx.Client, db: Database
) -> None:
    client_id, old_secret, _ = provision(api)
    _, secret, status = provision(api)
    assert status == 200
    token_url = live.url + "/oauth/token"
    for wrong in (old_secret, "wrong"):
        refused = httpx.post(token_url, data={"grant_type": "client_credentials"}, auth=(client_id, wrong))
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
        assert refused.headers["www-authenticate"].startswith("Basic")
    # client_secret_post works too.
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_post") as car:
        token = car.fetch_token(token_url, grant_type="client_credentials")
        assert "refresh_token" not in token
        own = context(db, token["access_token"])
        assert own is not None and own.account_id is None
        revoked = car.revoke_token(live.url + "/oauth/revoke", token=token["access_token"])
        assert revoked.status_code == 200
        assert context(db, token["access_token"]) is None
        unknown = car.revoke_token(live.url + "/oauth/revoke", token="no-such-token")
        assert unknown.status_code == 200
    nonsense = httpx.post(token_url, data={"grant_type": "password"}, auth=(client_id, secret))
    assert (nonsense.status_code, nonsense.json()["error"]) == (400, "unsupported_grant_type")
    repeated = httpx.post(
        token_url, content="grant_type=a&grant_type=b", headers=FORM, auth=(client_id, secret)
    )
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")


def test_denied_and_expired_logins(live: LiveServer, api: httpx.Client, db: Database) -> None:
    client_id, secret, _ = provision(api)
    denied = start_login(live, client_id, secret)["device_code"]
    set_login(db, denied, denied_at=NOW)
    assert poll(live, client_id, secret, denied).json()["error"] == "access_denied"
    expired = start_login(live, client_id, secret)["device_code"]
    set_login(db, expired, expires_at=utcnow() - timedelta(seconds=1))
    assert poll(live, client_id, secret, expired).json()["error"] == "expired_token"
    unknown = poll(live, client_id, secret, "no-such-code")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_grant")


def test_ten_concurrent_refreshes_yield_one_live_successor(
    live: LiveServer, api: httpx.Client, db: Database, settings: Settings
) -> None:
    client_id, secret, _ = provision(api)
    account_id = make_account(db.factory, settings, NOW)
    now = utcnow()
    with transaction(db.factory) as session:
        client = session.get_one(VehicleClient, client_id)
        authorization, _ = device_login.start(session, settings, client, "", now=now)
        authorization.account_id, authorization.approved_at = account_id, now
        grant = tokens.grant_for_device_login(session, authorization, now=now)
        first = tokens.issue(session, settings, grant, now=now)
        grant_id = grant.id

    barrier = threading.Barrier(10)
    answers: list[httpx.Response] = []

    def refresh() -> None:
        barrier.wait()
        answers.append(
            httpx.post(
                live.url + "/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                auth=(client_id, secret),
                timeout=60,
            )
        )

    threads = [threading.Thread(target=refresh) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({a.status_code for a in answers}) == [200], [
        a.text for a in answers if a.status_code != 200
    ]
    assert len({a.json()["refresh_token"] for a in answers}) == 1
    with db.factory() as session:
        rows = session.scalars(select(RefreshToken).where(RefreshToken.grant_id == grant_id)).all()
        assert len(rows) == 2 and sum(row.used_at is None for row in rows) == 1
        assert session.get_one(InCarGrant, grant_id).revoked_at is None


def test_credential_api_refuses_bad_vins_and_other_markets(
    live: LiveServer, api: httpx.Client, db: Database
) -> None:
    from onboarding.api.keys import create_api_key

    bad = api.put("/api/v1/vehicles/YV1DZ8256C22712/credential")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "vin"
    with transaction(db.factory) as session:
        _key, us_only = create_api_key(session, "US plant", now=NOW, countries=["US"])
    scoped = {"Authorization": f"Bearer {us_only}"}
    # No order or car for the VIN: only an unscoped key may provision it.
    refused = httpx.put(f"{live.url}/api/v1/vehicles/{VIN}/credential", headers=scoped)
    assert refused.status_code == 403
    add_car(db)  # a Swedish car: still not the key's market
    assert httpx.put(f"{live.url}/api/v1/vehicles/{VIN}/credential", headers=scoped).status_code == 403
    with db.factory() as session:
        assert session.scalar(select(VehicleClient)) is None
    openapi = httpx.get(live.url + "/openapi.json").json()
    for path in ("/oauth/token", "/oauth/device_authorization", "/oauth/revoke"):
        assert openapi["paths"][path]["post"]["tags"] == ["in-car"]
    assert "/api/v1/vehicles/{vin}/credential" in openapi["paths"]


def test_token_endpoint_is_rate_limited_per_client(live: LiveServer, api: httpx.Client) -> None:
    client_id, _secret, _ = provision(api)
    statuses = [
        httpx.post(
            live.url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")
        )
        for _ in range(61)
    ]
    assert {r.status_code for r in statuses[:60]} == {401}
    limited = statuses[60]
    assert limited.status_code == 429 and limited.json()["error"] == "slow_down"
    assert limited.headers["retry-after"] == "60"
