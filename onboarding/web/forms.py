"""Form plumbing: CSRF tokens and checks (with the text rules for every field), safe redirects."""

from __future__ import annotations

import secrets
from datetime import date
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from onboarding.core.errors import FieldError
from onboarding.core.i18n import N_
from onboarding.core.text_rules import check_texts
from onboarding.web.app_state import settings_of
from onboarding.web.csrf import CSRF_COOKIE, CSRF_FIELD
from onboarding.web.problems import AnsweredInstead, _field_name, error_page


def safe_next(target: str | None, default: str = "/account") -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative ``//``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


async def csrf_protect(request: Request) -> None:
    """Double-submit check on every state-changing form, plus an Origin check where browsers send one."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = {_origin(str(request.base_url)), _origin(settings_of(request).public_base_url)}
        if _origin(origin) not in expected:
            raise HTTPException(403, N_("Cross-site request refused."))
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    # compare_digest refuses non-ASCII strings (a TypeError, a 500): such a token is no token of ours.
    genuine = isinstance(sent, str) and cookie and sent.isascii() and cookie.isascii()
    if not genuine or not secrets.compare_digest(str(sent), str(cookie)):
        raise HTTPException(
            403, N_("The form has expired or came from another site. Reload the page and try again.")
        )
    # Every form runs this check, so the text rule covers every form field (onboarding.core.text_rules).
    fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    unsafe = check_texts([*fields, *(("field name", name) for name, _ in fields)], multiline=MULTILINE_FIELDS)
    if unsafe:
        detail = f"The field '{_field_name((unsafe[0].field,))}': {unsafe[0].text}"
        raise AnsweredInstead(error_page(request, 422, detail))


# Form fields that are free text over several lines (textareas), where line breaks and tabs belong.
MULTILINE_FIELDS = frozenset({"message", "note"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def by_field(errors: list[FieldError]) -> dict[str, list[FieldError]]:
    grouped: dict[str, list[FieldError]] = {}
    for error in errors:
        grouped.setdefault(error.field, []).append(error)
    return grouped


def parse_date(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return None
