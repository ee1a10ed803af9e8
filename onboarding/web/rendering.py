"""Pages: the template environment, the page's language, rendering."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import ChoiceLoader, PackageLoader

from onboarding.core.i18n import (
    LANGUAGES,
    Text,
    make_environment,
    negotiate,
    normalise_language,
    use_language,
)
from onboarding.web.app_state import settings_of
from onboarding.web.csrf import CSRF_COOKIE, CSRF_FIELD, csrf_token

LANGUAGE_COOKIE = "onb_lang"


templates = make_environment(
    # Each package's pages live in its own templates/<package>/ (named, not imported: no layer rule
    # is bent by loading them here).
    ChoiceLoader(
        [
            PackageLoader(package, "templates")
            for package in (
                "onboarding.web",
                "onboarding.identity",
                "onboarding.activation",
                "onboarding.ops",
                "onboarding.portal",
                "vehicles.incar",
            )
        ]
    )
)


def page_language(request: Request, default: str | None = None) -> str:
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE), default):
        found = normalise_language(candidate)
        if found:
            return found
    return negotiate(request.headers.get("accept-language"))


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    language: str | None = None,
) -> HTMLResponse:
    settings = settings_of(request)
    lang = page_language(request, language)
    token = csrf_token(request)
    values = {
        "request": request,
        "brand": {"name": settings.brand_name, "colour": settings.brand_primary_colour},
        "csrf_field": CSRF_FIELD,
        "csrf_token": token,
        "lang": lang,
        "languages": LANGUAGES,
        "path": request.url.path,
        **context,
    }
    with use_language(lang):
        body = templates.get_template(template).render(values)
    response = HTMLResponse(body, status_code=status)
    secure = settings.secure_cookies
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax", secure=secure, path="/")
    if request.query_params.get("lang") and normalise_language(request.query_params["lang"]):
        response.set_cookie(
            LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=secure, path="/"
        )
    return response


def message_page(
    request: Request,
    title: Text,
    paragraphs: list[Text],
    actions: list[tuple[str, Text]] | None = None,
    *,
    status: int = 200,
    language: str | None = None,
) -> Response:
    context = {"title": title, "paragraphs": paragraphs, "actions": actions or []}
    return render(request, "web/message.html", context, status=status, language=language)
