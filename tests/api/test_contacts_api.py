"""`/v1/contacts` over HTTP: shapes, status codes, errors naming fields, scopes, pages."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select

from tidings.clock import FakeClock
from tidings.db import tables

_seq = itertools.count(1)
CONTACT_KEYS = {
    "id",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "country",
    "lifecycle_stage",
    "score",
    "attributes",
    "tags",
    "lists",
    "anonymous_ids",
    "created_at",
    "updated_at",
}


def make_contact(client: TestClient, headers: dict[str, str], **overrides: Any) -> Any:
    body = {"email": f"api{next(_seq)}@example.com", **overrides}
    response = client.post("/v1/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def make_list(client: TestClient, headers: dict[str, str], key: str, **overrides: Any) -> Any:
    body = {"key": key, "name": key.title(), **overrides}
    response = client.post("/v1/lists", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def contact_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.contacts)).scalar_one())


def test_create_get_patch_delete(client: TestClient, admin: dict[str, str]) -> None:
    make_list(client, admin, "news")
    made = make_contact(
        client,
        admin,
        email="Ada@Example.com",
        external_id="u-1",
        timezone="Europe/Berlin",
        attributes={"plan": "pro"},
        tags=["vip"],
        lists=[{"key": "news", "status": "subscribed"}],
        consent={"text": "Send me news", "ip": "198.51.100.4"},
    )
    assert set(made) == CONTACT_KEYS
    assert made["email"] == "ada@example.com"
    assert made["lists"] == [{"key": "news", "status": "subscribed"}]
    assert made["created_at"] == "2026-01-05T09:00:00Z"
    url = f"/v1/contacts/{made['id']}"
    assert client.get(url, headers=admin).json() == made

    patch = {"first_name": "Ada", "attributes": {"plan": None, "seats": 2}, "add_tags": ["x"]}
    patched = client.patch(url, json=patch, headers=admin)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["first_name"], body["attributes"], body["tags"]) == (
        "Ada",
        {"seats": 2},
        ["vip", "x"],
    )
    assert body["timezone"] == "Europe/Berlin"

    assert client.delete(url, headers=admin).status_code == 204
    gone = client.get(url, headers=admin)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"email": "nope"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"locale": "xx-not-real"}, "locale"),
        ({"country": "XX"}, "country"),
        ({"tags": ["  "]}, "tags[0]"),
        ({"lists": [{"key": "missing"}]}, "lists[0].key"),
        ({"consent": {"ip": "not-an-ip"}}, "consent.ip"),
        ({"nickname": "x"}, "body.nickname"),
        ({"score": "lots"}, "body.score"),
    ],
)
def test_invalid_input_is_a_422_naming_the_field_and_writes_nothing(
    client: TestClient, admin: dict[str, str], engine: Engine, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/contacts", json={"email": "x@example.com", **body}, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in [f["field"] for f in error["fields"]]
    assert contact_count(engine) == 0


def test_invalid_patch_is_a_422_and_changes_nothing(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = make_contact(client, admin, first_name="Ada")
    url = f"/v1/contacts/{made['id']}"
    response = client.patch(url, json={"first_name": "B", "timezone": "Nope/Nope"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "timezone"
    assert client.get(url, headers=admin).json() == made


@pytest.mark.parametrize("field", ["email", "external_id"])
def test_duplicates_are_409_naming_the_field(
    client: TestClient, admin: dict[str, str], field: str
) -> None:
    make_contact(client, admin, email="one@example.com", external_id="u-1")
    body = {"email": "two@example.com", "external_id": "u-2"}
    body[field] = "ONE@example.com" if field == "email" else "u-1"
    response = client.post("/v1/contacts", json=body, headers=admin)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["fields"][0]["field"]) == ("conflict", field)


def test_scopes(client: TestClient, admin: dict[str, str], write_key: str, read_key: str) -> None:
    made = make_contact(client, admin)
    url = f"/v1/contacts/{made['id']}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=bearer(write_key)).status_code == 403
    assert client.get("/v1/contacts", headers=bearer(write_key)).status_code == 403
    assert client.get(url, headers=bearer(read_key)).status_code == 200
    assert client.get(f"{url}/events", headers=bearer(read_key)).status_code == 200
    denied = client.patch(url, json={"first_name": "x"}, headers=bearer(read_key))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert client.post("/v1/contacts", json={}, headers=bearer(write_key)).status_code == 403
    assert client.delete(url, headers=bearer(read_key)).status_code == 403
    assert client.post("/v1/contacts", json={}).status_code == 401


def test_search_filters_and_walks_pages(
    client: TestClient, admin: dict[str, str], read_key: str
) -> None:
    make_list(client, admin, "news")
    made = [
        make_contact(
            client,
            admin,
            attributes={"plan": "pro" if i % 2 else "free", "seats": i},
            tags=["even"] if i % 2 == 0 else [],
            lists=[{"key": "news", "status": "subscribed" if i < 3 else "unsubscribed"}],
        )
        for i in range(7)
    ]
    headers = bearer(read_key)

    def walk(params: dict[str, Any], limit: int = 2) -> list[int]:
        seen: list[int] = []
        cursor = None
        while True:
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            response = client.get("/v1/contacts", params=query, headers=headers)
            assert response.status_code == 200, response.text
            page = response.json()
            seen += [c["id"] for c in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    every = [c["id"] for c in made]
    assert walk({}) == every
    assert walk({"attribute": "plan:pro"}) == every[1::2]
    assert walk({"attribute": ["plan:pro", "seats:3"]}) == [every[3]]
    assert walk({"tag": "even"}, limit=3) == every[0::2]
    assert walk({"list": "news", "list_status": "subscribed"}) == every[:3]
    assert walk({"email": made[4]["email"]}) == [every[4]]


def test_bad_query_parameters_are_422(client: TestClient, admin: dict[str, str]) -> None:
    make_contact(client, admin)
    make_contact(client, admin)
    cursor = client.get("/v1/contacts", params={"limit": 1}, headers=admin).json()["next_cursor"]
    for params, field in [
        ({"cursor": cursor[:-1] + ("0" if cursor[-1] != "0" else "1")}, "cursor"),
        ({"cursor": "x"}, "cursor"),
        ({"limit": 1001}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"attribute": "no-colon"}, "attribute"),
        ({"list_status": "subscribed"}, "list_status"),
    ]:
        response = client.get("/v1/contacts", params=params, headers=admin)
        assert response.status_code == 422, params
        assert response.json()["error"]["fields"][0]["field"] == field


def test_events_newest_first(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    made = make_contact(client, admin)
    now = clock.now()
    with engine.begin() as conn:
        for i, (kind, minutes) in enumerate([("track", 0), ("page", 5), ("track", -5)]):
            conn.execute(
                insert(tables.events).values(
                    message_id=f"e-{i}",
                    type=kind,
                    name="Viewed" if kind == "page" else "Clicked",
                    contact_id=made["id"],
                    properties={"i": i},
                    context={},
                    timestamp=now + timedelta(minutes=minutes),
                    received_at=now,
                    anonymous_id="anon-1",
                )
            )
    url = f"/v1/contacts/{made['id']}/events"
    page = client.get(url, headers=admin).json()
    assert [e["message_id"] for e in page["data"]] == ["e-1", "e-0", "e-2"]
    assert page["next_cursor"] is None
    first = page["data"][0]
    assert set(first) == {
        "id",
        "message_id",
        "type",
        "name",
        "properties",
        "context",
        "timestamp",
        "received_at",
        "user_id",
        "anonymous_id",
    }
    assert first["timestamp"] == "2026-01-05T09:05:00Z"
    tracks = client.get(url, params={"type": "track", "limit": 1}, headers=admin).json()
    assert [e["message_id"] for e in tracks["data"]] == ["e-0"]
    rest = client.get(url, params={"type": "track", "cursor": tracks["next_cursor"]}, headers=admin)
    assert [e["message_id"] for e in rest.json()["data"]] == ["e-2"]
    assert client.get("/v1/contacts/999/events", headers=admin).status_code == 404


def test_consents_are_listed_newest_first(
    client: TestClient, admin: dict[str, str], admin_key: str, clock: FakeClock
) -> None:
    make_list(client, admin, "news")
    made = make_contact(client, admin, lists=[{"key": "news"}], consent={"text": "Yes"})
    clock.advance(minutes=1)
    patch = {"lists": [{"key": "news", "status": "unsubscribed"}]}
    assert client.patch(f"/v1/contacts/{made['id']}", json=patch, headers=admin).status_code == 200
    records = client.get(f"/v1/contacts/{made['id']}/consents", headers=admin).json()["data"]
    assert [(r["list"], r["status"]) for r in records] == [
        ("news", "unsubscribed"),
        ("news", "subscribed"),
    ]
    prefix = admin_key[:12]  # tid_ + 8 hex
    assert records[1]["source"] == f"api:{prefix}"
    assert records[1]["text"] == "Yes" and len(records[1]["text_hash"]) == 64
