"""The activation flow's order of steps (SPEC §3.4). Each step is resumable: the next step is
derived from what is stored, never from where the browser was. Later steps (mobile, PIN, terms,
billing, Data Pass, services, vehicle link, charging) slot into ``next_step`` as they are built."""

from __future__ import annotations

from onboarding.models import Invitation


def next_step(invitation: Invitation) -> str | None:
    """The first unfinished step, or None when the flow is done."""
    if invitation.account_id is None:
        return "id"
    return None
