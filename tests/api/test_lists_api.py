"""`/v1/lists` over HTTP: CRUD by key, memberships with consent records, double opt-in,
bulk changes, member pages and scopes."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

_seq = itertools.count(1)


def make_contact(client: TestClient, headers: dict[str, str], **overrides: Any) -> Any:
    body = {"email": f"list{next(_seq)}@example.com", **overrides}
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


def consents(client: TestClient, headers: dict[str, str], contact_id: int) -> list[Any]:
    response = client.get(f"/v1/contacts/{contact_id}/consents", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_list_crud(client: TestClient, admin: dict[str, str]) -> None:
    made = make_list(client, admin, "news", description="Weekly")
    assert made == {
        "key": "news",
        "name": "News",
        "description": "Weekly",
        "double_opt_in": False,
        "member_counts": {"pending": 0, "subscribed": 0, "unsubscribed": 0},
        "created_at": "2026-01-05T09:00:00Z",
        "updated_at": "2026-01-05T09:00:00Z",
    }
    assert client.get("/v1/lists/news", headers=admin).json() == made
    patched = client.patch("/v1/lists/news", json={"name": "The News"}, headers=admin)
    assert patched.json()["name"] == "The News"
    assert [x["key"] for x in client.get("/v1/lists", headers=admin).json()["data"]] == ["news"]
    assert client.delete("/v1/lists/news", headers=admin).status_code == 204
    assert client.get("/v1/lists/news", headers=admin).status_code == 404


def test_list_errors(client: TestClient, admin: dict[str, str]) -> None:
    make_list(client, admin, "news")
    dup = client.post("/v1/lists", json={"key": "news", "name": "x"}, headers=admin)
    assert dup.status_code == 409
    assert dup.json()["error"]["fields"][0]["field"] == "key"
    bad = client.post("/v1/lists", json={"key": "No Slug", "name": "x"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "key"
    extra = client.patch("/v1/lists/news", json={"key": "other"}, headers=admin)
    assert extra.status_code == 422


def test_membership_changes_write_consent_records(
    client: TestClient, admin: dict[str, str]
) -> None:
    make_list(client, admin, "news")
    contact = make_contact(client, admin)
    url = f"/v1/lists/news/members/{contact['id']}"
    body = {
        "status": "subscribed",
        "consent": {"text": "Yes, news", "ip": "2001:db8::1", "user_agent": "Firefox"},
    }
    first = client.put(url, json=body, headers=admin)
    assert first.json() == {
        "list": "news",
        "contact_id": contact["id"],
        "status": "subscribed",
        "changed": True,
    }
    assert client.put(url, json=body, headers=admin).json()["changed"] is False
    [record] = consents(client, admin, contact["id"])
    assert (record["list"], record["status"], record["ip"], record["user_agent"]) == (
        "news",
        "subscribed",
        "2001:db8::1",
        "Firefox",
    )
    assert record["source"].startswith("api:tid_")
    assert client.get(f"/v1/contacts/{contact['id']}", headers=admin).json()["lists"] == [
        {"key": "news", "status": "subscribed"}
    ]
    assert client.delete(url, headers=admin).status_code == 204
    assert consents(client, admin, contact["id"])[0]["status"] == "removed"
    assert client.delete(url, headers=admin).status_code == 404


def test_double_opt_in_subscribes_as_pending(client: TestClient, admin: dict[str, str]) -> None:
    make_list(client, admin, "doi", double_opt_in=True)
    a, b = make_contact(client, admin), make_contact(client, admin)
    put = client.put(
        f"/v1/lists/doi/members/{a['id']}", json={"status": "subscribed"}, headers=admin
    )
    assert put.json()["status"] == "pending"
    confirmed = client.put(
        f"/v1/lists/doi/members/{b['id']}",
        json={"status": "subscribed", "confirmed": True},
        headers=admin,
    )
    assert confirmed.json()["status"] == "subscribed"
    counts = client.get("/v1/lists/doi", headers=admin).json()["member_counts"]
    assert counts == {"pending": 1, "subscribed": 1, "unsubscribed": 0}


def test_membership_errors(client: TestClient, admin: dict[str, str]) -> None:
    make_list(client, admin, "news")
    contact = make_contact(client, admin)
    bad_status = client.put(
        f"/v1/lists/news/members/{contact['id']}", json={"status": "maybe"}, headers=admin
    )
    assert bad_status.status_code == 422
    assert bad_status.json()["error"]["fields"][0]["field"] == "body.status"
    no_contact = client.put("/v1/lists/news/members/999", json={"status": "pending"}, headers=admin)
    assert no_contact.status_code == 404
    no_list = client.put(
        f"/v1/lists/nope/members/{contact['id']}", json={"status": "pending"}, headers=admin
    )
    assert no_list.status_code == 404


def test_bulk_and_member_pages(client: TestClient, admin: dict[str, str], read_key: str) -> None:
    make_list(client, admin, "news")
    made = [make_contact(client, admin) for _ in range(5)]
    ids = [c["id"] for c in made]
    body = {"contact_ids": ids[:4], "status": "subscribed", "consent": {"text": "Imported"}}
    done = client.post("/v1/lists/news/members", json=body, headers=admin)
    assert done.status_code == 200, done.text
    assert done.json() == {"list": "news", "status": "subscribed", "changed": 4, "unchanged": 0}
    off = {"contact_ids": ids[2:], "status": "unsubscribed"}
    assert client.post("/v1/lists/news/members", json=off, headers=admin).json()["changed"] == 3

    seen, cursor = [], None
    while True:
        params = {"status": "subscribed", "limit": 1, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/lists/news/members", params=params, headers=bearer(read_key))
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [(m["contact_id"], m["email"], m["status"]) for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(c["id"], c["email"], "subscribed") for c in made[:2]]
    assert [r["text"] for r in consents(client, admin, ids[0])] == ["Imported"]

    unknown = client.post(
        "/v1/lists/news/members",
        json={"contact_ids": [ids[0], 999], "status": "pending"},
        headers=admin,
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "contact_ids"
    empty = client.post(
        "/v1/lists/news/members", json={"contact_ids": [], "status": "pending"}, headers=admin
    )
    assert empty.status_code == 422


def test_list_scopes(
    client: TestClient, admin: dict[str, str], write_key: str, read_key: str
) -> None:
    make_list(client, admin, "news")
    assert client.get("/v1/lists").status_code == 401
    assert client.get("/v1/lists", headers=bearer(write_key)).status_code == 403
    assert client.get("/v1/lists/news/members", headers=bearer(write_key)).status_code == 403
    assert client.get("/v1/lists/news", headers=bearer(read_key)).status_code == 200
    reader = bearer(read_key)
    assert (
        client.post("/v1/lists", json={"key": "x", "name": "x"}, headers=reader).status_code == 403
    )
    assert (
        client.put(
            "/v1/lists/news/members/1", json={"status": "pending"}, headers=reader
        ).status_code
        == 403
    )
    assert client.delete("/v1/lists/news", headers=reader).status_code == 403
