"""The text rule (``core.text_rules``) for every URL's query parameters, before any route runs.

A NUL or another control in a search or a filter would otherwise reach the database, and PostgreSQL
refuses a NUL in any text (a 500). A machine path (the API, the in-car API, OAuth) answers 422 with
a problem naming the parameter, as for any invalid field. A page drops the parameter and is shown
without it, as if it had not been given (a prefilled address or a search box then shows empty).
Path parameters are each route's own (the API's are ``SafeStr``; the portal checks its keys)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from onboarding.core.errors import FieldError
from onboarding.core.text_rules import UNSAFE_TEXT_MESSAGE, unsafe_character
from onboarding.web.problems import machine_path, problem


class UrlTextRules:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query:
            # Decoded as Starlette decodes it for the routes.
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            refused = [(n, v) for n, v in pairs if unsafe_character(n) or unsafe_character(v)]
            if refused:
                if machine_path(scope["path"]):
                    # A refused name is not echoed: it is the text the rule keeps out.
                    fields = [n if unsafe_character(n) is None else "query_string" for n, _ in refused]
                    errors = [
                        FieldError(f, UNSAFE_TEXT_MESSAGE, "unsafe_text") for f in dict.fromkeys(fields)
                    ]
                    answer = problem(422, "Invalid request", "One or more fields are invalid.", errors)
                    await answer(scope, receive, send)
                    return
                kept = [pair for pair in pairs if pair not in refused]
                scope = {**scope, "query_string": urlencode(kept).encode("ascii")}
        await self.app(scope, receive, send)
