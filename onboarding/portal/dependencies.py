"""Who is signed in to the portal: the staff cookie and the dependencies every portal page uses
(``staff_signed_in``, ``staff_with_role``). ``tests/portal/test_tenancy_route_table.py`` requires
it on every /portal route but the login and invitation pages."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.portal import staff_sessions
from onboarding.portal.models import StaffMember
from onboarding.web.app_state import settings_of
from onboarding.web.problems import AnsweredInstead
from onboarding.web.rendering import render
from onboarding.web.transactions import db_session

STAFF_COOKIE = "onb_staff"


def current_staff(request: Request, session: Session) -> staff_sessions.CurrentStaff | None:
    return staff_sessions.lookup(
        session, settings_of(request), request.cookies.get(STAFF_COOKIE), now=utcnow()
    )


def staff_signed_in(request: Request, session: Session = Depends(db_session)) -> StaffMember:
    """The signed-in staff member (both factors passed); otherwise a redirect to the portal login,
    or to the second-factor step a half-finished login is at."""
    current = current_staff(request, session)
    if current is None:
        raise AnsweredInstead(
            RedirectResponse(f"/portal/login?next={quote(request.url.path)}", status_code=303)
        )
    if current.stage != staff_sessions.FULL:
        raise AnsweredInstead(RedirectResponse("/portal/login/verify", status_code=303))
    return current.staff


def staff_with_role(*roles: str) -> Callable[..., StaffMember]:
    """``staff_signed_in`` for pages only these roles may use; anyone else gets a 403 page.
    ``required_roles`` on the dependency lets the route-table test find and check them."""

    def allowed(request: Request, staff: StaffMember = Depends(staff_signed_in)) -> StaffMember:
        if staff.role not in roles:
            raise AnsweredInstead(
                render(request, "portal/forbidden.html", {"staff": staff, "wide": True}, status=403)
            )
        return staff

    allowed.required_roles = roles  # type: ignore[attr-defined]
    return allowed


def set_staff_cookie(request: Request, response: RedirectResponse, token: str) -> None:
    response.set_cookie(
        STAFF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings_of(request).secure_cookies,
        path="/portal",
    )
