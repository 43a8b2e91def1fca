"""`/v1/flows` over HTTP: apply (create, update, unchanged), invalid flows by path with
nothing stored, the lifecycle and its 409s, enrolment, moving runs, stats, a contact's
journeys, the published JSON Schema and scopes."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

_seq = itertools.count(1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def welcome(**overrides: Any) -> dict[str, Any]:
    flow: dict[str, Any] = {
        "key": "welcome",
        "name": "Welcome series",
        "trigger": {"api": True},
        "steps": [
            {"id": "hello", "send_email": {"template": "welcome-1"}},
            {"id": "pause", "wait": "2d"},
            {
                "id": "opened",
                "if": {"opened": "hello"},
                "then": [{"id": "tips", "send_email": {"template": "welcome-tips"}}],
                "else": [{"id": "again", "send_email": {"template": "welcome-again"}}],
            },
        ],
    }
    flow.update(overrides)
    return flow


def make_contact(client: TestClient, headers: dict[str, str]) -> int:
    body = {"email": f"flows{next(_seq)}@example.com"}
    response = client.post("/v1/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def apply(client: TestClient, headers: dict[str, str], flow: dict[str, Any], **params: Any) -> Any:
    response = client.post("/v1/flows", json=flow, params=params, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response


def test_apply_creates_updates_and_is_idempotent(client: TestClient, admin: dict[str, str]) -> None:
    created = apply(client, admin, welcome())
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ("key", "status", "version", "outcome", "trigger_type")} == {
        "key": "welcome",
        "status": "draft",
        "version": 1,
        "outcome": "created",
        "trigger_type": "api",
    }
    assert body["definition"]["steps"][0] == {
        "id": "hello",
        "send_email": {"template": "welcome-1"},
    }
    again = apply(client, admin, welcome())
    assert (again.status_code, again.json()["outcome"], again.json()["version"]) == (
        200,
        "unchanged",
        1,
    )
    changed = client.put(
        "/v1/flows/welcome",
        json=welcome(name="Welcome!"),
        params={"activate": "true"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["outcome"], changed.json()["version"], changed.json()["status"]) == (
        "updated",
        2,
        "active",
    )
    assert [v["version"] for v in changed.json()["versions"]] == [1, 2]
    shown = client.get("/v1/flows/welcome", params={"version": 1}, headers=admin).json()
    assert (shown["shown_version"], shown["definition"]["name"]) == (1, "Welcome series")
    listed = client.get("/v1/flows", headers=admin).json()["data"]
    assert [(f["key"], f["version"], f["live_runs"]) for f in listed] == [("welcome", 2, 0)]
    assert client.get("/v1/flows", params={"status": "draft"}, headers=admin).json() == {"data": []}


def test_put_takes_the_key_from_the_path(client: TestClient, admin: dict[str, str]) -> None:
    flow = welcome()
    del flow["key"]
    made = client.put("/v1/flows/hello", json=flow, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["key"] == "hello"
    other = client.put("/v1/flows/hello", json=welcome(key="other"), headers=admin)
    assert other.status_code == 422
    assert other.json()["error"]["fields"][0]["field"] == "key"


def test_an_invalid_flow_is_refused_by_path_and_nothing_is_stored(
    client: TestClient, admin: dict[str, str]
) -> None:
    bad = welcome()
    bad["steps"][2]["then"][0]["send_email"] = {"template": "Not A Slug"}
    bad["steps"][1]["wait"] = "soon"
    response = client.post("/v1/flows", json=bad, headers=admin)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert "steps[2].then[0].send_email.template" in fields
    assert any(f.startswith("steps[1].wait") for f in fields)
    assert client.get("/v1/flows", headers=admin).json() == {"data": []}
    assert client.get("/v1/flows/welcome", headers=admin).status_code == 404
    not_an_object = client.post("/v1/flows", json=[1, 2], headers=admin)
    assert not_an_object.status_code == 422


def test_lifecycle_over_http(client: TestClient, admin: dict[str, str]) -> None:
    apply(client, admin, welcome())

    def act(action: str) -> Any:
        return client.post(f"/v1/flows/welcome/{action}", headers=admin)

    assert act("pause").status_code == 409
    assert "draft" in act("resume").json()["error"]["message"]
    assert act("activate").json()["status"] == "active"
    assert act("activate").status_code == 409
    assert act("pause").json()["status"] == "paused"
    assert act("resume").json()["status"] == "active"
    assert act("archive").json()["status"] == "archived"
    for action in ("activate", "pause", "resume", "archive"):
        refused = act(action)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "conflict"
    assert client.post("/v1/flows/nowhere/pause", headers=admin).status_code == 404


def test_enrol_single_and_bulk(client: TestClient, admin: dict[str, str]) -> None:
    people = [make_contact(client, admin) for _ in range(3)]
    apply(client, admin, welcome(), activate="true")
    one = client.post("/v1/flows/welcome/enrol", json={"contact_id": people[0]}, headers=admin)
    assert one.status_code == 200, one.text
    assert [e["contact_id"] for e in one.json()["enrolled"]] == [people[0]]
    bulk = client.post(
        "/v1/flows/welcome/enrol",
        json={"contact_ids": people, "properties": {"source": "import"}},
        headers=admin,
    )
    assert bulk.status_code == 200, bulk.text
    assert sorted(e["contact_id"] for e in bulk.json()["enrolled"]) == people[1:]
    assert [s["contact_id"] for s in bulk.json()["skipped"]] == [people[0]]
    journeys = client.get(f"/v1/contacts/{people[0]}/journeys", headers=admin)
    assert journeys.status_code == 200, journeys.text
    runs = journeys.json()["data"]
    assert [(r["flow_key"], r["run_id"]) for r in runs] == [
        ("welcome", one.json()["enrolled"][0]["run_id"])
    ]
    stats = client.get("/v1/flows/welcome/stats", headers=admin).json()
    assert (stats["runs"]["entered"], stats["runs"]["live"]) == (3, 3)


def test_enrol_refusals(client: TestClient, admin: dict[str, str]) -> None:
    person = make_contact(client, admin)
    apply(client, admin, welcome())

    def enrol(body: Any, key: str = "welcome") -> Any:
        return client.post(f"/v1/flows/{key}/enrol", json=body, headers=admin)

    assert enrol({"contact_id": person}).status_code == 409  # a draft enrols nobody
    client.post("/v1/flows/welcome/activate", headers=admin)
    unknown = enrol({"contact_ids": [person, 999999]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"] == [
        {"field": "contact_ids[1]", "message": "no such contact"}
    ]
    single = enrol({"contact_id": 999999})
    assert single.status_code == 422
    assert single.json()["error"]["fields"][0]["field"] == "contact_id"
    assert enrol({"contact_id": person, "contact_ids": [person]}).status_code == 422
    assert enrol({}).status_code == 422
    assert enrol({"contact_ids": list(range(1, 10_002))}).status_code == 422
    assert enrol({"contact_id": person}, key="nowhere").status_code == 404
    client.post("/v1/flows/welcome/pause", headers=admin)
    assert enrol({"contact_id": person}).status_code == 409
    assert client.get(f"/v1/contacts/{person}/journeys", headers=admin).json()["data"] == []


def test_move_runs_stats_and_journeys_endpoints(client: TestClient, admin: dict[str, str]) -> None:
    apply(client, admin, welcome(), activate="true")
    apply(client, admin, welcome(name="Welcome v2"))
    moved = client.post("/v1/flows/welcome/move-runs", headers=admin)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"key": "welcome", "to_version": 2, "moved": 0, "kept": []}
    back = client.post("/v1/flows/welcome/move-runs", json={"to_version": 1}, headers=admin)
    assert back.json()["to_version"] == 1
    too_far = client.post("/v1/flows/welcome/move-runs", json={"to_version": 3}, headers=admin)
    assert too_far.status_code == 422
    assert too_far.json()["error"]["fields"][0]["field"] == "to_version"
    stats = client.get("/v1/flows/welcome/stats", headers=admin)
    assert stats.status_code == 200, stats.text
    assert [s["step_id"] for s in stats.json()["steps"]] == [
        "hello",
        "pause",
        "opened",
        "tips",
        "again",
    ]
    assert stats.json()["steps"][2]["type"] == "if"
    assert client.get("/v1/flows/nowhere/stats", headers=admin).status_code == 404
    assert client.get("/v1/contacts/999999/journeys", headers=admin).status_code == 404
    assert client.get("/v1/flows/welcome?version=7", headers=admin).status_code == 404


def test_schema_is_public_json_schema(client: TestClient) -> None:
    response = client.get("/v1/flows/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema["type"] == "object"
    assert {"key", "name", "trigger", "steps"} <= set(schema["properties"])
    assert {"key", "name", "trigger", "steps"} <= set(schema["required"])


def test_scopes(client: TestClient, admin: dict[str, str], read_key: str, write_key: str) -> None:
    apply(client, admin, welcome())
    reader, writer = bearer(read_key), bearer(write_key)
    assert client.get("/v1/flows", headers=reader).status_code == 200
    assert client.get("/v1/flows/welcome", headers=reader).status_code == 200
    assert client.get("/v1/flows/welcome/stats", headers=reader).status_code == 200
    assert client.post("/v1/flows", json=welcome(), headers=reader).status_code == 403
    assert client.post("/v1/flows/welcome/activate", headers=reader).status_code == 403
    assert client.post("/v1/flows/welcome/activate", headers=writer).status_code == 403
    assert client.get("/v1/flows", headers=writer).status_code == 403
    assert client.get("/v1/flows").status_code == 401
