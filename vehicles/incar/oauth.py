"""The in-car OAuth authorization server: authlib's generic server with our storage behind it.

authlib (``authlib.oauth2``) parses the requests, authenticates the client (``client_secret_basic``
or ``client_secret_post``), picks the grant and words the RFC 6749 errors; the grants below store
and read through ``device_login`` and ``tokens``. A server is made per request (cheap: a few dicts),
bound to that request's session, settings, time and address, because authlib's hooks
(``query_client``…) take no request. This is a service module: it knows no web framework. Requests
come in as ``FormRequest`` (method, URL, headers, the form already read), answers go out as
``OAuthAnswer`` for the route to turn into its response.

Where authlib's default flow does not fit, the grant overrides it (each says why): the device code's
state comes from ``device_login.status`` in one read; a refresh is ``tokens.refresh`` (rotation with
the retry grace); the device authorization endpoint makes its codes in ``device_login.start``
(which retries a colliding user code)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    ClientCredentialsGrant,
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    AuthorizationPendingError,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    ExpiredTokenError,
    SlowDownError,
)
from sqlalchemy.orm import Session

from onboarding.core.crypto import token_hash
from onboarding.core.settings import Settings
from onboarding.identity import audit
from vehicles.incar import device_login, tokens
from vehicles.incar.models import DeviceAuthorization, VehicleClient

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
GRANT_TYPES = [DEVICE_CODE_GRANT_TYPE, "refresh_token", "client_credentials"]
MAX_SCOPE_LENGTH = 200  # the column's size
JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


@dataclass(frozen=True)
class OAuthAnswer:
    """What an endpoint answers: status, JSON body, headers (the route makes the HTTP response)."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth request from a form POST whose body the route has already read."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)
        self._form = form

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """authlib's view of a ``VehicleClient``: confidential, secret in the body or Basic, all three
    grant types."""

    def __init__(self, vehicle_client: VehicleClient) -> None:
        self.vehicle_client = vehicle_client

    def get_client_id(self) -> str:
        return self.vehicle_client.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(self.vehicle_client.secret_hash, token_hash(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


def _vehicle_client(request: OAuth2Request) -> VehicleClient:
    client: OAuthClient = request.client
    return client.vehicle_client


class InCarDeviceCodeGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    server: InCarAuthorizationServer

    def validate_token_request(self) -> None:
        device_code = self.request.form.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code' in payload")
        client = self.authenticate_token_endpoint_client()
        authorization = self.query_device_credential(device_code)
        # RFC 8628 §3.5: an unknown device code, or another client's, is invalid_grant.
        if authorization is None or authorization.client_id != client.get_client_id():
            raise InvalidGrantError("The device code is unknown.")
        self.request.client = client
        self.request.credential = authorization
        self.request.user = self.validate_device_credential(authorization)

    def query_device_credential(self, device_code: str) -> DeviceAuthorization | None:
        return device_login.by_device_code(self.server.session, device_code)

    def validate_device_credential(self, credential: DeviceAuthorization) -> int | None:
        # authlib asks query_user_grant (by user code) and should_slow_down separately; user codes of
        # ended logins may recur, and each poll is to be recorded once, so the state is read in one
        # call on the login itself.
        state = device_login.status(credential, self.server.now)
        if state == "approved":
            return credential.account_id
        if state == "completed":
            raise InvalidGrantError("The device code was already used.")
        raise {
            "expired": ExpiredTokenError,
            "denied": AccessDeniedError,
            "slow_down": SlowDownError,
            "pending": AuthorizationPendingError,
        }[state]()

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        authorization: DeviceAuthorization = self.request.credential
        server = self.server
        if authorization.account_id is None or not device_login.complete(
            server.session, authorization, now=server.now
        ):
            raise InvalidGrantError("The device code was already used.")
        grant = tokens.grant_for_device_login(server.session, authorization, now=server.now)
        answer = tokens.issue(server.session, server.settings, grant, now=server.now)
        server.audit_issued(grant.account_id, grant.id, grant.vin, DEVICE_CODE_GRANT_TYPE)
        return 200, answer, JSON_HEADERS


class InCarRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    """Rotation with reuse detection and the retry grace is ``tokens.refresh`` as a whole: authlib's
    split into authenticate, issue and revoke_old_credential cannot claim the token atomically."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    server: InCarAuthorizationServer

    def validate_token_request(self) -> None:
        self.request.client = self._validate_request_client()
        if not self.request.form.get("refresh_token"):
            raise InvalidRequestError("Missing 'refresh_token' in request.")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        server = self.server
        try:
            answer = tokens.refresh(
                server.session,
                server.settings,
                _vehicle_client(self.request),
                self.request.form["refresh_token"],
                now=server.now,
            )
        except tokens.InvalidGrant as refused:
            raise InvalidGrantError(str(refused)) from refused
        return 200, answer, JSON_HEADERS


class InCarClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """The car's own token (no user): the anonymous set of services."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    server: InCarAuthorizationServer

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        server = self.server
        vehicle_client = _vehicle_client(self.request)
        grant = tokens.client_grant(
            server.session, vehicle_client, now=server.now, scope=self.request.payload.scope or ""
        )
        answer = tokens.issue(server.session, server.settings, grant, now=server.now)
        return 200, answer, JSON_HEADERS


class InCarDeviceAuthorizationEndpoint(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: InCarAuthorizationServer

    def get_verification_uri(self) -> str:
        return self.server.settings.public_url("/device")

    def create_endpoint_response(
        self, request: OAuth2Request
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        # authlib makes the codes first and then hands them to save_device_credential; ours are made
        # where they are stored, so that a user code that collides with an open one is drawn again.
        self.authenticate_client(request)
        scope = request.payload.scope or ""
        self.server.validate_requested_scope(scope)
        settings = self.server.settings
        authorization, device_code = device_login.start(
            self.server.session, settings, _vehicle_client(request), scope, now=self.server.now
        )
        uri = self.get_verification_uri()
        return (
            200,
            {
                "device_code": device_code,
                "user_code": authorization.user_code,
                "verification_uri": uri,
                "verification_uri_complete": f"{uri}?user_code={authorization.user_code}",
                "expires_in": settings.device_code_valid_minutes * 60,
                "interval": authorization.interval,
            },
            JSON_HEADERS,
        )


class InCarRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: InCarAuthorizationServer

    def create_endpoint_response(
        self, request: OAuth2Request
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client = self.authenticate_endpoint_client(request)
        self.check_params(request, client)
        # Either kind of token, whatever the hint says (RFC 7009 §2.1: the hint only speeds up the
        # lookup); unknown tokens and other clients' tokens are answered 200 and change nothing.
        tokens.revoke_token(
            self.server.session, client.vehicle_client, request.form["token"], now=self.server.now
        )
        return 200, {}, JSON_HEADERS


class InCarAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, session: Session, settings: Settings, *, now: datetime, ip: str | None) -> None:
        super().__init__(scopes_supported=None)
        self.session = session
        self.settings = settings
        self.now = now
        self.ip = ip
        self.register_grant(InCarDeviceCodeGrant)
        self.register_grant(InCarRefreshTokenGrant)
        self.register_grant(InCarClientCredentialsGrant)
        self.register_endpoint(InCarDeviceAuthorizationEndpoint)
        self.register_endpoint(InCarRevocationEndpoint)

    # --- storage -------------------------------------------------------------------------------

    def query_client(self, client_id: str) -> OAuthClient | None:
        vehicle_client = self.session.get(VehicleClient, client_id) if len(client_id) <= 40 else None
        return OAuthClient(vehicle_client) if vehicle_client is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:  # pragma: no cover
        raise NotImplementedError("tokens are stored by tokens.issue and tokens.refresh")

    def validate_requested_scope(self, scope: str | None) -> None:
        if scope and (len(scope) > MAX_SCOPE_LENGTH or not scope.isprintable()):
            raise InvalidScopeError()

    # --- the framework side --------------------------------------------------------------------

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:  # pragma: no cover - no JSON endpoints
        raise NotImplementedError

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthAnswer:
        return OAuthAnswer(status, dict(body or {}), list(headers))

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> OAuthAnswer:
        if isinstance(error, InvalidClientError):
            audit.record(
                self.session,
                "incar_client_auth_failed",
                now=self.now,
                account_id=None,
                actor="car",
                ip=self.ip,
                client_id=(presented_client_id(request) or "")[:40],
            )
        answer: OAuthAnswer = super().handle_error_response(request, error)
        return answer

    def audit_issued(self, account_id: int | None, grant_id: int, vin: str, grant_type: str) -> None:
        audit.record(
            self.session,
            "incar_grant_issued",
            now=self.now,
            account_id=account_id,
            actor="car",
            ip=self.ip,
            grant_id=grant_id,
            vin=vin,
            grant_type=grant_type,
        )


def presented_client_id(request: OAuth2Request) -> str | None:
    """The client id a request names (Basic header or form), before it is authenticated."""
    from authlib.oauth2.rfc6749.util import extract_basic_authorization

    basic_id, _ = extract_basic_authorization(request.headers)
    client_id: str | None = basic_id or request.form.get("client_id")
    return client_id


def metadata(settings: Settings) -> dict[str, Any]:
    """The authorization server's metadata (RFC 8414)."""
    return {
        "issuer": settings.public_url(""),
        "token_endpoint": settings.public_url("/oauth/token"),
        "device_authorization_endpoint": settings.public_url("/oauth/device_authorization"),
        "revocation_endpoint": settings.public_url("/oauth/revoke"),
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "response_types_supported": [],
    }


def answer(
    session: Session,
    settings: Settings,
    endpoint: str,
    request: FormRequest,
    *,
    now: datetime,
    ip: str | None,
) -> OAuthAnswer:
    """Runs one OAuth endpoint ("token", "device_authorization" or "revocation") on ``request``."""
    server = InCarAuthorizationServer(session, settings, now=now, ip=ip)
    try:
        if endpoint == "token":
            result: OAuthAnswer = server.create_token_response(request)
        else:
            result = server.create_endpoint_response(endpoint, request)
    except UnicodeDecodeError:  # authlib decodes a Basic header that is not UTF-8 unguarded
        return server.handle_error_response(request, InvalidClientError(status_code=401))
    return result


def form_request(
    method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]
) -> FormRequest | OAuthAnswer:
    """The request for ``answer``, or the error to answer when OAuth may not be used at ``uri``
    (plain HTTP other than loopback: RFC 6749 §3.2 requires TLS)."""
    try:
        return FormRequest(method, uri, headers, form)
    except OAuth2Error as error:
        status, body, error_headers = error()
        return OAuthAnswer(status, dict(body), list(error_headers))
