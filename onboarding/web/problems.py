"""RFC 9457 problem documents for every error, the OpenAPI description of them, and the exception handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from notifications.support import contact_for
from onboarding.core.db import is_lock_timeout
from onboarding.core.errors import FieldError, Forbidden, NotFound, ValidationFailed
from onboarding.core.i18n import N_
from onboarding.core.text_rules import unsafe_character
from onboarding.web.admission import ClientGone, Overloaded
from onboarding.web.app_state import settings_of
from onboarding.web.rendering import render
from onboarding.web.request_context import PROBLEM_TYPE, current_correlation_id

_BUSY = N_("The service is busy. Please try again in a moment.")

# The error pages (HTML): a heading and an explanation per status, in the reader's language, and the
# support contact in the footer. What an error's ``detail`` adds (a refused form's reason) replaces
# the explanation; HTTP's own reason phrases ("Not Found") say nothing a reader needs.
ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: (
        N_("Your request could not be read"),
        N_("Something in what your browser sent was not understood. Go back and try again."),
    ),
    401: (N_("Please log in"), N_("Log in with your ID to see this page.")),
    403: (N_("This was refused"), N_("You may not do this here. Go back and try again.")),
    404: (
        N_("Page not found"),
        N_("There is no page at this address. Check the address, or start again from the home page."),
    ),
    405: (
        N_("This page cannot do that"),
        N_("The page was opened in a way it does not support. Go back and use the page's links and buttons."),
    ),
    410: (N_("This page is no longer available"), N_("Start again from the home page.")),
    413: (
        N_("Too much was sent"),
        N_("What you sent is larger than this service accepts. Shorten it and try again."),
    ),
    422: (N_("Some of what you entered cannot be used"), N_("Go back, correct it and try again.")),
    429: (N_("Too many attempts"), N_("Please wait a moment and try again.")),
    500: (
        N_("Something went wrong on our side"),
        N_("Please try again later. If it keeps happening, contact support."),
    ),
    503: (N_("The service is busy"), _BUSY),
}
_OTHER_ERROR = (N_("Something went wrong"), N_("Please go back and try again."))


def error_page(request: Request, status: int, detail: str | None = None) -> Response:
    """The branded, translated error page (HTML) for ``status``; ``detail`` is shown (translated
    when the catalogues have it) instead of the status's explanation."""
    heading, explanation = ERROR_PAGES.get(status, _OTHER_ERROR)
    if detail and detail.strip().lower() == _reason_phrase(status).lower():
        detail = None
    context = {
        "status": status,
        "heading": heading,
        "explanation": detail or explanation,
        "support": contact_for(settings_of(request), None, None),
    }
    return render(request, "web/error.html", context, status=status)


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# Paths machines call (the order-system API, the in-car API, the OAuth endpoints): answered with problem
# documents, never HTML pages. (The OAuth endpoints' own errors are RFC 6749 JSON; this covers what the
# framework answers before them: 405, 413, an unknown route.)
MACHINE_PATHS = ("/api/", "/incar/", "/oauth/", "/.well-known/")


def machine_path(path: str) -> bool:
    return path.startswith(MACHINE_PATHS)


def _service_unavailable(request: Request, retry_after_seconds: int, detail: str = _BUSY) -> Response:
    response: Response
    if machine_path(request.url.path):
        response = problem(503, "Service unavailable", detail)
    else:
        response = error_page(request, 503, detail)
    response.headers["Retry-After"] = str(retry_after_seconds)
    return response


# These four answer on the event loop (``async``): Starlette runs a plain handler in a worker thread,
# a hop per shed request when the point is to shed cheaply.
async def _overloaded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    return _service_unavailable(request, exc.retry_after_seconds)


async def _client_gone_answer(request: Request, exc: Exception) -> Response:
    # Nobody reads it: after a burst, hundreds of these end at once, and the callers who are still
    # there should not wait while problem documents are rendered for the ones who left.
    return Response(status_code=499)  # nginx's "client closed request"


async def _database_busy(request: Request, exc: Exception) -> Response:
    # SQLite's write lock not free within the short busy timeout: try again, rather than a 500.
    if not is_lock_timeout(exc):
        raise exc
    return _service_unavailable(request, 1)


async def _pool_timeout(request: Request, exc: Exception) -> Response:
    # Admission keeps requests from waiting for connections; should one still, it is only busy.
    return _service_unavailable(request, 1)


def problem(
    status: int, title: str, detail: str | None = None, errors: list[FieldError] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = [
            {"field": e.field, "pointer": _pointer(e.field), "message": e.text, "code": e.code}
            for e in errors
        ]
    correlation_id = current_correlation_id()
    if correlation_id:
        body["correlation_id"] = correlation_id
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _pointer(field: str) -> str:
    # RFC 6901: "" is the whole body, "/a/b" a member in it.
    return "" if field == "body" else "/" + field.replace("~", "~0").replace(".", "/")


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    # A dict key the client sent may itself hold what the text rule refuses; never echo it raw.
    return ".".join(p if unsafe_character(p) is None else ascii(p) for p in parts) or "body"


def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not machine_path(request.url.path):
        # A page's form that does not fit its fields (a value longer than any field takes): a page.
        return error_page(request, 422)
    errors = exc.errors()
    malformed = [e for e in errors if e.get("type") == "json_invalid"]
    if malformed:
        # The JSON parser's offset is no field; the pointer names the whole body.
        reason = str(malformed[0].get("ctx", {}).get("error", "malformed JSON"))
        return problem(
            400,
            "Malformed JSON",
            "The request body is not valid JSON.",
            [FieldError("body", f"Not valid JSON: {reason}.", "json_invalid")],
        )
    fields = [
        FieldError(_field_name(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")), str(e.get("type", "")))
        for e in errors
    ]
    return problem(422, "Invalid request", "One or more fields are invalid.", fields)


class ProblemFieldError(BaseModel):
    field: str
    pointer: str = Field(description='JSON pointer (RFC 6901) into the body; "" is the whole body')
    message: str
    code: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error of the APIs is answered."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemFieldError] | None = None
    correlation_id: str | None = Field(default=None, description="Quote it when reporting a problem")


PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or invalid API key",
    403: "The API key may not do this",
    404: "Not found (or outside the key's markets)",
    413: "Request body too large",
    415: "Unsupported media type (send application/json)",
    422: "Invalid fields, each named",
    500: "Unexpected error (with a correlation id)",
    503: "Busy: try again after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these problem statuses (``openapi_with_problems`` moves their schema
    to ``application/problem+json``)."""
    return {status: {"model": Problem, "description": PROBLEM_DESCRIPTIONS[status]} for status in statuses}


def openapi_with_problems(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, with error responses documented as the ``application/problem+json``
    they are (FastAPI documents every response model as ``application/json``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[:1] in "45" and "application/json" in content:
                        content["application/problem+json"] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    return openapi


def _validation_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailed)
    return problem(422, "Invalid request", "One or more fields are invalid.", exc.errors)


def _not_found(request: Request, exc: Exception) -> Response:
    return problem(404, "Not found", f"No such resource: {exc}")


def _forbidden(request: Request, exc: Exception) -> Response:
    return problem(403, "Forbidden", str(exc) or None)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    response: Response
    if machine_path(request.url.path):
        response = problem(exc.status_code, str(exc.detail))
    else:
        detail = exc.detail if isinstance(exc.detail, str) else None
        response = error_page(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


class AnsweredInstead(Exception):
    """Raised by a page dependency that answers the request itself (a redirect to log in, a link
    that no longer works), so that each route using it need not check."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _answered_instead(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnsweredInstead)
    return exc.response


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Response | Awaitable[Response]]] = {
    RequestValidationError: _request_validation,
    ValidationFailed: _validation_failed,
    NotFound: _not_found,
    Forbidden: _forbidden,
    StarletteHTTPException: _http_error,
    AnsweredInstead: _answered_instead,
    Overloaded: _overloaded,
    ClientGone: _client_gone_answer,
    OperationalError: _database_busy,
    PoolTimeout: _pool_timeout,
}
