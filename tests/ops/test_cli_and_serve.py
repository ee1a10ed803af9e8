"""The command line as a newcomer uses it: demo + serve shows invitations in the development mailbox
within a minute; API keys are printed once and stored hashed; SMTP login from settings works."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr
from sqlalchemy import select

from onboarding.api.models import ApiKey
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database, Mailbox, free_port
from tests.helpers import order_payload, put_order, run_jobs


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update({"PYTHONPATH": str(Path(__file__).resolve().parents[2]), **extra})
    return env


@pytest.mark.slow
def test_demo_and_serve_show_invitations_in_the_dev_mailbox_within_a_minute(tmp_path: Path) -> None:
    """The README's serve path on the embedded defaults (SQLite under var/, development mailbox)."""
    env = _env(tmp_path)
    onboarding = [sys.executable, "-m", "onboarding.ops.cli"]
    demo = subprocess.run(
        [*onboarding, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert demo.returncode == 0, demo.stderr
    assert "Demo API key (shown once): onb_" in demo.stdout
    port = free_port()
    server = subprocess.Popen(
        [*onboarding, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        listing = ""
        while time.monotonic() < deadline:
            try:
                listing = httpx.get(f"http://127.0.0.1:{port}/dev/mailbox", timeout=2).text
            except httpx.TransportError:
                listing = ""
            if listing.count("/dev/mailbox/") >= 4:
                break
            time.sleep(0.5)
        assert listing.count("/dev/mailbox/") >= 4, listing
        assert (tmp_path / "var" / "onboarding.core.db").exists()
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert "/dev/mailbox" in output  # serve says where to look


def test_api_key_is_printed_once_and_stored_hashed(db: Database, tmp_path: Path) -> None:
    env = _env(tmp_path, ONBOARDING_DATABASE_URL=db.url, ONBOARDING_SECRET_KEY="k" * 48)
    command = [
        sys.executable,
        "-m",
        "onboarding.ops.cli",
        "api-keys",
        "create",
        "ERP Sweden",
        "--country",
        "se",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("onb_") and len(key) > 40
    with db.factory() as session:
        stored = session.scalars(select(ApiKey)).one()
    assert stored.countries == ["SE"] and stored.name == "ERP Sweden"
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (stored.key_hash, stored.prefix)


class _Authenticator:
    def __init__(self) -> None:
        self.logins: list[tuple[str, str]] = []

    def __call__(
        self, server: object, session: object, envelope: object, mechanism: str, data: object
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ("mailer", "s3cret-smtp-password"))


def test_smtp_login_from_settings(db: Database, reference: None, settings: Settings) -> None:
    mailbox, authenticator, port = Mailbox(), _Authenticator(), free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        configured = settings.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_username": "mailer",
                "smtp_timeout_seconds": 3.0,
            }
        )
        put_order(db.factory, configured, "A", NOW, **order_payload((NOW + timedelta(days=3)).date()))
        wrong = configured.model_copy(update={"smtp_password": SecretStr("wrong-password")})
        assert run_jobs(db.factory, wrong, NOW).sent == 0
        configured = configured.model_copy(update={"smtp_password": SecretStr("s3cret-smtp-password")})
        assert run_jobs(db.factory, configured, NOW + timedelta(hours=1)).sent == 1
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1
    assert ("mailer", "s3cret-smtp-password") in authenticator.logins
