"""POST /v1/contacts/bulk: all or nothing, every bad item named."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.contacts.test_bulk import contacts, make_list
from tidings.clock import FakeClock
from tidings.db import tables


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.contacts)).scalar_one())


def post(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post("/v1/contacts/bulk", json=body, headers=headers)


def test_creates_and_updates(client: TestClient, admin: dict[str, str], engine: Engine) -> None:
    body = {
        "contacts": [
            {"email": "ann@example.com", "first_name": "Ann", "tags": ["vip"]},
            {"external_id": "u2", "email": "bob@example.com", "attributes": {"plan": "pro"}},
        ]
    }
    first = post(client, admin, body)
    assert first.status_code == 200, first.text
    assert first.json() == {"created": 2, "updated": 0, "rejected": []}
    body["contacts"][1] = {"external_id": "u2", "attributes": {"ltv": 3}}
    assert post(client, admin, body).json() == {"created": 0, "updated": 2, "rejected": []}
    assert contacts(engine)["bob@example.com"]["attributes"] == {"plan": "pro", "ltv": 3}


def test_joins_a_list_with_consent_from_the_key(
    client: TestClient, admin: dict[str, str], admin_key: str, engine: Engine, clock: FakeClock
) -> None:
    make_list(engine, clock, "news")
    response = post(client, admin, {"contacts": [{"email": "a@example.com"}], "list": "news"})
    assert response.status_code == 200
    with engine.connect() as conn:
        source = conn.execute(select(tables.consents.c.source)).scalar_one()
    assert source == "api:" + "_".join(admin_key.split("_")[:2])
    assert (
        post(client, admin, {"contacts": [{"email": "a@x.io"}], "list": "nope"}).status_code == 404
    )


def test_a_bad_item_refuses_the_whole_request(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    post(client, admin, {"contacts": [{"email": "taken@example.com", "external_id": "u1"}]})
    body = {
        "contacts": [
            {"email": "good@example.com"},
            {"email": "nope"},
            {"email": "ok@example.com", "phone": "1"},
            {"email": "taken@example.com", "external_id": "u9"},
        ]
    }
    response = post(client, admin, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert [f["field"] for f in error["fields"]] == [
        "contacts[1].email",
        "contacts[2].phone",
        "contacts[3].external_id",
    ]
    assert "contacts[1].email" in error["message"]
    assert count(engine) == 1  # nothing from this request


def test_shape_errors(client: TestClient, admin: dict[str, str]) -> None:
    too_many = {"contacts": [{"email": f"u{i}@example.com"} for i in range(1001)]}
    assert post(client, admin, too_many).status_code == 422
    assert post(client, admin, {"contacts": []}).status_code == 422
    unknown = post(client, admin, {"contacts": [{"email": "a@example.com", "colour": "red"}]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "body.contacts[0].colour"


def test_needs_an_admin_key(client: TestClient, read_key: str, write_key: str) -> None:
    body = {"contacts": [{"email": "a@example.com"}]}
    for key in (read_key, write_key):
        assert post(client, {"Authorization": f"Bearer {key}"}, body).status_code == 403
    assert client.post("/v1/contacts/bulk", json=body).status_code == 401
