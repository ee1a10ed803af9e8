"""No input makes any route fail: every route of the application's route table, with every
parameter it reads (path, query, body) given hostile values one at a time, answers without a 500,
for a caller who is not signed in (the API with a key). A new route or parameter is tried without
being listed here; the portal's routes are tried signed in by tests/portal/test_portal_inputs.py."""

from __future__ import annotations

from fastapi.testclient import TestClient

from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.helpers import app_routes
from tests.route_inputs import server_errors


def test_no_input_gives_a_server_error(
    db: Database, settings: Settings, reference: None, api_headers: dict[str, str]
) -> None:
    app = create_app(settings, session_factory=db.factory)
    routes = [route for path, route in app_routes(app.routes) if not path.startswith("/portal")]
    failures: list[tuple[str, str, str, int]] = []
    tried = 0
    with TestClient(app, raise_server_exceptions=False) as client:
        for route in routes:
            headers = api_headers if route.path.startswith("/api/") else None
            sent, failed = server_errors(client, route, {}, headers=headers)
            tried += sent
            failures += failed
    assert len(routes) > 50 and tried > 1000 and failures == [], failures
