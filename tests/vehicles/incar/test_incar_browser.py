"""The in-car login end to end against a real uvicorn server, driven by two OAuth client libraries we did
not write: oauthlib's ``DeviceClient`` builds the device-code token request, authlib's ``OAuth2Client``
refreshes. A secondary user of the VIN approves in Chromium on a phone; the car sends the PIN; tokens;
services; refresh; reuse of a rotated refresh token revokes the grant and the car's next call is 401."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from oauthlib.oauth2 import DeviceClient

from onboarding.core.settings import Settings
from tests.account_support import PASSWORD
from tests.browser_support import LiveServer, live_server
from tests.conftest import Database
from tests.vehicles.incar.incar_support import PIN, SECONDARY_EMAIL, make_car

pytestmark = pytest.mark.browser


@pytest.fixture
def live(settings: Settings, db: Database, reference: None) -> Iterator[LiveServer]:
    with live_server(settings, db.factory) as server:
        yield server


def test_device_login_approved_by_a_secondary_user_in_chromium(
    page: Any, live: LiveServer, db: Database, settings: Settings, api_headers: dict[str, str]
) -> None:
    car = make_car(db, settings)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        credential = http.put(f"/api/v1/vehicles/{car.vin}/credential", headers=api_headers)
        assert credential.status_code in (200, 201)
        client_id, secret = credential.json()["client_id"], credential.json()["client_secret"]
        basic = httpx.BasicAuth(client_id, secret)
        metadata = http.get("/.well-known/oauth-authorization-server").json()

        started = http.post(metadata["device_authorization_endpoint"], auth=basic, data={}).json()
        device_code = started["device_code"]

        # The user scans the car's QR code: the verification page, logged in first, in Chromium.
        page.goto(started["verification_uri_complete"])
        page.fill("#email", SECONDARY_EMAIL)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/device?user_code=*")
        assert car.vin[-4:] in page.content()
        page.click("text=Yes, log in")
        page.wait_for_selector("h1")

        # The car polls before the PIN: still pending.
        device_body = DeviceClient(client_id).prepare_request_body(device_code)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        pending = http.post(metadata["token_endpoint"], auth=basic, content=device_body, headers=form)
        assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
        assert (
            http.post(
                "/incar/v1/device/pin", auth=basic, json={"device_code": device_code, "pin": PIN}
            ).status_code
            == 204
        )

        time.sleep(started.get("interval", 5))
        issued = http.post(metadata["token_endpoint"], auth=basic, content=device_body, headers=form)
        assert issued.status_code == 200, issued.text
        first = issued.json()
        services = http.get(
            "/incar/v1/services", headers={"Authorization": f"Bearer {first['access_token']}"}
        )
        assert services.status_code == 200 and services.json()["logged_in"] is True
        assert (
            http.get("/incar/v1/me", headers={"Authorization": f"Bearer {first['access_token']}"}).json()[
                "role"
            ]
            == "secondary"
        )

    oauth = OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_basic", timeout=30)
    second = oauth.refresh_token(metadata["token_endpoint"], refresh_token=first["refresh_token"])
    third = oauth.refresh_token(metadata["token_endpoint"], refresh_token=second["refresh_token"])
    with httpx.Client(base_url=live.url, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {third['access_token']}"}
        assert http.get("/incar/v1/services", headers=bearer).status_code == 200
        reused = http.post(
            metadata["token_endpoint"],
            auth=basic,
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        revoked = http.get("/incar/v1/services", headers=bearer)
        assert revoked.status_code == 401 and 'error="invalid_token"' in revoked.headers["www-authenticate"]
