"""Setting up and finding one's way: `onboarding serve --port` makes its banner, pages and the links its
scheduler emails follow the port (unless ONBOARDING_PUBLIC_BASE_URL is set), `make serve PORT=…` passes
it on, a second `onboarding demo` says how to get an API key, and /api/docs is served from the bundled
Swagger UI under the Content-Security-Policy. (The docs rendering in Chromium: test_api_docs_browser.py.)"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.api.keys import authenticate
from onboarding.api.models import ApiKey
from onboarding.core.clock import utcnow
from onboarding.core.db import make_engine, make_session_factory, transaction
from onboarding.core.settings import Settings
from onboarding.ops import all_models, migrations
from onboarding.ops.demo import seed_demo
from tests.conftest import free_port
from tests.helpers import dev_mailbox_links

ROOT = Path(__file__).resolve().parents[2]
ONBOARDING = [sys.executable, "-m", "onboarding.ops.cli"]


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ONBOARDING_DATABASE_URL": database_url,
            "ONBOARDING_SECRET_KEY": "s" * 48,
            **extra,
        }
    )
    return env


def _serve_until_invited(tmp_path: Path, port: int, **extra_env: str) -> tuple[str, list[str]]:
    """Seeds the demo orders into a fresh SQLite file, runs `onboarding serve --port` on it until its
    scheduler has put invitations in the development mailbox; returns its output and their links."""
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    migrations.upgrade(url)
    assert all_models.TABLE_MODULES
    factory = make_session_factory(make_engine(url))
    with transaction(factory) as session:
        seed_demo(session, Settings(database_url=url, _env_file=None), now=utcnow())
    server = subprocess.Popen(
        [*ONBOARDING, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(url, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        links: list[str] = []
        while time.monotonic() < deadline and len(links) < 4:
            time.sleep(0.5)
            links = dev_mailbox_links(factory)
        assert len(links) >= 4, links
        # The server answers on that port.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    return output, links


@pytest.mark.slow
def test_serve_port_sets_the_banner_and_the_links_its_scheduler_emails(tmp_path: Path) -> None:
    port = free_port()
    output, links = _serve_until_invited(tmp_path, port)
    own = f"http://127.0.0.1:{port}"
    assert f"Serving on {own}  (public base URL {own})" in output, output
    assert f"{own}/dev/mailbox" in output and f"{own}/api/docs" in output, output
    assert ":8000" not in output, output
    assert all(link.startswith(f"{own}/i/") for link in links), links


@pytest.mark.slow
def test_configured_public_base_url_wins_over_the_port(tmp_path: Path) -> None:
    port = free_port()
    public = "https://onboarding.nordlicht-motors.example"
    output, links = _serve_until_invited(tmp_path, port, ONBOARDING_PUBLIC_BASE_URL=public)
    assert f"Serving on http://127.0.0.1:{port}  (public base URL {public})" in output, output
    assert f"{public}/dev/mailbox" in output, output
    assert all(link.startswith(f"{public}/i/") for link in links), links


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_serve_passes_host_and_port_on() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve", "PORT=8731", "HOST=0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    serve = dry_run.stdout.strip().splitlines()[-1]
    assert shlex.split(serve)[-5:] == ["serve", "--host", "0.0.0.0", "--port", "8731"], serve
    default = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve"], cwd=ROOT, capture_output=True, text=True
    )
    assert shlex.split(default.stdout.strip().splitlines()[-1])[-4:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
    ]


def test_second_demo_run_says_the_data_exists_and_how_to_get_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = _env(url)
    first = subprocess.run([*ONBOARDING, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "Demo API key (shown once): onb_" in first.stdout
    assert "already exists" not in first.stdout

    second = subprocess.run([*ONBOARDING, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "onb_" not in second.stdout + second.stderr  # no key printed again
    assert "Demo data already exists" in second.stdout, second.stdout
    commands = [line.strip() for line in second.stdout.splitlines() if line.strip().startswith("onboarding ")]
    assert commands == ["onboarding api-keys create 'demo order system'"], second.stdout

    # The command printed works as printed, and gives a key the API accepts.
    created = subprocess.run(
        [*ONBOARDING, *shlex.split(commands[0])[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("onb_")
    factory = make_session_factory(make_engine(url))
    with factory() as session:
        assert authenticate(session, key) is not None
        assert session.scalars(select(ApiKey.name)).all() == ["demo order system", "demo order system"]


_INLINE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def test_api_docs_use_the_bundled_swagger_ui_under_the_content_security_policy(client: TestClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    # Every script, style sheet and icon from this server: no CDN.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/static/swagger-ui/") for source in sources), sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
    bundle = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"]
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle.text)
    assert version and int(version.group(1)) >= 5, "Swagger UI 5 or later is needed for OpenAPI 3.1"
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")

    # The page's one inline script is allowed by its hash, here only; nothing else is loosened.
    policy = page.headers["content-security-policy"]
    scripts = _INLINE.findall(page.text)
    assert len(scripts) == 1 and "SwaggerUIBundle(" in scripts[0]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in policy
    assert "unsafe-inline' " not in policy.split("script-src")[1] and "unsafe-eval" not in policy
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "script-src" not in client.get("/login").headers["content-security-policy"]
    assert "script-src" not in bundle.headers["content-security-policy"]


def test_the_default_public_base_url_is_an_address_a_browser_can_open() -> None:
    from onboarding.ops.cli import local_base_url

    assert local_base_url("127.0.0.1", 8731) == "http://127.0.0.1:8731"
    assert local_base_url("localhost", 8000) == "http://localhost:8000"
    assert local_base_url("0.0.0.0", 8731) == "http://127.0.0.1:8731"  # every interface: this machine's
    assert local_base_url("::", 8731) == "http://127.0.0.1:8731"
    assert local_base_url("::1", 8731) == "http://[::1]:8731"
