"""`/v1/segments` over HTTP: create and build, preview, members pages, explain, bad input
by path, unknown keys and scopes."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

_seq = itertools.count(1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_contact(client: TestClient, headers: dict[str, str], **overrides: Any) -> Any:
    body = {"email": f"seg{next(_seq)}@example.com", **overrides}
    response = client.post("/v1/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def make_segment(client: TestClient, headers: dict[str, str], key: str, rule: Any) -> Any:
    body = {"key": key, "name": key.title(), "rule": rule}
    response = client.post("/v1/segments", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_segment_crud(client: TestClient, admin: dict[str, str]) -> None:
    make_contact(client, admin, tags=["vip"])
    other = make_contact(client, admin)
    made = make_segment(client, admin, "vips", {"tag": "vip"})
    assert made == {
        "key": "vips",
        "name": "Vips",
        "description": "",
        "rule": {"tag": "vip"},
        "member_count": 1,
        "created_at": "2026-01-05T09:00:00Z",
        "updated_at": "2026-01-05T09:00:00Z",
        "rebuilt_at": "2026-01-05T09:00:00Z",
    }
    assert client.get("/v1/segments/vips", headers=admin).json() == made
    assert [s["key"] for s in client.get("/v1/segments", headers=admin).json()["data"]] == ["vips"]
    patched = client.patch(
        "/v1/segments/vips", json={"rule": {"not": {"tag": "vip"}}}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["member_count"] == 1
    page = client.get("/v1/segments/vips/members", headers=admin).json()
    assert [m["contact_id"] for m in page["data"]] == [other["id"]]
    assert client.delete("/v1/segments/vips", headers=admin).status_code == 204
    assert client.get("/v1/segments/vips", headers=admin).status_code == 404
    assert client.delete("/v1/segments/vips", headers=admin).status_code == 404


def test_bad_input_names_the_path(client: TestClient, admin: dict[str, str]) -> None:
    bad = {"key": "x", "name": "X", "rule": {"all": [{"tag": "a"}, {"event": 5}]}}
    response = client.post("/v1/segments", json=bad, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"].startswith("rule.all[1].event")
    make_segment(client, admin, "a", {"tag": "a"})
    make_segment(client, admin, "b", {"segment": "a"})
    loop = client.patch("/v1/segments/a", json={"rule": {"segment": "b"}}, headers=admin)
    assert loop.status_code == 422
    assert loop.json()["error"]["fields"] == [
        {"field": "rule.segment", "message": "refers back to this segment: a -> b -> a"}
    ]
    unknown = client.post("/v1/segments/preview", json={"rule": {"segment": "zz"}}, headers=admin)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "rule.segment"
    assert client.delete("/v1/segments/a", headers=admin).status_code == 409
    assert client.get("/v1/segments/zz/members", headers=admin).status_code == 404
    garbage = client.get("/v1/segments/a/members?cursor=nope", headers=admin)
    assert garbage.status_code == 422
    assert client.get("/v1/segments", headers=admin).json()["data"][0]["rule"] == {"tag": "a"}


def test_preview_counts_without_storing(client: TestClient, admin: dict[str, str]) -> None:
    people = [make_contact(client, admin, country=c) for c in ["DE", "DE", "FR", "DE"]]
    body = {"rule": {"attribute": "country", "eq": "DE"}, "sample": 2}
    response = client.post("/v1/segments/preview", json=body, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "count": 3,
        "sample": [{"id": p["id"], "email": p["email"], "external_id": None} for p in people[:2]],
    }
    assert client.get("/v1/segments", headers=admin).json() == {"data": []}
    too_many = client.post("/v1/segments/preview", json={**body, "sample": 1000}, headers=admin)
    assert too_many.status_code == 422


def test_members_are_paged_by_cursor(client: TestClient, admin: dict[str, str]) -> None:
    ids = [make_contact(client, admin, score=10)["id"] for _ in range(5)]
    make_segment(client, admin, "scored", {"score": {"gte": 10}})
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/segments/scored/members", params=params, headers=admin).json()
        seen += [m["contact_id"] for m in page["data"]]
        assert all(m["entered_at"] == "2026-01-05T09:00:00Z" for m in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_explain_one_contact(client: TestClient, admin: dict[str, str]) -> None:
    de = make_contact(client, admin, country="DE", score=5)
    rule = {"all": [{"attribute": "country", "eq": "DE"}, {"score": {"gte": 10}}]}
    make_segment(client, admin, "de-hot", rule)
    response = client.get(f"/v1/segments/de-hot/explain?contact_id={de['id']}", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["holds"], body["member"]) == (False, False)
    parts = body["explanation"]["children"]
    assert [(p["path"], p["holds"], p["seen"]) for p in parts] == [
        ("rule.all[0]", True, "DE"),
        ("rule.all[1]", False, 5),
    ]
    missing = client.get("/v1/segments/de-hot/explain?contact_id=999999", headers=admin)
    assert missing.status_code == 404
    assert client.get("/v1/segments/de-hot/explain", headers=admin).status_code == 422


def test_scopes(client: TestClient, admin: dict[str, str], read_key: str, write_key: str) -> None:
    make_segment(client, admin, "all", {"score": {"gte": 0}})
    reader, writer = bearer(read_key), bearer(write_key)
    assert client.get("/v1/segments", headers=reader).status_code == 200
    assert client.get("/v1/segments/all/members", headers=reader).status_code == 200
    preview = client.post("/v1/segments/preview", json={"rule": {"tag": "x"}}, headers=reader)
    assert preview.status_code == 200
    body = {"key": "x", "name": "X", "rule": {"tag": "x"}}
    assert client.post("/v1/segments", json=body, headers=reader).status_code == 403
    assert client.patch("/v1/segments/all", json={"name": "A"}, headers=reader).status_code == 403
    assert client.delete("/v1/segments/all", headers=reader).status_code == 403
    assert client.get("/v1/segments", headers=writer).status_code == 403
    assert client.get("/v1/segments").status_code == 401
