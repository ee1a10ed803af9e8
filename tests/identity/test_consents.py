"""Consents as records (SPEC §3.10): granted with the text's version, time and source; never a second
live record of the same kind and subject; withdrawn by setting ``withdrawn_at``, never deleted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from onboarding.core.db import transaction
from onboarding.core.errors import ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity import consents
from onboarding.identity.accounts import MARKETING_EMAIL, MARKETING_SMS
from onboarding.identity.models import Account, Consent
from tests.account_support import make_account
from tests.conftest import NOW, Database

LATER = NOW + timedelta(days=1)


def _records(db: Database, account_id: int, kind: str) -> list[Consent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(Consent)
                .where(Consent.account_id == account_id, Consent.kind == kind)
                .order_by(Consent.id)
            )
        )


def test_grant_records_version_time_source_and_subject_once(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        first = consents.grant(
            session,
            account,
            consents.PARTNER_DATA_SHARING,
            version="p-1",
            source=consents.ACTIVATION,
            now=NOW,
            subject="SE-01",
        )
        again = consents.grant(
            session,
            account,
            consents.PARTNER_DATA_SHARING,
            version="p-1",
            source=consents.ACTIVATION,
            now=LATER,
            subject="SE-01",
        )
        other = consents.grant(
            session,
            account,
            consents.PARTNER_DATA_SHARING,
            version="p-1",
            source=consents.ACTIVATION,
            now=LATER,
            subject="SE-02",
        )
        assert again.id == first.id and other.id != first.id
    rows = _records(db, account_id, consents.PARTNER_DATA_SHARING)
    assert [(r.subject, r.text_version, r.source, r.granted_at, r.withdrawn_at) for r in rows] == [
        ("SE-01", "p-1", "activation", NOW, None),
        ("SE-02", "p-1", "activation", LATER, None),
    ]


def test_a_new_text_version_replaces_the_live_record(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)  # terms recorded at ID creation
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        consents.grant(session, account, consents.TERMS, version="next", source="activation", now=LATER)
        live = consents.live(session, account_id, consents.TERMS)
        assert live is not None and live.text_version == "next"
    rows = _records(db, account_id, consents.TERMS)
    assert [(r.text_version, r.withdrawn_at) for r in rows] == [
        (settings.terms_version, LATER),
        ("next", None),
    ]


def test_withdraw_keeps_the_record(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    with transaction(db.factory) as session:
        account = session.get(Account, account_id)
        assert account is not None
        consents.grant(
            session, account, consents.DATA_PASS, version="v", source="activation", now=NOW, subject="SE"
        )
    with transaction(db.factory) as session:
        ended = consents.withdraw(session, account_id, consents.DATA_PASS, "SE", now=LATER)
        assert ended is not None
        assert consents.live(session, account_id, consents.DATA_PASS, "SE") is None
        assert consents.withdraw(session, account_id, consents.DATA_PASS, "SE", now=LATER) is None
    [row] = _records(db, account_id, consents.DATA_PASS)
    assert (row.subject, row.granted_at, row.withdrawn_at) == ("SE", NOW, LATER)


def test_withdraw_record_only_for_the_ids_own_revocable_consents(db: Database, settings: Settings) -> None:
    astrid = make_account(db.factory, settings, NOW)
    other = make_account(db.factory, settings, NOW, email="other@example.com")
    [terms] = _records(db, astrid, consents.TERMS)
    with transaction(db.factory) as session:
        account = session.get(Account, other)
        assert account is not None
        theirs = consents.grant(session, account, MARKETING_SMS, version="v", source="s", now=NOW)
        theirs_id = theirs.id
    with transaction(db.factory) as session:
        assert consents.withdraw_record(session, astrid, theirs_id, now=LATER) is None
        assert consents.withdraw_record(session, astrid, terms.id, now=LATER) is None
        assert consents.withdraw_record(session, other, theirs_id, now=LATER) is not None
    assert _records(db, other, MARKETING_SMS)[0].withdrawn_at == LATER
    assert _records(db, astrid, consents.TERMS)[0].withdrawn_at is None


def test_subjects_are_required_where_the_kind_names_whom(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    with db.factory() as session:
        account = session.get(Account, account_id)
        assert account is not None
        with pytest.raises(ValueError, match="needs"):
            consents.grant(session, account, consents.PARTNER_DATA_SHARING, version="v", source="s", now=NOW)
        with pytest.raises(ValueError, match="takes no"):
            consents.grant(session, account, consents.TERMS, version="v", source="s", now=NOW, subject="X")
        with pytest.raises(ValueError, match="unknown"):
            consents.grant(session, account, "newsletter", version="v", source="s", now=NOW)


def _choices(**overrides: object) -> consents.TermsChoices:
    values: dict[str, object] = {
        "accept_terms": True,
        "accept_privacy": True,
        "share_with_partner": False,
        "partner": "SE-01",
        "marketing_email": False,
        "marketing_sms": False,
    }
    values.update(overrides)
    return consents.TermsChoices(**values)  # type: ignore[arg-type]


def test_terms_step_refuses_everything_at_once_and_records_nothing(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    with db.factory() as session:
        before = len(session.scalars(select(Consent)).all())
        account = session.get(Account, account_id)
        assert account is not None
        with pytest.raises(ValidationFailed) as refused:
            consents.record_terms_step(
                session,
                settings,
                account,
                _choices(accept_terms=False, accept_privacy=False, share_with_partner=True, partner="US-01"),
                partners={"SE-01"},
                now=LATER,
            )
        assert {e.field for e in refused.value.errors} == {"accept_terms", "accept_privacy", "partner"}
        session.flush()
        assert len(session.scalars(select(Consent)).all()) == before


def test_terms_step_follows_the_marketing_boxes(db: Database, settings: Settings) -> None:
    account_id = make_account(db.factory, settings, NOW)
    for on in (True, False):
        with transaction(db.factory) as session:
            account = session.get(Account, account_id)
            assert account is not None
            consents.record_terms_step(
                session, settings, account, _choices(marketing_email=on), partners={"SE-01"}, now=LATER
            )
    rows = _records(db, account_id, MARKETING_EMAIL)
    assert [(r.text_version, r.source, r.withdrawn_at) for r in rows] == [
        (settings.privacy_version, "activation", LATER)
    ]
