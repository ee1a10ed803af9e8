"""Invitations: the due rule's scheduler side, links, reminder, expiry, revocation, funnel state.

An invitation row and its email are written in one transaction (the outbox); the link's validity
(14 days) and the reminder (day 7) count from the moment the mail server accepted the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Select, String, Table, insert, literal, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.support import contact_for
from onboarding.activation import steps
from onboarding.activation.models import Invitation
from onboarding.core.branding import brand
from onboarding.core.crypto import hashes_match, new_token, seal_text, token_hash, unseal_text
from onboarding.core.db import UTCDateTime
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from vehicles import vehicle_link
from vehicles.models import CLOSED_STATUSES, Dealer, Order, OrderEvent, VehicleModel
from vehicles.schemas import InvitationState, OnboardingFunnel
from vehicles.service import add_event

TOKEN_PURPOSE = "invitation-token"  # noqa: S105 (a key-derivation label, not a secret)
PURPOSE_INVITATION = "invitation"
PURPOSE_REMINDER = "invitation_reminder"


class LinkState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED = "used"
    UNKNOWN = "unknown"


def link_for(settings: Settings, token: str) -> str:
    return settings.public_url(f"/i/{token}")


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# The email names the planned delivery date only while it lies this far after the day it is rendered
# (UTC): sent within a day of rendering (the outbox's retries included), it then names a date that has
# not passed in any time zone. Otherwise the templates say nothing about when the car comes.
DATE_NAMED_FROM = timedelta(days=2)


def _email(
    settings: Settings,
    *,
    now: datetime,
    template: str,
    purpose: str,
    invitation_id: int | None,
    email: str,
    language: str,
    order: Order | DueOrder,
    dealer: Dealer,
    model: VehicleModel,
    token: str,
    expires: datetime,
) -> outbox.NewMessage:
    """The invitation (or reminder) email in the buyer's language, ready for the outbox."""
    planned = order.planned_delivery_date
    context: dict[str, Any] = {
        "brand": brand(settings),
        "support": contact_for(settings, order.country, dealer),
        "delivery_date": planned if planned >= now.date() + DATE_NAMED_FROM else None,
        "valid_days": settings.invitation_valid_days,
        "expires_on": expires.date(),
    }
    # Only printed by the templates: filled into a form rendered once per language and context.
    printed = {
        "first_name": order.buyer_first_name,
        "model_name": model.name,
        "dealer_name": dealer.name,
        "link": link_for(settings, token),
    }
    rendered = render_email(template, language, context, printed=printed)
    return outbox_email(
        settings, rendered, to=email, language=language, purpose=purpose, reference_id=invitation_id
    )


@dataclass
class PreparedInvitation:
    """An invitation and its email, rendered before any lock is taken (see ``commit_prepared``);
    or, when the email could not be built from the order's data, why (``failure``)."""

    order_id: int
    values: dict[str, Any]
    message: outbox.NewMessage | None
    failure: str | None = None


def unpreparable(order: DueOrder, reason: str) -> PreparedInvitation:
    """An order whose invitation email cannot be built: ``commit_prepared`` claims it and records
    why on its timeline instead of storing an invitation, so that it does not come back every pass
    (a corrected order becomes due again through the order service's due rule)."""
    return PreparedInvitation(order.id, {"email": order.buyer_email}, None, reason)


@dataclass(frozen=True, slots=True)
class DueOrder:
    """What an invitation needs of a due order: read as plain columns, not as ORM objects, on the
    scheduler's bulk path."""

    id: int
    buyer_email: str
    buyer_first_name: str
    language: str
    country: str
    planned_delivery_date: date
    dealer_code: str
    model_code: str


_DUE_ORDER_COLUMNS = (
    Order.id,
    Order.buyer_email,
    Order.buyer_first_name,
    Order.language,
    Order.country,
    Order.planned_delivery_date,
    Order.dealer_code,
    Order.model_code,
)


def due_orders(session: Session, *, today: date, limit: int) -> list[tuple[DueOrder, Dealer, VehicleModel]]:
    """Orders whose invitation is due, oldest due first, with their dealer and model. No lock is
    taken: the claim in ``commit_prepared`` decides which scheduler invites an order."""
    query = (
        select(*_DUE_ORDER_COLUMNS)
        .where(Order.invite_after <= today)
        .order_by(Order.invite_after, Order.id)
        .limit(limit)
    )
    orders = [DueOrder(*row) for row in session.execute(query)]
    # A batch has few distinct dealers and models: load each once.
    dealers = {
        d.code: d
        for d in session.scalars(select(Dealer).where(Dealer.code.in_({o.dealer_code for o in orders})))
    }
    models = {
        m.code: m
        for m in session.scalars(
            select(VehicleModel).where(VehicleModel.code.in_({o.model_code for o in orders}))
        )
    }
    return [(o, dealers[o.dealer_code], models[o.model_code]) for o in orders]


def prepare_invitation(
    settings: Settings, order: DueOrder, dealer: Dealer, model: VehicleModel, *, now: datetime
) -> PreparedInvitation:
    """A new link and its rendered email; nothing is stored until ``commit_prepared``."""
    token = new_token()
    expires = now + timedelta(days=settings.invitation_valid_days)
    return PreparedInvitation(
        order_id=order.id,
        values={
            "order_id": order.id,
            "email": order.buyer_email,
            "language": order.language,
            "token_hash": token_hash(token),
            "token_sealed": seal_text(settings.secret_key_value(), TOKEN_PURPOSE, token),
            "created_at": now,
        },
        message=_email(
            settings,
            now=now,
            template="invitation",
            purpose=PURPOSE_INVITATION,
            invitation_id=None,  # set by commit_prepared once the row exists
            email=order.buyer_email,
            language=order.language,
            order=order,
            dealer=dealer,
            model=model,
            token=token,
            expires=expires,
        ),
    )


@dataclass
class StoredBatch:
    stored: int = 0
    # The emails, already claimed for sending by this process (with ``claim_lease``).
    claimed: list[outbox.ClaimedMessage] = field(default_factory=list)


def commit_prepared(
    session: Session,
    settings: Settings,
    prepared: list[PreparedInvitation],
    *,
    now: datetime,
    claim_lease: timedelta | None = None,
) -> StoredBatch:
    """Claim the prepared orders and store their invitations and emails.

    The claim is a conditional UPDATE of ``invite_after``: an order another scheduler claimed (or
    whose due date, status or email changed) since it was prepared updates no row and is dropped, so
    several schedulers never invite an order twice."""
    if not prepared:
        return StoredBatch()
    current = {
        row.id: row
        for row in session.execute(
            update(Order)
            .where(Order.id.in_([p.order_id for p in prepared]), Order.invite_after <= now.date())
            .values(invite_after=None, invited_at=now, onboarding_stage="invited")
            .returning(Order.id, Order.buyer_email, Order.production_status, Order.onboarded_at)
        )
    }
    if not current:
        return StoredBatch()
    keep: list[PreparedInvitation] = []
    failed: list[PreparedInvitation] = []
    for p in prepared:
        row = current.get(p.order_id)
        if row is None:
            continue  # another scheduler took it
        if row.production_status in CLOSED_STATUSES or row.onboarded_at is not None:
            session.execute(
                update(Order)
                .where(Order.id == p.order_id)
                .values(invited_at=None, onboarding_stage="not_due")
            )
        elif row.buyer_email != p.values["email"]:
            # The email changed after this one was rendered: due again, prepared afresh.
            session.execute(
                update(Order)
                .where(Order.id == p.order_id)
                .values(invite_after=now.date(), invited_at=None, onboarding_stage="not_due")
            )
        elif p.failure is not None:
            failed.append(p)
        else:
            keep.append(p)
    if failed:
        session.execute(
            update(Order)
            .where(Order.id.in_([p.order_id for p in failed]))
            .values(invited_at=None, onboarding_stage="not_due")
        )
        session.execute(
            insert(_ORDER_EVENTS),
            [
                {
                    "order_id": p.order_id,
                    "at": now,
                    "kind": "invitation_failed",
                    "actor": "scheduler",
                    "detail": p.failure,
                }
                for p in failed
            ],
        )
    if not keep:
        return StoredBatch()
    revoke_live(session, [p.order_id for p in keep], now=now, reason="superseded")
    # Multi-row INSERTs into the tables (Core, not the ORM's bulk path): this is the scheduler's hot
    # path. RETURNING without a guaranteed order keeps SQLite's INSERT batched; rows are matched by
    # their unique token hash.
    ids_by_hash = {
        row.token_hash: row.id
        for row in session.execute(
            insert(_INVITATIONS).returning(_INVITATIONS.c.id, _INVITATIONS.c.token_hash),
            [p.values for p in keep],
        )
    }
    claimed_messages = outbox.enqueue_many(
        session,
        [
            replace(p.message, reference_id=ids_by_hash[p.values["token_hash"]])
            for p in keep
            if p.message is not None
        ],
        secret=settings.secret_key_value(),
        now=now,
        claim_lease=claim_lease,
    )
    _scheduler_events(
        session, select(Order.id).where(Order.id.in_([p.order_id for p in keep])), "invitation_created", now
    )
    return StoredBatch(len(keep), claimed_messages)


_INVITATIONS = cast(Table, Invitation.__table__)
_INVITATION_EVENTS = ("invitation_created", "invitation_sent", "invitation_failed", "invitation_reissued")
_ORDER_EVENTS = cast(Table, OrderEvent.__table__)


def revoke_live(session: Session, order_ids: list[int], *, now: datetime, reason: str) -> None:
    session.execute(
        update(Invitation)
        .where(
            Invitation.order_id.in_(order_ids),
            Invitation.revoked_at.is_(None),
            Invitation.completed_at.is_(None),
        )
        .values(revoked_at=now, revoked_reason=reason, token_sealed=None, remind_at=None)
    )


def _scheduler_events(session: Session, order_ids: Select[int], kind: str, now: datetime) -> None:
    """One timeline event per order the query gives, in one INSERT ... SELECT: no row goes through
    Python (a batch has a thousand)."""
    rows = order_ids.add_columns(
        literal(now, UTCDateTime()), literal(kind, String()), literal("scheduler", String())
    )
    session.execute(insert(_ORDER_EVENTS).from_select(["order_id", "at", "kind", "actor"], rows))


def _order_events(session: Session, invitation_ids: list[int], kind: str, now: datetime) -> None:
    orders = select(_INVITATIONS.c.order_id).where(_INVITATIONS.c.id.in_(invitation_ids))
    _scheduler_events(session, orders, kind, now)


def delivery_hooks(settings: Settings) -> dict[str, outbox.DeliveryHook]:
    def invitation_delivered(session: Session, invitation_ids: list[int], now: datetime) -> None:
        # On the table (Core): this runs for every small group of delivered invitations.
        session.execute(
            update(_INVITATIONS)
            .where(_INVITATIONS.c.id.in_(invitation_ids), _INVITATIONS.c.sent_at.is_(None))
            .values(
                sent_at=now,
                expires_at=now + timedelta(days=settings.invitation_valid_days),
                remind_at=now + timedelta(days=settings.invitation_reminder_days),
            )
        )
        _order_events(session, invitation_ids, "invitation_sent", now)

    def reminder_delivered(session: Session, invitation_ids: list[int], now: datetime) -> None:
        _order_events(session, invitation_ids, "reminder_sent", now)

    return {PURPOSE_INVITATION: invitation_delivered, PURPOSE_REMINDER: reminder_delivered}


# A reason is shown to staff on the order's timeline; the outbox's reasons name at most the order's
# own email address.
_REASON_KEPT = 1000


def failure_hooks() -> dict[str, outbox.FailureHook]:
    """When an invitation or reminder email is given up (dead), the order's timeline says so and
    why (``invitation_failed`` / ``reminder_failed``), and the funnel shows it."""

    def recorder(kind: str) -> outbox.FailureHook:
        def record(session: Session, reasons: list[tuple[int, str]], now: datetime) -> None:
            ids = [invitation_id for invitation_id, _ in reasons]
            orders: dict[int, int] = {
                row.id: row.order_id
                for row in session.execute(
                    select(Invitation.id, Invitation.order_id).where(Invitation.id.in_(ids))
                )
            }
            rows = [
                {
                    "order_id": orders[i],
                    "at": now,
                    "kind": kind,
                    "actor": "scheduler",
                    "detail": reason[:_REASON_KEPT],
                }
                for i, reason in reasons
                if i in orders
            ]
            if rows:
                session.execute(insert(_ORDER_EVENTS), rows)

        return record

    return {PURPOSE_INVITATION: recorder("invitation_failed"), PURPOSE_REMINDER: recorder("reminder_failed")}


def build_failure(exc: Exception) -> str:
    """Why an email could not be built, for the order's timeline."""
    return f"the email could not be built: {type(exc).__name__}: {exc}"[:_REASON_KEPT]


def link_state(invitation: Invitation, order: Order, now: datetime) -> LinkState:
    """Whether the invitation's link still opens the flow, and if not, why."""
    if invitation.completed_at is not None:
        return LinkState.USED
    if (
        invitation.revoked_at is not None
        or order.production_status in CLOSED_STATUSES
        or invitation.email.lower() != order.buyer_email.lower()
    ):
        return LinkState.REVOKED
    if invitation.expires_at is not None and now >= invitation.expires_at:
        return LinkState.EXPIRED
    return LinkState.VALID


def queue_due_reminders(
    session: Session, settings: Settings, *, now: datetime, limit: int
) -> tuple[int, int]:
    """Queue the single day-7 reminder, with the same link, for invitations not yet finished.

    Returns (claimed, queued): claimed invitations that are no longer valid get no reminder."""
    candidates = (
        select(Invitation.id).where(Invitation.remind_at <= now).order_by(Invitation.remind_at).limit(limit)
    )
    if _is_postgresql(session):
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(session.scalars(candidates))
    if not ids:
        return 0, 0
    claimed = list(
        session.scalars(
            update(Invitation)
            .where(Invitation.id.in_(ids), Invitation.remind_at <= now)
            .values(remind_at=None)
            .returning(Invitation.id)
        )
    )
    rows = session.execute(
        select(Invitation, Order, Dealer, VehicleModel)
        .join(Order, Order.id == Invitation.order_id)
        .join(Dealer, Dealer.code == Order.dealer_code)
        .join(VehicleModel, VehicleModel.code == Order.model_code)
        .where(Invitation.id.in_(claimed))
    ).all()
    secret = settings.secret_key_value()
    reminders: list[outbox.NewMessage] = []
    for invitation, order, dealer, model in rows:
        sealed, invitation.token_sealed = invitation.token_sealed, None
        if sealed is None or link_state(invitation, order, now) is not LinkState.VALID:
            continue
        assert invitation.expires_at is not None
        try:
            token = unseal_text(secret, TOKEN_PURPOSE, sealed)
            reminder = _email(
                settings,
                now=now,
                template="invitation_reminder",
                purpose=PURPOSE_REMINDER,
                invitation_id=invitation.id,
                email=invitation.email,
                language=invitation.language,
                order=order,
                dealer=dealer,
                model=model,
                token=token,
                expires=invitation.expires_at,
            )
        except Exception as exc:  # this order's data only: the other reminders go out
            add_event(session, order, "reminder_failed", "scheduler", now, build_failure(exc))
            continue
        reminders.append(reminder)
        invitation.reminded_at = now
    outbox.enqueue_many(session, reminders, secret=secret, now=now)
    return len(claimed), len(reminders)


@dataclass
class LinkView:
    state: LinkState
    invitation: Invitation | None = None
    order: Order | None = None
    dealer: Dealer | None = None
    model: VehicleModel | None = None


def resolve_link(session: Session, token: str, *, now: datetime) -> LinkView:
    if not token or len(token) > 128:
        return LinkView(LinkState.UNKNOWN)
    row = session.execute(
        select(Invitation, Order, Dealer, VehicleModel)
        .join(Order, Order.id == Invitation.order_id)
        .join(Dealer, Dealer.code == Order.dealer_code)
        .join(VehicleModel, VehicleModel.code == Order.model_code)
        .where(Invitation.token_hash == token_hash(token))
    ).first()
    if row is None or not hashes_match(row[0].token_hash, token):
        return LinkView(LinkState.UNKNOWN)
    invitation, order, dealer, model = row
    return LinkView(link_state(invitation, order, now), invitation, order, dealer, model)


def mark_opened(session: Session, view: LinkView, *, now: datetime) -> None:
    assert view.invitation is not None and view.order is not None
    if view.invitation.opened_at is None:
        view.invitation.opened_at = now
        add_event(session, view.order, "invitation_opened", "buyer", now)
        record_stage(session, view.order, now=now)


def attach_account(
    session: Session, view: LinkView, account: Account, *, now: datetime, created: bool
) -> None:
    """The ID that activates this order: new (email proven by the link) or an existing one."""
    assert view.invitation is not None and view.order is not None
    view.invitation.account_id = account.id
    view.invitation.id_created_at = now
    view.order.account_id = account.id
    add_event(session, view.order, "id_created" if created else "id_linked", "buyer", now, account.email)
    session.flush()
    record_stage(session, view.order, now=now)


def mark_step_done(
    session: Session, view: LinkView, column: InstrumentedAttribute[datetime | None], now: datetime
) -> bool:
    """Records an activation step (``Invitation.*_done_at``) done, once: of two tabs submitting at the
    same time only one sets it (the other's conditional update waits for the first to commit and then
    finds it set). Returns whether this request set it; a step's route claims the step with it before
    it writes anything else, so the losing tab writes nothing."""
    invitation = view.invitation
    assert invitation is not None
    result = session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, column.is_(None))
        .values({column.key: now})
        .execution_options(synchronize_session=False)
    )
    session.refresh(invitation)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def complete_activation(session: Session, view: LinkView, *, now: datetime) -> None:
    """The link's single use: once the flow is finished it no longer opens."""
    assert view.invitation is not None and view.order is not None
    view.invitation.completed_at = now
    view.invitation.token_sealed = None
    view.invitation.remind_at = None
    view.order.onboarded_at = now
    view.order.invite_after = None
    add_event(session, view.order, "activation_completed", "buyer", now)
    session.flush()
    record_stage(session, view.order, now=now)


def reissue(session: Session, order: Order, *, now: datetime, actor: str, reason: str) -> None:
    """A new invitation (staff resend, support): the current link dies now; the next scheduler pass
    sends the new one through the same claim as any due order."""
    revoke_live(session, [order.id], now=now, reason=reason)
    order.invited_at = None
    order.invite_after = now.date()
    order.updated_at = now
    order.onboarding_stage = "not_due"  # due today: the new invitation starts the funnel again
    add_event(session, order, "invitation_reissued", actor, now, reason)


# The orders API's ``onboarding.stage``, first to last: the invitation's, one per step of the
# activation flow (``steps.STEPS``), and its end. The funnel reports the furthest stage reached.
FUNNEL_STAGES: tuple[str, ...] = (
    "not_due",
    "due",
    "invited",
    "opened",
    *(step.stage for step in steps.STEPS),
    "completed",
)


def record_stage(session: Session, order: Order, *, now: datetime) -> None:
    """Stores the order's funnel stage (``Order.onboarding_stage``) after the funnel moved; "due" is
    stored as "not_due" (it follows from the date)."""
    stage = funnel(session, order, now=now).stage
    stored = "not_due" if stage == "due" else stage
    if order.onboarding_stage != stored:
        order.onboarding_stage = stored


vehicle_link.on_linked_for_order.append(lambda session, order, now: record_stage(session, order, now=now))


def funnel(session: Session, order: Order, *, now: datetime) -> OnboardingFunnel:
    invitation = session.scalar(
        select(Invitation).where(Invitation.order_id == order.id).order_by(Invitation.id.desc()).limit(1)
    )
    state = None
    if invitation is not None:
        state = InvitationState(
            state="pending"
            if invitation.sent_at is None and invitation.revoked_at is None
            else link_state(invitation, order, now).value,
            created_at=invitation.created_at,
            sent_at=invitation.sent_at,
            expires_at=invitation.expires_at,
            opened_at=invitation.opened_at,
            reminded_at=invitation.reminded_at,
        )
    # Each step of the flow done counts, whether or not the model asks for it (an existing ID may
    # have set its PIN for another car).
    progress = steps.Progress(session, invitation)
    done_at = {step.name: step.funnel_at(progress) for step in steps.STEPS}
    reached = {
        "not_due": True,
        "due": order.invite_after is not None and order.invite_after <= now.date(),
        "invited": order.invited_at is not None,
        "opened": invitation is not None and invitation.opened_at is not None,
        **{step.stage: done_at[step.name] is not None for step in steps.STEPS},
        "completed": invitation is not None and invitation.completed_at is not None,
    }
    stage = next(name for name in reversed(FUNNEL_STAGES) if reached[name])
    # The latest invitation's fate, if the email was given up: the order timeline's newest event
    # about it says so (a new invitation, e.g. after the email was corrected, starts afresh).
    latest = session.execute(
        select(OrderEvent.kind, OrderEvent.detail)
        .where(OrderEvent.order_id == order.id, OrderEvent.kind.in_(_INVITATION_EVENTS))
        .order_by(OrderEvent.at.desc(), OrderEvent.id.desc())
        .limit(1)
    ).first()
    failure = latest.detail or "" if latest is not None and latest.kind == "invitation_failed" else None
    return OnboardingFunnel(
        stage=stage,
        invitation_failure=failure,
        invite_after=order.invite_after,
        invited_at=order.invited_at,
        opened_at=invitation.opened_at if invitation else None,
        id_created_at=invitation.id_created_at if invitation else None,
        phone_verified_at=done_at[steps.PHONE],
        pin_set_at=done_at[steps.PIN],
        terms_accepted_at=done_at[steps.TERMS],
        billing_checked_at=done_at[steps.BILLING],
        data_pass_at=done_at[steps.DATA_PASS],
        services_active_at=done_at[steps.SERVICES],
        vehicle_linked_at=done_at[steps.VEHICLE],
        charging_at=done_at[steps.CHARGING],
        completed_at=invitation.completed_at if invitation else None,
        invitation=state,
    )
