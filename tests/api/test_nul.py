"""A NUL character anywhere in a request is refused with 422 naming where it is, and
nothing is stored (PostgreSQL cannot store it; SQLite would cut the string at it)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tidings.db import tables

NUL = "a\x00b"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("post", "/v1/contacts", {"json": {"first_name": NUL}}, "body.first_name"),
        ("post", "/v1/contacts", {"json": {"attributes": {"k": [1, NUL]}}}, "body.attributes.k[1]"),
        ("post", "/v1/contacts", {"json": {"attributes": {NUL: 1}}}, f"body.attributes.{NUL}"),
        ("post", "/v1/lists", {"json": {"key": "k", "name": NUL}}, "body.name"),
        ("get", "/v1/contacts", {"params": {"tag": NUL}}, "query.tag"),
        ("get", "/v1/lists/a%00b", {}, "path.key"),
        ("post", "/v1/segments/preview", {"json": {"rule": {"tag": NUL}}}, "body.rule.tag"),
    ],
)
def test_nul_characters_are_refused_by_name(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    field: str,
) -> None:
    response = getattr(client, method)(path, headers=admin, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == field
    with engine.connect() as conn:
        for table in (tables.contacts, tables.lists):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0


def test_a_backslash_sequence_that_is_not_nul_is_fine(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {"first_name": "Ana", "attributes": {"path": "C:\\u0000dir"}}  # literal backslash
    response = client.post("/v1/contacts", headers=admin, json=body)
    assert response.status_code == 201, response.text
