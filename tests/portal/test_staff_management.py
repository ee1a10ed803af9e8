"""Dealer admins invite, deactivate and invite anew their own dealer's agents (and no one else); platform admins
create any role; other roles are refused the staff pages (403). Every change is audited with the
staff member who made it; bad input names the field and creates nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from onboarding.core.settings import Settings
from onboarding.identity.models import AuditEvent
from onboarding.ops.app import create_app
from onboarding.portal.models import StaffMember
from tests.account_support import emails_to, link_to
from tests.conftest import Database
from tests.helpers import csrf, run_jobs
from tests.portal.portal_support import add_dealer, make_staff, signed_in_staff, staff_login


def _member(db: Database, email: str) -> StaffMember | None:
    with db.factory() as session:
        return session.scalar(select(StaffMember).where(StaffMember.email == email))


def test_dealer_admin_manages_only_their_agents(db: Database, settings: Settings, reference: None) -> None:
    add_dealer(db.factory, "SE-02", "SE")
    admin_id, admin_secret = make_staff(
        db.factory, "admin@se01.example", "dealer_admin", dealer="SE-01", enrolled_with=settings
    )
    make_staff(db.factory, "admin2@se01.example", "dealer_admin", dealer="SE-01", enrolled_with=settings)
    other_id, _ = make_staff(
        db.factory, "agent@se02.example", "dealer_agent", dealer="SE-02", enrolled_with=settings
    )
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as admin:
        signed_in_staff(admin, "admin@se01.example", admin_secret)
        listed = admin.get("/portal/staff")
        assert listed.status_code == 200 and "agent@se02.example" not in listed.text  # another dealer's

        bad = admin.post("/portal/staff", data={**csrf(admin), "name": "Nils", "email": "nope"})
        assert bad.status_code == 422 and 'id="email-error"' in bad.text
        # The form cannot make a platform admin or another dealer's staff: a dealer agent of SE-01 it is.
        made = admin.post(
            "/portal/staff",
            data={
                **csrf(admin),
                "name": "Nils Agent",
                "email": "nils@se01.example",
                "role": "platform_admin",
                "dealer": "SE-02",
            },
            follow_redirects=False,
        )
        assert made.status_code == 303
        nils = _member(db, "nils@se01.example")
        assert nils is not None and (nils.role, nils.dealer_code) == ("dealer_agent", "SE-01")
        run_jobs(db.factory, settings, datetime.now(UTC) + timedelta(minutes=1))
        assert len(emails_to(db.factory, "nils@se01.example")) == 1

        # Their own agent: deactivated. Another dealer's agent: not found. Another admin: not allowed.
        assert admin.post(f"/portal/staff/{nils.id}/deactivate", data=csrf(admin)).status_code == 200
        nils = _member(db, "nils@se01.example")
        assert nils is not None and nils.deactivated_at is not None
        assert admin.post(f"/portal/staff/{other_id}/deactivate", data=csrf(admin)).status_code == 404
        second_admin = _member(db, "admin2@se01.example")
        assert second_admin is not None
        assert admin.post(f"/portal/staff/{second_admin.id}/deactivate", data=csrf(admin)).status_code == 403
        assert admin.post(f"/portal/staff/{admin_id}/deactivate", data=csrf(admin)).status_code == 403
    with db.factory() as session:
        events = [
            (e.kind, e.actor)
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.kind.in_(["staff_created", "staff_deactivated"]))
            )
        ]
    actor = f"staff:{admin_id} admin@se01.example"
    assert ("staff_created", actor) in events and ("staff_deactivated", actor) in events


def test_deactivated_staff_member_is_signed_out(db: Database, settings: Settings, reference: None) -> None:
    _admin_id, admin_secret = make_staff(
        db.factory, "root@brand.example", "platform_admin", enrolled_with=settings
    )
    agent_id, agent_secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as admin, TestClient(app) as agent:
        signed_in_staff(admin, "root@brand.example", admin_secret)
        signed_in_staff(agent, "agent@se01.example", agent_secret)
        assert agent.get("/portal/staff").status_code == 403  # a dealer agent may not manage staff
        assert agent.get("/portal/orders").status_code == 200
        made = admin.post(
            "/portal/staff",
            data={
                **csrf(admin),
                "name": "Mia Market",
                "email": "mia@se.example",
                "role": "market_agent",
                "country": "SE",
            },
            follow_redirects=False,
        )
        assert made.status_code == 303
        mia = _member(db, "mia@se.example")
        assert mia is not None and (mia.role, mia.country, mia.dealer_code) == ("market_agent", "SE", None)
        missing_country = admin.post(
            "/portal/staff",
            data={**csrf(admin), "name": "Max", "email": "max@se.example", "role": "market_agent"},
        )
        assert missing_country.status_code == 422 and 'id="country-error"' in missing_country.text
        assert admin.post(f"/portal/staff/{agent_id}/deactivate", data=csrf(admin)).status_code == 200
        assert agent.get("/portal/orders", follow_redirects=False).status_code == 303  # signed out


def test_a_new_invitation_is_a_fresh_start(db: Database, settings: Settings, reference: None) -> None:
    """For a forgotten password, a lost authenticator or a deactivated account: the old password and
    sessions stop working at once, the new link sets a password, and the first login enrols again."""
    admin_id, admin_secret = make_staff(
        db.factory, "admin@se01.example", "dealer_admin", dealer="SE-01", enrolled_with=settings
    )
    agent_id, agent_secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as admin, TestClient(app) as agent:
        signed_in_staff(admin, "admin@se01.example", admin_secret)
        signed_in_staff(agent, "agent@se01.example", agent_secret)
        assert admin.post(f"/portal/staff/{agent_id}/deactivate", data=csrf(admin)).status_code == 200
        assert admin.post(f"/portal/staff/{agent_id}/reinvite", data=csrf(admin)).status_code == 200
        assert (
            admin.post(f"/portal/staff/{admin_id}/reinvite", data=csrf(admin)).status_code == 403
        )  # not self
        assert admin.post(f"/portal/staff/{agent_id}/promote", data=csrf(admin)).status_code == 404
        member = _member(db, "agent@se01.example")
        assert member is not None and member.deactivated_at is None and member.totp_confirmed_at is None
        assert agent.get("/portal/orders", follow_redirects=False).status_code == 303  # signed out
        assert staff_login(agent, "agent@se01.example").status_code == 401  # the old password is gone

        run_jobs(db.factory, settings, datetime.now(UTC) + timedelta(minutes=1))
        invite = link_to(db.factory, "agent@se01.example", "/portal/invite/")
        fresh = "quartz-meadow-lantern-77"
        chosen = agent.post(
            invite,
            data={**csrf(agent), "password": fresh, "password_confirmation": fresh},
            follow_redirects=False,
        )
        assert chosen.status_code == 303
        signed = staff_login(agent, "agent@se01.example", fresh)
        assert signed.status_code == 303 and signed.headers["location"].startswith("/portal/login/enrol")
    with db.factory() as session:
        kinds = session.scalars(
            select(AuditEvent.kind).where(AuditEvent.actor == f"staff:{admin_id} admin@se01.example")
        ).all()
    assert "staff_reinvited" in kinds
