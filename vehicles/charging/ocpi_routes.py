"""OCPI 2.2.1 endpoints of the eMSP (SPEC §3.6): versions, version details, and the Tokens Sender
interface (list, real-time authorisation). Every answer is the OCPI envelope; a missing or unknown
credentials token is HTTP 401 (transport_and_format: "SHALL respond with 401"), with status 2000;
bad parameters are 400 with 2001; an unknown token on authorisation is 404 with 2004."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.identity import audit
from onboarding.identity.dependencies import rate_limits
from onboarding.web.app_state import client_ip, settings_of
from onboarding.web.transactions import in_one_thread, point_read, read_in_one_thread
from vehicles.charging import ocpi_2_2_1 as ocpi

router = APIRouter(tags=["ocpi"])

# Per calling party (an operator's real-time authorisations come from its whole network) and per
# address for calls whose credentials fail.
FAILED_CREDENTIALS_LIMIT = "30/minute"
DEFAULT_LIMIT = 100
TOKEN_TYPES = {member.value: member for member in ocpi.TokenType}


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


def _party(request: Request, connection: Connection) -> int | None:
    """The calling party's id (and its call counted against its limit), or None when its
    credentials are unknown."""
    return ocpi.party_for(connection, request.headers.get("authorization"), settings_of(request))


async def _refused(request: Request, party: int | None) -> Response:
    """The answer to a call without known credentials (401, audited, limited per address) or over
    its party's limit (429)."""
    limits = rate_limits(request)
    if party is not None:
        return _too_many()
    ip = client_ip(request)
    if not limits.hit(FAILED_CREDENTIALS_LIMIT, "ocpi:credentials:ip", ip or "-"):
        return _too_many()

    def record(session: Session) -> Response:
        audit.record(session, "ocpi_credentials_refused", now=utcnow(), account_id=None, actor="ocpi", ip=ip)
        session.commit()
        return _unauthorized()

    return await in_one_thread(request, record)


def _within_limit(request: Request, party: int) -> bool:
    return rate_limits(request).hit(settings_of(request).rate_limit_ocpi_per_party, "ocpi:party", str(party))


async def _as_party(request: Request, work: Callable[[Connection, int], Response]) -> Response:
    """Runs ``work`` for an authenticated party within its limit, on a read connection; otherwise
    the refusal."""
    refused_party: list[int | None] = []

    def run(connection: Connection) -> Response | None:
        party = _party(request, connection)
        if party is None or not _within_limit(request, party):
            refused_party.append(party)
            return None
        return work(connection, party)

    answer = await read_in_one_thread(request, run, single_statement=True)
    return answer if answer is not None else await _refused(request, refused_party[0])


def _version_details_url(request: Request) -> str:
    return settings_of(request).public_url(f"/ocpi/{ocpi.VERSION}")


@router.get("/ocpi/versions", summary="OCPI versions")
async def versions(request: Request) -> Response:
    def work(_connection: Connection, _party: int) -> Response:
        data = [ocpi.Version(version=ocpi.VERSION, url=_version_details_url(request)).model_dump()]
        return _answer(200, data, ocpi.Status.SUCCESS)

    return await _as_party(request, work)


@router.get(f"/ocpi/{ocpi.VERSION}", summary="OCPI 2.2.1 version details")
async def version_details(request: Request) -> Response:
    def work(_connection: Connection, _party: int) -> Response:
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

    return await _as_party(request, work)


def _int_parameter(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
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
    def work(connection: Connection, _party: int) -> Response:
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
            Session(bind=connection),
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

    return await _as_party(request, work)


@router.post(f"/ocpi/{ocpi.VERSION}/tokens/{{uid}}/authorize", summary="OCPI Tokens: real-time authorisation")
async def authorize(request: Request, uid: str) -> Response:
    body = await request.body()
    header = request.headers.get("authorization")
    type_text = request.query_params.get("type", ocpi.TokenType.RFID.value)
    token_type = TOKEN_TYPES.get(type_text)
    location: ocpi.LocationReferences | None = None
    bad_body = False
    if body.strip():
        try:
            location = ocpi.LocationReferences.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            bad_body = True
    settings = settings_of(request)
    parameters = ocpi.authorization_parameters(settings, header, uid, token_type or ocpi.TokenType.RFID)
    row = None if parameters is None else await point_read(request, ocpi.AUTHORIZATION, parameters)
    found = ocpi.authorization_of(row, settings, location)
    # Credentials first: a caller we do not know learns nothing about its parameters.
    if found is None or not _within_limit(request, found.party_id):
        return await _refused(request, found.party_id if found else None)
    if token_type is None:
        return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "type: a TokenType")
    if len(uid) > 36:
        return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "token_uid: at most 36 characters")
    if bad_body:
        return _answer(400, None, ocpi.Status.INVALID_PARAMETERS, "body: LocationReferences")
    if found.info is None:
        return _answer(404, None, ocpi.Status.UNKNOWN_TOKEN, "Unknown Token")
    return Response(ocpi.authorization_json(found.info, now=utcnow()), media_type="application/json")
