"""Staff accounts: created on the command line (bad input named, nothing stored), invited by email,
a password chosen from the link (used once), then the first login enrols the authenticator (wrong
codes refused) and shows ten backup codes; later logins ask for a code; a backup code works once;
wrong passwords lock the account like an ID's; logging out ends the session."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from onboarding.ops.app import create_app
from onboarding.portal.models import StaffMember
from tests.account_support import emails_to, link_to
from tests.conftest import Database
from tests.helpers import csrf, run_jobs
from tests.portal.portal_support import STAFF_PASSWORD, code_at, make_staff, staff_login, totp_secret


def _cli(
    db: Database, settings: Settings, *args: str, command: str = "create"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONBOARDING_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        ONBOARDING_DATABASE_URL=db.url,
        ONBOARDING_SECRET_KEY=settings.secret_key_value(),
        ONBOARDING_PUBLIC_BASE_URL="http://testserver",
    )
    line = [sys.executable, "-m", "onboarding.ops.cli", "staff", command, *args]
    return subprocess.run(line, env=env, capture_output=True, text=True, check=False, timeout=120)


def test_invited_staff_member_sets_password_and_enrols_the_authenticator(
    db: Database, settings: Settings, reference: None
) -> None:
    bad = _cli(
        db,
        settings,
        "agent@dealer.example",
        "--role",
        "dealer_agent",
        "--name",
        "Ann Agent",
        "--dealer",
        "XX-99",
    )
    assert bad.returncode == 1 and "dealer: No dealer has this code." in bad.stderr
    bad_role = _cli(db, settings, "agent@dealer.example", "--role", "boss", "--name", "Ann Agent")
    assert bad_role.returncode == 1 and "role:" in bad_role.stderr
    with db.factory() as session:
        assert session.scalars(select(StaffMember)).all() == []
    made = _cli(
        db,
        settings,
        "Agent@Dealer.example",
        "--role",
        "dealer_agent",
        "--name",
        "Ann Agent",
        "--dealer",
        "SE-01",
    )
    assert made.returncode == 0, made.stderr
    assert "invitation email is queued" in made.stdout and "/portal/invite/" not in made.stdout
    again = _cli(
        db, settings, "agent@dealer.example", "--role", "dealer_agent", "--name", "Ann", "--dealer", "SE-01"
    )
    assert again.returncode == 1 and "email: A staff member has this email address already." in again.stderr

    run_jobs(db.factory, settings, datetime.now(UTC) + timedelta(minutes=1))
    mails = emails_to(db.factory, "agent@dealer.example")
    assert [m.subject for m in mails] == [f"Your {settings.brand_name} staff portal account"]
    invite = link_to(db.factory, "agent@dealer.example", "/portal/invite/")

    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        assert client.get(invite).status_code == 200
        weak = client.post(
            invite, data={**csrf(client), "password": "short", "password_confirmation": "short"}
        )
        assert weak.status_code == 422 and 'id="password-error"' in weak.text
        chosen = client.post(
            invite,
            data={**csrf(client), "password": STAFF_PASSWORD, "password_confirmation": STAFF_PASSWORD},
            follow_redirects=False,
        )
        assert chosen.status_code == 303 and chosen.headers["location"] == "/portal/login?set=1"
        assert client.get(invite).status_code == 410  # used once

        # Without both factors, no portal page.
        assert (
            client.get("/portal/orders", follow_redirects=False)
            .headers["location"]
            .startswith("/portal/login")
        )
        assert staff_login(client, "agent@dealer.example", "wrong-password-123").status_code == 401
        first = staff_login(client, "AGENT@dealer.example")
        assert first.status_code == 303 and first.headers["location"].startswith("/portal/login/enrol")
        assert (
            client.get("/portal/orders", follow_redirects=False).headers["location"] == "/portal/login/verify"
        )
        enrol = client.get("/portal/login/enrol")
        assert enrol.status_code == 200 and "data:image/svg+xml" in enrol.text
        with db.factory() as session:
            staff_id = session.scalars(select(StaffMember.id)).one()
        secret = totp_secret(db.factory, settings, staff_id)
        wrong = client.post("/portal/login/enrol", data={**csrf(client), "code": "000000"})
        assert wrong.status_code == 401
        now = datetime.now(UTC)
        codes_page = client.post("/portal/login/enrol", data={**csrf(client), "code": code_at(secret, now)})
        assert codes_page.status_code == 200
        codes = re.findall(r"<li>([a-z2-7]{5}-[a-z2-7]{5})</li>", codes_page.text)
        assert len(codes) == 10
        orders = client.get("/portal/orders")
        assert orders.status_code == 200 and "Ann Agent" in orders.text

        logout = client.post("/portal/logout", data=csrf(client), follow_redirects=False)
        assert logout.status_code == 303
        assert client.get("/portal/orders", follow_redirects=False).status_code == 303

        # The next login asks for a code; the code just used does not work again; a backup code works once.
        assert (
            staff_login(client, "agent@dealer.example").headers["location"].startswith("/portal/login/verify")
        )
        reused = client.post("/portal/login/verify", data={**csrf(client), "code": code_at(secret, now)})
        assert reused.status_code == 401
        backup = client.post(
            "/portal/login/verify", data={**csrf(client), "code": codes[0]}, follow_redirects=False
        )
        assert backup.status_code == 303 and backup.headers["location"] == "/portal/orders"
        client.post("/portal/logout", data=csrf(client))
        staff_login(client, "agent@dealer.example")
        assert client.post("/portal/login/verify", data={**csrf(client), "code": codes[0]}).status_code == 401
    with db.factory() as session:
        kinds = [e.kind for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        actors = {
            e.actor for e in session.scalars(select(AuditEvent).where(AuditEvent.kind == "staff_signed_in"))
        }
    for kind in (
        "staff_created",
        "staff_password_set",
        "staff_totp_enrolled",
        "staff_signed_in",
        "staff_backup_code_used",
    ):
        assert kind in kinds
    assert actors == {f"staff:{staff_id} agent@dealer.example"}


def test_wrong_passwords_lock_a_staff_account(db: Database, settings: Settings, reference: None) -> None:
    limited = settings.model_copy(update={"lockout_failures": 3})
    make_staff(db.factory, "admin@brand.example", "platform_admin", enrolled_with=limited)
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        for _ in range(2):
            assert staff_login(client, "admin@brand.example", "not-the-password-1").status_code == 401
        locked = staff_login(client, "admin@brand.example", "not-the-password-1")
        assert locked.status_code == 423 and "locked" in locked.text
        assert staff_login(client, "admin@brand.example").status_code == 423  # even the right one, for now
        # An unknown address answers like a wrong password.
        assert staff_login(client, "nobody@brand.example").status_code == 401


def test_wrong_enrolment_codes_lock_like_wrong_passwords(
    db: Database, settings: Settings, reference: None
) -> None:
    limited = settings.model_copy(update={"lockout_failures": 3})
    staff_id, _ = make_staff(db.factory, "new@brand.example", "platform_admin")  # not enrolled yet
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        assert staff_login(client, "new@brand.example").headers["location"].startswith("/portal/login/enrol")
        client.get("/portal/login/enrol")
        secret = totp_secret(db.factory, limited, staff_id)
        for _ in range(3):
            assert (
                client.post("/portal/login/enrol", data={**csrf(client), "code": "000000"}).status_code == 401
            )
        right = client.post(
            "/portal/login/enrol", data={**csrf(client), "code": code_at(secret, datetime.now(UTC))}
        )
        assert right.status_code == 423  # locked: not even the right code enrols now
        assert client.get("/portal/orders", follow_redirects=False).status_code == 303


def test_the_command_line_sends_a_fresh_invitation(db: Database, settings: Settings, reference: None) -> None:
    """``onboarding staff reinvite``: the way back for the last platform admin, who has nobody to ask."""
    staff_id, _secret = make_staff(db.factory, "root@brand.example", "platform_admin", enrolled_with=settings)
    unknown = _cli(db, settings, "nobody@brand.example", command="reinvite")
    assert unknown.returncode == 1 and "email: no staff member has the address" in unknown.stderr
    done = _cli(db, settings, "ROOT@brand.example", "--print-link", command="reinvite")
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    with db.factory() as session:
        member = session.get_one(StaffMember, staff_id)
        assert member.password_hash is None and member.totp_secret_sealed is None
        kinds = session.scalars(select(AuditEvent.kind).where(AuditEvent.actor == "cli")).all()
    assert "staff_reinvited" in kinds
    with TestClient(create_app(settings, session_factory=db.factory)) as client:
        assert client.get(link.removeprefix("http://testserver")).status_code == 200
