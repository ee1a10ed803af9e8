"""OCPI 2.2.1 endpoints of the eMSP (SPEC §3.6): versions, version details, and the Tokens Sender
interface (list, real-time authorisation). Every answer is the OCPI envelope; a missing or unknown
credentials token is HTTP 401 (transport_and_format: "SHALL respond with 401"), with status 2000;
bad parameters are 400 with 2001; an unknown token on authorisation is 404 with 2004."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.identity import audit
from onboarding.identity.dependencies import rate_limits
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.transactions import in_one_thread
from vehicles.charging import ocpi_2_2_1 as ocpi
from vehicles.charging.models import OcpiParty

router = APIRouter(tags=["ocpi"])

# Per calling party (an operator's real-time authorisations come from its whole network) and per
# address for calls whose credentials fail.
FAILED_CREDENTIALS_LIMIT = "30/minute"
DEFAULT_LIMIT = 100


def _answer(
    status_code: int,
    data: Any,
    status: ocpi.Status,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        ocpi.envelope(data, status, message, now=utcnow()), status_code=status_code, headers=headers
    )


def _unauthorized() -> JSONResponse:
    return _answer(401, None, ocpi.Status.CLIENT_ERROR, "Unknown or missing credentials token")


def _too_many() -> JSONResponse:
    return _answer(429, None, ocpi.Status.CLIENT_ERROR, "Too many requests", {"Retry-After": "1"})


def _authenticated(request: Request, session: Session) -> OcpiParty | JSONResponse:
    settings = settings_of(request)
    limits = rate_limits(request)
    party = ocpi.party_for(session, request.headers.get("authorization"), settings)
    if party is None:
        ip = client_ip(request)
        if not limits.hit(FAILED_CREDENTIALS_LIMIT, "ocpi:credentials:ip", ip or "-"):
            return _too_many()
        audit.record(session, "ocpi_credentials_refused", now=utcnow(), account_id=None, actor="ocpi", ip=ip)
        session.commit()
        return _unauthorized()
    if not limits.hit(settings.rate_limit_ocpi_per_party, "ocpi:party", str(party.id)):
        return _too_many()
    return party


def _version_details_url(request: Request) -> str:
    return settings_of(request).public_url(f"/ocpi/{ocpi.VERSION}")


@router.get("/ocpi/versions", summary="OCPI versions")
async def versions(request: Request) -> Response:
    def work(session: Session) -> Response:
        found = _authenticated(request, session)
        if isinstance(found, Response):
            return found
        data = [ocpi.Version(version=ocpi.VERSION, url=_version_details_url(request)).model_dump()]
        return _answer(200, data, ocpi.Status.SUCCESS)

    return await in_one_thread(request, work)


@router.get(f"/ocpi/{ocpi.VERSION}", summary="OCPI 2.2.1 version details")
async def version_details(request: Request) -> Response:
    def work(session: Session) -> Response:
        found = _authenticated(request, session)
        if isinstance(found, Response):
            return found
        settings = settings_of(request)
        details = ocpi.VersionDetails(
            version=ocpi.VERSION,
            endpoints=[
                ocpi.Endpoint(
                    identifier="tokens",
                    role=ocpi.InterfaceRole.SENDER,
                    url=settings.public_url(f"/ocpi/{ocpi.VERSION}/tokens"),
                )
            ],
        )
        return _answer(200, details.model_dump(mode="json"), ocpi.Status.SUCCESS)

    return await in_one_thread(request, work)


def _int_parameter(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ValueError(f"{name}: a non-negative integer")
    return int(text)


def _date_parameter(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return ocpi.parse_ocpi_datetime(text)
    except ValueError:
        raise ValueError(f"{name}: an RFC 3339 date-time") from None


@router.get(f"/ocpi/{ocpi.VERSION}/tokens", summary="OCPI Tokens: list (Sender interface)")
async def list_tokens(request: Request) -> Response:
    def work(session: Session) -> Response:
        found = _authenticated(request, session)
        if isinstance(found, Response):
            return found
        try:
            offset = _int_parameter(request, "offset", 0)
            limit = _int_parameter(request, "limit", DEFAULT_LIMIT)
            date_from = _date_parameter(request, "date_from")
            date_to = _date_parameter(request, "date_to")
            after_text = request.query_params.get("after")
            after = ocpi.parse_cursor(after_text) if after_text is not None else None
        except ValueError as exc:
            return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, str(exc))
        settings = settings_of(request)
        page = ocpi.list_tokens(
            session,
            settings,
            date_from=date_from,
            date_to=date_to,
            offset=offset,
            limit=limit or DEFAULT_LIMIT,
            after=after,
        )
        headers = {"X-Total-Count": str(page.total), "X-Limit": str(ocpi.MAX_LIMIT)}
        if page.has_next and page.last is not None:
            query = {
                "offset": str(page.offset + len(page.tokens)),
                "limit": str(page.limit),
                "after": ocpi.cursor_text(page.last),
            }
            for name in ("date_from", "date_to"):
                if name in request.query_params:
                    query[name] = request.query_params[name]
            url = settings.public_url(f"/ocpi/{ocpi.VERSION}/tokens") + "?" + urlencode(query)
            headers["Link"] = f'<{url}>; rel="next"'
        data = [token.model_dump(mode="json") for token in page.tokens]
        return _answer(200, data, ocpi.Status.SUCCESS, headers=headers)

    return await in_one_thread(request, work)


@router.post(f"/ocpi/{ocpi.VERSION}/tokens/{{uid}}/authorize", summary="OCPI Tokens: real-time authorisation")
async def authorize(request: Request, uid: str) -> Response:
    body = await request.body()

    def work(session: Session) -> Response:
        found = _authenticated(request, session)
        if isinstance(found, Response):
            return found
        type_text = request.query_params.get("type", ocpi.TokenType.RFID.value)
        try:
            token_type = ocpi.TokenType(type_text)
        except ValueError:
            return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "type: a TokenType")
        if len(uid) > 36:
            return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "token_uid: at most 36 characters")
        location: ocpi.LocationReferences | None = None
        if body.strip():
            try:
                location = ocpi.LocationReferences.model_validate(json.loads(body))
            except (ValueError, ValidationError):
                return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "body: LocationReferences")
        try:
            info = ocpi.authorize(session, settings_of(request), uid, token_type, location)
        except ocpi.UnknownToken:
            return _answer(404, None, ocpi.Status.UNKNOWN_TOKEN, "Unknown Token")
        return _answer(200, info.model_dump(mode="json", exclude_none=True), ocpi.Status.SUCCESS)

    return await in_one_thread(request, work)
