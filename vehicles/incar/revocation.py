"""Revocation reaches the car (issue 13, item 8): the in-car grants end when what they rest on ends.

- A user's link to a car ended (``vehicles.links.on_link_ended``): removing a secondary user, leaving,
  removing the car and replacing the primary user each end every affected user's link, one event per
  link, so the grants of (VIN, ID) end with it.
- An ID signed out of all its devices (``identity.web_sessions.on_signed_out_everywhere``): every grant
  of the ID, in every car.

Subscribing happens when this module is imported: every entry point imports it (through
``onboarding.ops.all_models``). The car's next call fails, since access tokens are looked up on each
call (``tokens.access_context``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from onboarding.identity import web_sessions
from vehicles import links
from vehicles.incar import tokens


@links.on_link_ended
def end_grants_of_link(session: Session, event: links.LinkEnded) -> None:
    if event.vin is None:
        return
    tokens.revoke_grants(
        session, reason=f"link_{event.reason}"[:40], now=event.at, vin=event.vin, account_id=event.account_id
    )


def end_grants_of_account(session: Session, account_id: int, now: datetime) -> None:
    tokens.revoke_grants(session, reason="signed_out_everywhere", now=now, account_id=account_id)


# identity sits below vehicles: it offers a list of callables rather than calling up.
_SIGNED_OUT_EVERYWHERE = getattr(web_sessions, "on_signed_out_everywhere", None)
if _SIGNED_OUT_EVERYWHERE is not None and end_grants_of_account not in _SIGNED_OUT_EVERYWHERE:
    _SIGNED_OUT_EVERYWHERE.append(end_grants_of_account)
