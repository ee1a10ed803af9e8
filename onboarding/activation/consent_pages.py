"""The activation's consent steps (SPEC §3.4): terms, privacy notice, partner and marketing consents;
the billing address; the Data Pass. And the signed-in page that lists an ID's live consents and
withdraws the revocable ones (SPEC §3.10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from onboarding.activation import invitations, steps
from onboarding.activation.invitations import LinkView
from onboarding.activation.models import Invitation
from onboarding.activation.pages import _advance, at_step, step_page
from onboarding.core.clock import utcnow
from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.fields import KNOWN_COUNTRIES
from onboarding.core.i18n import N_, lazy_gettext
from onboarding.core.settings import DataPassProvider, Settings
from onboarding.identity import billing, consents, web_sessions
from onboarding.identity.accounts import MARKETING_EMAIL, MARKETING_SMS
from onboarding.identity.dependencies import signed_in
from onboarding.identity.models import Account, BillingAddress
from onboarding.web.app_state import settings_of
from onboarding.web.forms import csrf_protect
from onboarding.web.rendering import render
from onboarding.web.transactions import db_session
from vehicles.models import Dealer
from vehicles.service import add_event

router = APIRouter(include_in_schema=False)

Db = Annotated[Session, Depends(db_session)]
Csrf = Depends(csrf_protect)
AtTermsStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.TERMS))]
AtBillingStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.BILLING))]
AtDataPassStep = Annotated[tuple[LinkView, Account], Depends(at_step(steps.DATA_PASS))]
Me = Annotated[web_sessions.CurrentSession, Depends(signed_in)]

# A form's ticked box ("yes" is what the pages send; the rest are what browsers and clients send).
_TICKED = frozenset({"yes", "true", "on", "1"})
# Bounds the form fields' text; the services give a field error for anything over the column's length.
_TEXT = 1000


def _ticked(value: str) -> bool:
    return value.strip().lower() in _TICKED


# --- terms and consents ------------------------------------------------------------------------------


def _partners(session: Session, country: str) -> list[Dealer]:
    """The partners a buyer can share data with: the dealers of the order's country."""
    return list(session.scalars(select(Dealer).where(Dealer.country == country).order_by(Dealer.name)))


def _terms_page(
    request: Request,
    session: Session,
    view: LinkView,
    account: Account,
    *,
    values: dict[str, Any] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    assert view.order is not None
    settings = settings_of(request)
    partner = (values or {}).get("partner") or view.order.dealer_code
    defaults = {
        "partner": partner,
        "share_with_partner": consents.live(session, account.id, consents.PARTNER_DATA_SHARING, partner)
        is not None,
        "marketing_email": consents.live(session, account.id, MARKETING_EMAIL) is not None,
        "marketing_sms": consents.live(session, account.id, MARKETING_SMS) is not None,
    }
    return step_page(
        request,
        view,
        account,
        "activation/terms.html",
        {
            "terms_version": settings.terms_version,
            "privacy_version": settings.privacy_version,
            "partners": _partners(session, view.order.country),
            "values": {**defaults, **(values or {})},
        },
        errors=errors,
        status=status,
    )


@router.get("/activate/terms")
def terms_step(request: Request, session: Db, at: AtTermsStep) -> Response:
    view, account = at
    return _terms_page(request, session, view, account)


@router.post("/activate/terms", dependencies=[Csrf])
def terms_submit(
    request: Request,
    session: Db,
    at: AtTermsStep,
    accept_terms: Annotated[str, Form(max_length=10)] = "",
    accept_privacy: Annotated[str, Form(max_length=10)] = "",
    share_with_partner: Annotated[str, Form(max_length=10)] = "",
    partner: Annotated[str, Form(max_length=64)] = "",
    marketing_email: Annotated[str, Form(max_length=10)] = "",
    marketing_sms: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    view, account = at
    assert view.order is not None and view.invitation is not None
    now = utcnow()
    choices = consents.TermsChoices(
        accept_terms=_ticked(accept_terms),
        accept_privacy=_ticked(accept_privacy),
        share_with_partner=_ticked(share_with_partner),
        partner=partner,
        marketing_email=_ticked(marketing_email),
        marketing_sms=_ticked(marketing_sms),
    )
    partners = {dealer.code for dealer in _partners(session, view.order.country)}
    if not invitations.mark_step_done(session, view, Invitation.terms_done_at, now):
        return _advance(session, view)  # another tab did this step a moment ago
    try:
        consents.record_terms_step(
            session, settings_of(request), account, choices, partners=partners, now=now
        )
    except ValidationFailed as exc:
        session.rollback()  # the step stays open
        shown = {
            "accept_terms": choices.accept_terms,
            "accept_privacy": choices.accept_privacy,
            "share_with_partner": choices.share_with_partner,
            "partner": partner if partner in partners else view.order.dealer_code,
            "marketing_email": choices.marketing_email,
            "marketing_sms": choices.marketing_sms,
        }
        return _terms_page(request, session, view, account, values=shown, errors=exc.errors, status=422)
    add_event(session, view.order, "terms_accepted", "buyer", now)
    return _advance(session, view)


# --- billing address ---------------------------------------------------------------------------------


def _billing_values(view: LinkView, account: Account, stored: BillingAddress | None) -> dict[str, Any]:
    """What the form shows first: the stored address, else the ID's name and the order's country."""
    assert view.order is not None
    if stored is not None:
        return {name: getattr(stored, name) or "" for name in _BILLING_FIELDS}
    return {
        "kind": billing.PRIVATE,
        "recipient_name": f"{account.first_name} {account.last_name}",
        "country": view.order.country,
    }


_BILLING_FIELDS = tuple(billing.BillingForm.__dataclass_fields__)


def _billing_page(
    request: Request,
    view: LinkView,
    account: Account,
    values: dict[str, Any],
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    return step_page(
        request,
        view,
        account,
        "activation/billing.html",
        {"values": values, "countries": sorted(KNOWN_COUNTRIES)},
        errors=errors,
        status=status,
    )


@router.get("/activate/billing")
def billing_step(request: Request, session: Db, at: AtBillingStep) -> Response:
    view, account = at
    stored = billing.billing_address(session, account.id)
    return _billing_page(request, view, account, _billing_values(view, account, stored))


@router.post("/activate/billing", dependencies=[Csrf])
def billing_submit(
    request: Request,
    session: Db,
    at: AtBillingStep,
    kind: Annotated[str, Form(max_length=20)] = "",
    recipient_name: Annotated[str, Form(max_length=_TEXT)] = "",
    company_name: Annotated[str, Form(max_length=_TEXT)] = "",
    vat_id: Annotated[str, Form(max_length=_TEXT)] = "",
    street: Annotated[str, Form(max_length=_TEXT)] = "",
    street2: Annotated[str, Form(max_length=_TEXT)] = "",
    postal_code: Annotated[str, Form(max_length=_TEXT)] = "",
    city: Annotated[str, Form(max_length=_TEXT)] = "",
    region: Annotated[str, Form(max_length=_TEXT)] = "",
    country: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    view, account = at
    assert view.order is not None and view.invitation is not None
    form = billing.BillingForm(
        kind=kind,
        recipient_name=recipient_name,
        company_name=company_name,
        vat_id=vat_id,
        street=street,
        street2=street2,
        postal_code=postal_code,
        city=city,
        region=region,
        country=country,
    )
    now = utcnow()
    if not invitations.mark_step_done(session, view, Invitation.billing_done_at, now):
        return _advance(session, view)  # another tab did this step a moment ago
    try:
        billing.save_billing(session, account, form, now=now)
    except ValidationFailed as exc:
        session.rollback()  # the step stays open
        values = {name: getattr(form, name) for name in _BILLING_FIELDS}
        return _billing_page(request, view, account, values, errors=exc.errors, status=422)
    add_event(session, view.order, "billing_checked", "buyer", now)
    return _advance(session, view)


# --- Data Pass ---------------------------------------------------------------------------------------

ACCEPT, DECLINE = "accept", "decline"


def _provider(settings: Settings, view: LinkView) -> DataPassProvider | None:
    assert view.order is not None
    return settings.data_pass_providers.get(view.order.country)


def _data_pass_page(
    request: Request,
    view: LinkView,
    account: Account,
    *,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Response:
    return step_page(
        request,
        view,
        account,
        "activation/data_pass.html",
        {"provider": _provider(settings_of(request), view)},
        errors=errors,
        status=status,
    )


@router.get("/activate/data-pass")
def data_pass_step(request: Request, at: AtDataPassStep) -> Response:
    view, account = at
    return _data_pass_page(request, view, account)


@router.post("/activate/data-pass", dependencies=[Csrf])
def data_pass_submit(
    request: Request, session: Db, at: AtDataPassStep, choice: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    view, account = at
    assert view.order is not None and view.invitation is not None
    settings = settings_of(request)
    provider = _provider(settings, view)
    now = utcnow()
    country = view.order.country
    if provider is not None and choice not in (ACCEPT, DECLINE):
        problem = FieldError("choice", N_("Choose whether you want the Data Pass."), "required")
        return _data_pass_page(request, view, account, errors=[problem], status=422)
    if not invitations.mark_step_done(session, view, Invitation.data_pass_done_at, now):
        return _advance(session, view)  # another tab did this step a moment ago
    if provider is None:
        # Not offered in the buyer's country: nothing to agree to, the flow goes on.
        add_event(session, view.order, "data_pass_declined", "buyer", now, f"not available in {country}")
    elif choice == ACCEPT:
        consents.grant(
            session,
            account,
            consents.DATA_PASS,
            version=consents.text_version(settings, consents.DATA_PASS),
            source=consents.ACTIVATION,
            now=now,
            subject=country,
        )
        add_event(session, view.order, "data_pass_accepted", "buyer", now, provider.name)
    else:
        add_event(session, view.order, "data_pass_declined", "buyer", now)
    return _advance(session, view)


# --- the ID's consents ---------------------------------------------------------------------------------

_CONSENT_NOTICES = {"withdrawn": N_("Your consent was withdrawn.")}


def _consents_page(
    request: Request,
    session: Session,
    me: web_sessions.CurrentSession,
    *,
    notice: str = "",
    problem: str | None = None,
    status: int = 200,
) -> Response:
    settings = settings_of(request)
    records = consents.live_consents(session, me.account.id)
    dealer_codes = {r.subject for r in records if r.kind == consents.PARTNER_DATA_SHARING and r.subject}
    dealers = (
        {d.code: d for d in session.scalars(select(Dealer).where(Dealer.code.in_(dealer_codes)))}
        if dealer_codes
        else {}
    )
    return render(
        request,
        "activation/consents.html",
        {
            "account": me.account,
            "signed_in_as": me.account.email,
            "records": records,
            "withdrawable": consents.WITHDRAWABLE,
            "dealers": dealers,
            "providers": settings.data_pass_providers,
            "notice": lazy_gettext(_CONSENT_NOTICES[notice]) if notice in _CONSENT_NOTICES else None,
            "problem": lazy_gettext(problem) if problem else None,
            "errors": {},
        },
        status=status,
        language=me.account.language,
    )


@router.get("/account/consents")
def consents_page(request: Request, session: Db, me: Me, notice: str = "") -> Response:
    return _consents_page(request, session, me, notice=notice)


@router.post("/account/consents", dependencies=[Csrf])
def withdraw_consent(
    request: Request, session: Db, me: Me, consent: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    """Withdraw one of the ID's revocable consents; the record stays, with its withdrawal time."""
    record = (
        consents.withdraw_record(session, me.account.id, int(consent), now=utcnow())
        if consent.isascii() and consent.isdigit() and len(consent) < 19
        else None
    )
    if record is None:
        # Already withdrawn (a second click), not the ID's or not revocable: the list as it is now.
        return _consents_page(
            request, session, me, problem=N_("That consent is not in force any more."), status=409
        )
    session.commit()
    return RedirectResponse("/account/consents?notice=withdrawn", status_code=303)
