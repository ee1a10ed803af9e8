"""The in-car OAuth endpoints (SPEC §3.7, §4): authorization-server metadata (RFC 8414), device
authorization (RFC 8628), token (RFC 6749: device code, refresh, client credentials) and revocation
(RFC 7009). Errors are RFC 6749 JSON errors; each endpoint is rate-limited per caller address and per
client id (429 with ``Retry-After``, as an OAuth ``slow_down`` error)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from onboarding.core.clock import utcnow
from onboarding.identity.dependencies import rate_limits
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.transactions import in_one_thread
from vehicles.incar import oauth

router = APIRouter(tags=["in-car"])

# Limits per caller address (generous: cars on a mobile network share carrier NAT addresses) and per
# presented client id (a car polls every 5 s). Settings of the same names override them.
RETRY_AFTER_SECONDS = 60

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    "required": ["error"],
}


def _form_doc(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            name: {"type": "string", "description": text} for name, text in properties.items()
                        },
                        "required": required,
                    }
                }
            },
        }
    }


_CLIENT_FIELDS = {
    "client_id": "With client_secret_post (otherwise HTTP Basic authentication).",
    "client_secret": "With client_secret_post.",
}
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "RFC 6749 error", "content": {"application/json": {"schema": _ERROR}}},
    401: {"description": "invalid_client", "content": {"application/json": {"schema": _ERROR}}},
    429: {
        "description": "Too many requests (slow_down; see Retry-After)",
        "content": {"application/json": {"schema": _ERROR}},
    },
}


@router.get("/.well-known/oauth-authorization-server", summary="Authorization-server metadata (RFC 8414)")
async def authorization_server_metadata(request: Request) -> JSONResponse:
    return JSONResponse(
        oauth.metadata(settings_of(request)), headers={"Cache-Control": "public, max-age=3600"}
    )


async def _answer(request: Request, endpoint: str) -> Response:
    settings = settings_of(request)
    ip = client_ip(request)
    form = await _read_form(request)
    uri = settings.public_url(request.url.path)
    built = oauth.form_request(request.method, uri, request.headers, form or {})
    if isinstance(built, oauth.OAuthAnswer):
        return _response(built)
    if form is None:
        return _response(
            oauth.OAuthAnswer(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Send each parameter once, as application/x-www-form-urlencoded.",
                },
                list(oauth.JSON_HEADERS),
            )
        )
    presented = oauth.presented_client_id(built) if _decodable(built) else None
    limits = rate_limits(request)

    def work(session: Session) -> Response:
        if not limits.hit_all(
            (settings.rate_limit_incar_per_ip, f"incar:{endpoint}:ip", ip),
            (
                settings.rate_limit_incar_per_client,
                f"incar:{endpoint}:client",
                presented,
            ),
        ):
            return _too_many()
        result = oauth.answer(session, settings, endpoint, built, now=utcnow(), ip=ip)
        # Errors commit too: polls are recorded, failed client authentication and reuse (which
        # revokes the grant) are audited.
        session.commit()
        return _response(result)

    return await in_one_thread(request, work)


def _decodable(request: oauth.FormRequest) -> bool:
    try:
        oauth.presented_client_id(request)
    except (UnicodeDecodeError, ValueError):
        return False
    return True


async def _read_form(request: Request) -> dict[str, str] | None:
    """The form's parameters, or None when the body is no form or names a parameter twice (RFC 6749
    §3.1: parameters must not be repeated)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not media_type and not await request.body():
        return {}  # no parameters at all (a device authorization with HTTP Basic needs none)
    if media_type != "application/x-www-form-urlencoded":
        return None
    try:
        data: FormData = await request.form()
    except Exception:  # a body the form parser refuses is the caller's error
        return None
    items = [(key, value) for key, value in data.multi_items() if isinstance(value, str)]
    form = dict(items)
    return form if len(form) == len(items) else None


def _response(result: oauth.OAuthAnswer) -> Response:
    headers = {name: value for name, value in result.headers if name.lower() != "content-type"}
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("Pragma", "no-cache")
    return JSONResponse(result.body, status_code=result.status, headers=headers)


def _too_many() -> Response:
    return JSONResponse(
        {"error": "slow_down", "error_description": "Too many requests; try again later."},
        status_code=429,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.post(
    "/oauth/device_authorization",
    summary="Device authorization (RFC 8628 §3.1)",
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_doc({**_CLIENT_FIELDS, "scope": "Optional."}, []),
)
async def device_authorization(request: Request) -> Response:
    """Starts a device login: the device code to poll with, the user code the car shows, and the
    verification address (also as `verification_uri_complete`, for a QR code)."""
    return await _answer(request, "device_authorization")


@router.post(
    "/oauth/token",
    summary="Token endpoint (RFC 6749 §3.2; device code, refresh token, client credentials)",
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_doc(
        {
            **_CLIENT_FIELDS,
            "grant_type": "The device code grant type (RFC 8628), refresh_token or client_credentials.",
            "device_code": "For the device code grant.",
            "refresh_token": "For the refresh token grant (rotated on every use).",
            "scope": "Optional.",
        },
        ["grant_type"],
    ),
)
async def token(request: Request) -> Response:
    """Issues tokens. Access tokens live at most ten minutes; refresh tokens rotate on every use, and
    a reused one revokes its grant, except a retry within 30 s while its successor is unused, which
    gets the same answer again."""
    return await _answer(request, "token")


@router.post(
    "/oauth/revoke",
    summary="Token revocation (RFC 7009)",
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_doc(
        {
            **_CLIENT_FIELDS,
            "token": "The token to revoke.",
            "token_type_hint": "access_token or refresh_token.",
        },
        ["token"],
    ),
)
async def revoke(request: Request) -> Response:
    """Revokes an access token, or a refresh token together with its whole grant. Unknown tokens are
    answered 200 too."""
    return await _answer(request, "revocation")
