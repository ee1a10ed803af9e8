"""Hostile inputs for every parameter a route reads, from the application's route table: what the
"no 500 for any input" tests send (tests/web/test_every_route_inputs.py anonymously,
tests/portal/test_portal_inputs.py signed in as staff)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.helpers import csrf

HOSTILE = [
    "",
    " ",
    "0",
    "-1",
    "9" * 30,
    "2026-02-30",
    "10000-01-01",
    "../../etc/passwd",
    "'; DROP TABLE orders; --",
    "%00",
    "a\x00b",  # PostgreSQL refuses a NUL in any text it is sent
    "\x1b[31m\u202e",  # controls, a right-to-left override
    "Ωmega ünïcödé 漢字 😀",
    "x" * 5000,
    "[]",
    "²",  # a digit to str.isdigit, not to int(): ValueError
]


def parameters(dependant: Dependant) -> tuple[list[str], list[str]]:
    """The query and body (form or JSON) parameters a route and its dependencies declare."""
    query = [p.alias for p in dependant.query_params]
    body = [p.alias for p in dependant.body_params]
    for sub in dependant.dependencies:
        more_query, more_body = parameters(sub)
        query += more_query
        body += more_body
    return query, body


def server_errors(
    client: TestClient,
    route: APIRoute,
    real: Mapping[str, str],
    *,
    extra_query: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
) -> tuple[int, list[tuple[str, str, str, int]]]:
    """Each parameter of ``route`` hostile in turn (the path's others from ``real``), for each of its
    methods. Returns how many requests were sent and those answered 5xx: (method, path, name, status)."""
    query, body = parameters(route.dependant)
    query += list(extra_query)
    path_names = list(route.param_convertors)  # also those only a dependency reads
    sent, failed = 0, []
    for method in sorted((route.methods or set()) - {"HEAD"}):
        for name in [*path_names, *query, *body]:
            for value in HOSTILE:
                keys = {**real, name: value} if name in path_names else real
                path = route.path.format(**{p: quote(keys.get(p, "x"), safe="") or "_" for p in path_names})
                params = {name: value} if name in query else {}
                if name == "file":
                    answer = client.post(path, data=csrf(client), files={"file": ("x.csv", value.encode())})
                elif method == "GET":
                    answer = client.get(path, params=params, headers=headers, follow_redirects=False)
                else:
                    data: Any = {**csrf(client), **({name: value} if name in body else {})}
                    answer = client.request(
                        method, path, params=params, data=data, headers=headers, follow_redirects=False
                    )
                sent += 1
                if answer.status_code >= 500:
                    failed.append((method, route.path, name, answer.status_code))
    return sent, failed
