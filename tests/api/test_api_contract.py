"""The OpenAPI document tells the truth (issue #9): schemathesis generates requests from it (valid
and invalid ones) against the app in process, on each database, with an API key, and checks that
no answer is a 5xx and that every status code and content type is one the document lists."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Database

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Per operation, mode and database; about 40 s per database in all.
EXAMPLES = 15


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_contract(
    db: Database, reference: None, client: TestClient, api_headers: dict[str, str], mode: GenerationMode
) -> None:
    # Schemathesis's Python API (its lazy pytest fixture loader does not run under pytest 9).
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app).include(path_regex="^/api/")
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == 8
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same examples every run: a failure is reproducible
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def keeps_its_contract(case: Any) -> None:
            case.call_and_validate(headers=api_headers, checks=CHECKS)

        keeps_its_contract()


def test_the_document_describes_problems_and_the_api_key(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    put_order = spec["paths"]["/api/v1/orders/{order_number}"]["put"]
    assert put_order["security"] == [{"HTTPBearer": []}]
    assert {"200", "201", "400", "401", "403", "404", "413", "415", "422"} <= set(put_order["responses"])
    assert "503" in put_order["responses"], "overload is answered 503: the document must say so"
    for status in ("400", "401", "403", "404", "413", "415", "422", "503"):
        content = put_order["responses"][status]["content"]
        assert list(content) == ["application/problem+json"], (status, content)
        assert content["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
