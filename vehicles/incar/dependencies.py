"""Who calls the in-car API: the car's bearer token (``car_access``, RFC 6750) or the car itself by its
client credentials (``car_client``: ``client_secret_basic`` or ``client_secret_post``), and the request's
fields, sent as JSON or as a form (``request_fields``).

Refusals are RFC 9457 problem documents: the in-car API lives outside ``/api/``, whose generic handlers
would otherwise answer with an HTML page."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from onboarding.core.clock import utcnow
from onboarding.identity.dependencies import rate_limits
from onboarding.web.app_state import client_ip
from onboarding.web.problems import AnsweredInstead, problem
from onboarding.web.transactions import db_session
from vehicles.incar import clients, tokens
from vehicles.incar.models import VehicleClient

Db = Annotated[Session, Depends(db_session)]

# Per caller address: a guessing car (or someone posing as one) is slowed down long before a token or
# a secret could be found; a working car calls far less often.
BEARER_FAILURE_LIMIT = "30/minute;300/hour"
CLIENT_FAILURE_LIMIT = "10/minute;100/hour"
_FIELDS = "incar.fields"


def unauthorized(detail: str, *, error: str | None = "invalid_token", scheme: str = "Bearer") -> JSONResponse:
    """401 with the challenge RFC 6750 (bearer) or RFC 7617 (basic) asks for."""
    response = problem(401, "Unauthorized", detail)
    challenge = f'{scheme} realm="incar"'
    if error:
        challenge += f', error="{error}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def too_many(detail: str = "Too many attempts. Wait a few minutes and try again.") -> JSONResponse:
    response = problem(429, "Too many requests", detail)
    response.headers["Retry-After"] = "60"
    return response


async def request_fields(request: Request) -> dict[str, str]:
    """The body's fields, from JSON (an object) or a form; only string-like values are kept (numbers
    become text: a PIN sent as 1234). A body that is neither answers 400."""
    cached: dict[str, str] | None = request.scope.get(_FIELDS)
    if cached is not None:
        return cached
    fields: dict[str, str] = {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
    else:
        raw = await request.body()
        if raw.strip():
            try:
                data: Any = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                data = None
            if not isinstance(data, dict):
                raise AnsweredInstead(problem(400, "Malformed body", "Send a JSON object or a form."))
            fields = {
                str(name): str(value)
                for name, value in data.items()
                if isinstance(value, str | int) and not isinstance(value, bool)
            }
    request.scope[_FIELDS] = fields
    return fields


Fields = Annotated[dict[str, str], Depends(request_fields)]


def car_access(request: Request, session: Db) -> tokens.AccessContext:
    """The grant behind the request's bearer token; 401 (``invalid_token``) when there is none, it is
    unknown, expired or its grant was revoked."""
    limits = rate_limits(request)
    ip = client_ip(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        # RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
        raise AnsweredInstead(unauthorized("A bearer token is required.", error=None))
    if not limits.allows(BEARER_FAILURE_LIMIT, "incar-bearer", ip):
        raise AnsweredInstead(too_many())
    context = tokens.access_context(session, token.strip(), now=utcnow())
    if context is None:
        limits.hit(BEARER_FAILURE_LIMIT, "incar-bearer", ip)
        raise AnsweredInstead(unauthorized("The access token is invalid, expired or revoked."))
    return context


CarAccess = Annotated[tokens.AccessContext, Depends(car_access)]


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def car_client(request: Request, session: Db, fields: Fields) -> VehicleClient:
    """The car calling for itself: ``Authorization: Basic`` or ``client_id`` and ``client_secret`` in
    the body. 401 (``invalid_client``) otherwise."""
    limits = rate_limits(request)
    ip = client_ip(request)
    credentials = _basic_credentials(request.headers.get("authorization", ""))
    if credentials is None and fields.get("client_id") and fields.get("client_secret"):
        credentials = fields["client_id"], fields["client_secret"]
    if credentials is None:
        raise AnsweredInstead(
            unauthorized("Client authentication is required.", error="invalid_client", scheme="Basic")
        )
    if not limits.allows(CLIENT_FAILURE_LIMIT, "incar-client", ip):
        raise AnsweredInstead(too_many())
    client = clients.authenticate(session, credentials[0], credentials[1])
    if client is None:
        limits.hit(CLIENT_FAILURE_LIMIT, "incar-client", ip)
        raise AnsweredInstead(
            unauthorized("Unknown client or wrong secret.", error="invalid_client", scheme="Basic")
        )
    return client


CarClient = Annotated[VehicleClient, Depends(car_client)]
