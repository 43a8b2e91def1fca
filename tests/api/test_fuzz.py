"""Every operation in our OpenAPI document, fed inputs generated from it (valid and not):
the server never answers 5xx, and every error is a JSON body in our one shape."""

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from tidings.api.app import create_app
from tidings.clock import FakeClock
from tidings.config import Settings

FUZZ = settings(
    max_examples=int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "12")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_no_generated_input_makes_the_server_fail(
    settings: Settings, engine: Engine, clock: FakeClock, admin_key: str
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, engine, clock))
    headers = {"Authorization": f"Bearer {admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10

    for operation in operations:

        @FUZZ
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            label = f"{case.method} {case.formatted_path} -> {response.status_code}"
            assert response.status_code < 500, f"{label}: {response.text}"
            if response.status_code >= 400:
                assert "error" in response.json(), f"{label}: {response.text}"

        call()
