"""Time-travel tests of SPEC §3.1: due, deferred, late arrival, reminder, expiry, revocation."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from notifications.models import OutboxMessage
from onboarding.activation import invitations
from onboarding.activation.invitations import LinkState
from onboarding.activation.models import Invitation
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.conftest import NOW, Database, SmtpServer
from tests.helpers import dev_mailbox_links, link_in, order_payload, path_of, put_order, run_jobs
from vehicles.models import Order, OrderEvent, ProductionStatus
from vehicles.service import get_order, set_status

DAY = timedelta(days=1)


def test_invited_when_delivery_is_14_days_away_not_before(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 15 * DAY).date()))
    assert run_jobs(db.factory, smtp_settings, NOW).invited == 0
    assert smtp.mailbox.messages == []
    # A day later delivery is 14 days away: due.
    assert run_jobs(db.factory, smtp_settings, NOW + DAY).invited == 1
    assert len(smtp.mailbox.messages) == 1
    # Never twice.
    assert run_jobs(db.factory, smtp_settings, NOW + 2 * DAY).invited == 0
    assert len(smtp.mailbox.messages) == 1


def test_late_order_is_invited_at_once(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 2 * DAY).date()))
    assert run_jobs(db.factory, smtp_settings, NOW).sent == 1


def test_closed_orders_are_not_invited(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(
        db.factory,
        smtp_settings,
        "C",
        NOW,
        **order_payload((NOW + 2 * DAY).date(), production_status="cancelled"),
    )
    put_order(
        db.factory,
        smtp_settings,
        "D",
        NOW,
        **order_payload((NOW + 2 * DAY).date(), production_status="delivered"),
    )
    assert run_jobs(db.factory, smtp_settings, NOW).invited == 0


def test_date_moved_later_defers_and_moved_earlier_sends(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 30 * DAY).date()))
    # Moved earlier into the window: due at once.
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    put_order(
        db.factory,
        smtp_settings,
        "B",
        NOW,
        **order_payload((NOW + 10 * DAY).date(), buyer_email="b@example.com"),
    )
    # B's date moved later before sending: deferred.
    put_order(
        db.factory,
        smtp_settings,
        "B",
        NOW,
        **order_payload((NOW + 40 * DAY).date(), buyer_email="b@example.com"),
    )
    run_jobs(db.factory, smtp_settings, NOW)
    assert [m["To"] for m in smtp.mailbox.messages] == ["astrid@example.com"]
    run_jobs(db.factory, smtp_settings, NOW + 25 * DAY)
    assert [m["To"] for m in smtp.mailbox.messages] == ["astrid@example.com"]
    run_jobs(db.factory, smtp_settings, NOW + 26 * DAY)
    assert [m["To"] for m in smtp.mailbox.messages] == ["astrid@example.com", "b@example.com"]


def test_one_reminder_on_day_seven_with_the_same_link(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    [invitation_mail] = smtp.mailbox.messages
    run_jobs(db.factory, smtp_settings, NOW + 7 * DAY - timedelta(minutes=1))
    assert len(smtp.mailbox.messages) == 1
    report = run_jobs(db.factory, smtp_settings, NOW + 7 * DAY)
    assert report.reminded == 1
    reminder = smtp.mailbox.messages[1]
    assert link_in(reminder) == link_in(invitation_mail)
    assert reminder["Subject"] != invitation_mail["Subject"]
    run_jobs(db.factory, smtp_settings, NOW + 8 * DAY)
    run_jobs(db.factory, smtp_settings, NOW + 13 * DAY)
    assert len(smtp.mailbox.messages) == 2
    with db.factory() as session:
        invitation = session.scalars(select(Invitation)).one()
        assert invitation.reminded_at is not None and invitation.token_sealed is None


def test_each_order_timeline_shows_its_invitation_and_reminder(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    for number in ("A", "B"):
        put_order(
            db.factory,
            smtp_settings,
            number,
            NOW,
            **order_payload((NOW + 10 * DAY).date(), buyer_email=f"{number.lower()}@example.com"),
        )
    run_jobs(db.factory, smtp_settings, NOW)
    run_jobs(db.factory, smtp_settings, NOW + 7 * DAY)
    scheduler_kinds = ("invitation_created", "invitation_sent", "reminder_sent")
    with db.factory() as session:
        ids = {number: order_id for number, order_id in session.execute(select(Order.order_number, Order.id))}
        events = session.execute(
            select(OrderEvent.order_id, OrderEvent.kind, OrderEvent.at, OrderEvent.actor)
            .where(OrderEvent.kind.in_(scheduler_kinds))
            .order_by(OrderEvent.at, OrderEvent.id)
        ).all()
    for number in ("A", "B"):
        assert [(kind, at, actor) for order_id, kind, at, actor in events if order_id == ids[number]] == [
            ("invitation_created", NOW, "scheduler"),
            ("invitation_sent", NOW, "scheduler"),
            ("reminder_sent", NOW + 7 * DAY, "scheduler"),
        ]


def test_no_reminder_once_finished(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    token = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    with transaction(db.factory) as session:
        view = invitations.resolve_link(session, token, now=NOW + DAY)
        invitations.complete_activation(session, view, now=NOW + DAY)
    assert run_jobs(db.factory, smtp_settings, NOW + 7 * DAY).reminded == 0
    assert len(smtp.mailbox.messages) == 1


def test_link_valid_for_14_days_from_sending(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    token = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    with db.factory() as session:
        assert (
            invitations.resolve_link(session, token, now=NOW + 14 * DAY - timedelta(seconds=1)).state
            is LinkState.VALID
        )
        assert invitations.resolve_link(session, token, now=NOW + 14 * DAY).state is LinkState.EXPIRED
        assert invitations.resolve_link(session, token + "x", now=NOW).state is LinkState.UNKNOWN
    # Expired links are not re-invited automatically: the buyer asks for a new one.
    assert run_jobs(db.factory, smtp_settings, NOW + 15 * DAY).invited == 0


def test_expired_link_page_explains_and_shows_support(
    db: Database, reference: None, settings: Settings, client: TestClient
) -> None:
    put_order(db.factory, settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, settings, NOW)  # the real clock is later than NOW: the link has expired
    [link] = dev_mailbox_links(db.factory)
    page = client.get(path_of(link))
    assert page.status_code == 410
    assert "expired" in page.text.lower() or 'lang="sv"' in page.text
    assert "smartmobility@se.nordlicht-motors.example" in page.text
    assert 'action="/invitation/request"' in page.text


def test_new_invitation_revokes_the_previous_link(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    first = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    with transaction(db.factory) as session:
        invitations.reissue(
            session, get_order(session, "A"), now=NOW + DAY, actor="staff:test", reason="resend"
        )
    with db.factory() as session:
        assert invitations.resolve_link(session, first, now=NOW + DAY).state is LinkState.REVOKED
    run_jobs(db.factory, smtp_settings, NOW + DAY)
    assert len(smtp.mailbox.messages) == 2
    second = link_in(smtp.mailbox.messages[1]).rsplit("/", 1)[1]
    assert second != first
    with db.factory() as session:
        assert invitations.resolve_link(session, second, now=NOW + DAY).state is LinkState.VALID
        assert invitations.resolve_link(session, first, now=NOW + DAY).state is LinkState.REVOKED


def test_changed_email_revokes_and_reinvites(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    first = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    put_order(
        db.factory,
        smtp_settings,
        "A",
        NOW + DAY,
        **order_payload((NOW + 10 * DAY).date(), buyer_email="new@example.com"),
    )
    with db.factory() as session:
        assert invitations.resolve_link(session, first, now=NOW + DAY).state is LinkState.REVOKED
    run_jobs(db.factory, smtp_settings, NOW + DAY)
    assert [m["To"] for m in smtp.mailbox.messages] == ["astrid@example.com", "new@example.com"]
    with db.factory() as session:
        states = [
            (i.email, i.revoked_reason) for i in session.scalars(select(Invitation).order_by(Invitation.id))
        ]
    assert states == [("astrid@example.com", "superseded"), ("new@example.com", None)]


def test_cancelled_order_kills_the_link(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    run_jobs(db.factory, smtp_settings, NOW)
    token = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    with transaction(db.factory) as session:
        set_status(
            session, get_order(session, "A"), ProductionStatus.CANCELLED, now=NOW, actor="t", lead_days=14
        )
    with db.factory() as session:
        assert invitations.resolve_link(session, token, now=NOW + DAY).state is LinkState.REVOKED
    assert run_jobs(db.factory, smtp_settings, NOW + 7 * DAY).reminded == 0


def test_onboarded_buyer_is_not_invited_again_for_the_same_car(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    vin = "YV1ZWA8UDL1234567"
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date(), vin=vin))
    run_jobs(db.factory, smtp_settings, NOW)
    token = link_in(smtp.mailbox.messages[0]).rsplit("/", 1)[1]
    with transaction(db.factory) as session:
        view = invitations.resolve_link(session, token, now=NOW)
        invitations.complete_activation(session, view, now=NOW)
        session.execute(update(Order).where(Order.order_number == "A").values(production_status="cancelled"))
    # The order is replaced by a new one for the same car and buyer: no second invitation.
    put_order(db.factory, smtp_settings, "B", NOW, **order_payload((NOW + 10 * DAY).date(), vin=vin))
    assert run_jobs(db.factory, smtp_settings, NOW + DAY).invited == 0


def test_outbox_payload_is_encrypted_and_erased_after_delivery(
    db: Database, reference: None, smtp_settings: Settings, smtp: SmtpServer
) -> None:
    put_order(db.factory, smtp_settings, "A", NOW, **order_payload((NOW + 10 * DAY).date()))
    with transaction(db.factory) as session:
        rows = invitations.due_orders(session, today=NOW.date(), limit=10)
        prepared = [invitations.prepare_invitation(smtp_settings, o, d, m, now=NOW) for o, d, m in rows]
    with transaction(db.factory) as session:
        invitations.commit_prepared(session, smtp_settings, prepared, now=NOW)
    with db.factory() as session:
        message = session.scalars(select(OutboxMessage)).one()
        assert (
            message.payload is not None and b"/i/" not in message.payload and b"Astrid" not in message.payload
        )
    run_jobs(db.factory, smtp_settings, NOW)
    with db.factory() as session:
        message = session.scalars(select(OutboxMessage)).one()
        assert message.state == "sent" and message.payload is None
