"""Support requests, routed by the support directory and tracked as rows: the buyers' own, and the
late charging cards the scheduler finds (SPEC §3.6, §3.9)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from notifications import outbox
from notifications.email import outbox_email, render_email
from notifications.support import contact_for
from onboarding.activation.invitations import LinkView
from onboarding.activation.models import Invitation, SupportRequest
from onboarding.core.branding import brand
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import clean_country, clean_email
from onboarding.core.i18n import N_
from onboarding.core.settings import Settings
from onboarding.identity.models import Account
from vehicles.charging import cards
from vehicles.models import Dealer, Order
from vehicles.service import add_event

KINDS = {
    "new_invitation": "Request for a new invitation",
    "no_sms": "No SMS code received",
    "wrong_phone": "Wrong phone number",
    "vehicle_pairing": "Pairing a car with a code (check the registration papers)",
    "charging_card_overdue": "Charging card not delivered in time",
}


def record_request(
    session: Session,
    settings: Settings,
    *,
    kind: str,
    now: datetime,
    country: str | None = None,
    contact_email: str | None = None,
    order: Order | None = None,
    dealer: Dealer | None = None,
    invitation: Invitation | None = None,
    message: str | None = None,
    charging_card_id: int | None = None,
    actor: str = "buyer",
) -> SupportRequest:
    """Store the request, route it to the country's mailbox (or the dealer), and notify them."""
    if kind not in KINDS:
        raise ValueError(kind)
    country = (order.country if order else country) or None
    contact = contact_for(settings, country, dealer)
    request = SupportRequest(
        kind=kind,
        country=country,
        routed_to=contact.email,
        routed_to_dealer=contact.is_fallback,
        dealer_code=dealer.code if dealer else None,
        contact_email=contact_email,
        order_id=order.id if order else None,
        invitation_id=invitation.id if invitation else None,
        charging_card_id=charging_card_id,
        message=(message or "")[:2000] or None,
        status="open",
        created_at=now,
    )
    session.add(request)
    session.flush()
    rendered = render_email(
        "support_request",
        "en",
        {
            "brand": brand(settings),
            "support": contact,
            "request_id": request.id,
            "kind_label": KINDS[kind],
            "country": country,
            "contact_email": contact_email,
            "order_number": order.order_number if order else None,
            "dealer_name": dealer.name if dealer else None,
            "message": request.message,
        },
    )
    outbox.enqueue(
        session,
        outbox_email(
            settings,
            rendered,
            to=contact.email,
            language="en",
            purpose="support_request",
            reference_id=request.id,
        ),
        secret=settings.secret_key_value(),
        now=now,
    )
    if order is not None:
        add_event(session, order, "support_request", actor, now, f"{kind} -> {contact.email}")
    return request


def request_phone_help(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    view: LinkView,
    contact_email: str,
    kind: str,
    message: str = "",
) -> SupportRequest:
    """ "Wrong number?" or "no SMS?" from the activation's phone step, routed like the order (the dealer
    or support can correct the number). Any other ``kind`` is taken as a wrong number."""
    return record_request(
        session,
        settings,
        kind=kind if kind in ("wrong_phone", "no_sms") else "wrong_phone",
        now=now,
        contact_email=contact_email,
        order=view.order,
        dealer=view.dealer,
        invitation=view.invitation,
        message=message,
    )


def request_new_invitation(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    view: LinkView,
    email: str = "",
    country: str = "",
    message: str = "",
) -> SupportRequest:
    """A buyer asks for a new invitation. From a known (expired, revoked) link the order tells who
    and where; otherwise the buyer gives an email and a country ("OTHER" for one not listed).
    Raises ``ValidationFailed`` naming the bad field."""
    if view.order is not None:
        return record_request(
            session,
            settings,
            kind="new_invitation",
            now=now,
            order=view.order,
            dealer=view.dealer,
            invitation=view.invitation,
            contact_email=view.order.buyer_email,
            message=message,
        )
    errors: list[FieldError] = []
    contact_email = clean_email(email, "email", errors)
    if not country:
        errors.append(FieldError("country", N_("Choose your country, or Other."), "required"))
    code = clean_country(country, "country", errors) if country and country != "OTHER" else None
    if errors:
        raise ValidationFailed(errors)
    return record_request(
        session,
        settings,
        kind="new_invitation",
        now=now,
        country=code,
        contact_email=contact_email,
        message=message,
    )


def report_overdue_cards(session: Session, settings: Settings, *, now: datetime) -> int:
    """Every charging card late now becomes one support request (never two: the card is claimed),
    routed like its order, for the market's support or the dealer to chase; the buyer, the contract's
    holder, is told when it is done. Returns how many were reported."""
    late = cards.claim_overdue(session, now=now)
    for card in late:
        holder = session.get(Account, card.account_id)
        record_request(
            session,
            settings,
            kind="charging_card_overdue",
            now=now,
            country=card.country,
            contact_email=holder.email if holder else None,
            order=card.order,
            dealer=card.dealer,
            message=card.description,
            charging_card_id=card.card_id,
            actor="system",
        )
    return len(late)
