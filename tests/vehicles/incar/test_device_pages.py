"""The /device confirmation page in the reader's language, with the login's QR code beside it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from onboarding.core.clock import utcnow
from onboarding.core.settings import Settings
from onboarding.web.rendering import LANGUAGE_COOKIE
from tests.account_support import log_in
from tests.conftest import Database
from tests.vehicles.incar.incar_support import PRIMARY_EMAIL, make_car, start_login


def test_the_confirmation_page_is_translated_and_shows_the_logins_qr_code(
    client: TestClient, db: Database, settings: Settings, reference: None
) -> None:
    car = make_car(db, settings)
    _authorization_id, _device_code, user_code = start_login(db, settings, car, utcnow())
    assert log_in(client, email=PRIMARY_EMAIL).status_code == 303
    client.cookies.set(LANGUAGE_COOKIE, "sv")
    page = client.get(f"/device?user_code={user_code}")
    assert page.status_code == 200 and "Logga in i den här bilen?" in page.text
    assert f'src="/device/qr.svg?user_code={user_code}"' in page.text
    image = client.get(f"/device/qr.svg?user_code={user_code}")
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/svg+xml")
    assert image.text.lstrip().startswith("<?xml") or "<svg" in image.text[:200]
