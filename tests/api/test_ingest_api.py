"""The Segment-compatible HTTP ingest API: auth, limits, gzip, atomic batches, de-duplication."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import spec


def basic(key: str) -> dict[str, str]:
    """Segment's way: the write key as Basic user name, empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def make_call(kind: str = "track", **overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": kind, "userId": "user-1"}
    call |= {
        "identify": {"traits": {"email": "ann@example.com"}},
        "track": {"event": "Product Viewed", "properties": {"sku": "TEE-01"}},
        "page": {"name": "Home", "category": "Site"},
        "screen": {"name": "Cart"},
        "group": {"groupId": "acme"},
        "alias": {"previousId": "anon-1"},
    }[kind]
    return call | overrides


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tables.events).order_by(tables.events.c.id))
        return [dict(r._mapping) for r in rows]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.events)).scalar_one())


def post(client: TestClient, path: str, body: Any, key: str, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers=basic(key) | headers)


@pytest.mark.parametrize("kind", spec.EVENT_TYPES)
def test_each_endpoint_stores_its_call(
    kind: str, client: TestClient, engine: Engine, write_key: str
) -> None:
    response = post(client, f"/v1/{kind}", make_call(kind, messageId="m-1"), write_key)

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    (row,) = stored(engine)
    assert (row["type"], row["message_id"], row["user_id"]) == (kind, "m-1", "user-1")
    assert row["source"] == "_".join(write_key.split("_")[:2])  # tid_<8 hex>


def test_the_path_decides_the_type(client: TestClient, engine: Engine, write_key: str) -> None:
    post(client, "/v1/track", make_call("track", type="identify"), write_key)

    assert stored(engine)[0]["type"] == "track"


def test_batch_with_skew_correction(
    client: TestClient, engine: Engine, write_key: str, clock: FakeClock
) -> None:
    body = {
        "batch": [
            make_call("identify", messageId="a", originalTimestamp="2020-01-01T00:00:00Z"),
            make_call("track", messageId="b", originalTimestamp="2020-01-01T00:00:03Z"),
        ],
        "sentAt": "2020-01-01T00:00:10Z",
    }
    assert post(client, "/v1/batch", body, write_key).status_code == 200

    rows = stored(engine)
    assert [r["timestamp"] for r in rows] == [
        clock.now() - timedelta(seconds=10),
        clock.now() - timedelta(seconds=7),
    ]
    assert {r["received_at"] for r in rows} == {clock.now()}


def test_a_repeated_message_id_is_answered_200_and_stored_once(
    client: TestClient, engine: Engine, write_key: str
) -> None:
    call = make_call(messageId="same")
    assert post(client, "/v1/track", call, write_key).status_code == 200
    assert post(client, "/v1/track", call, write_key).status_code == 200
    assert post(client, "/v1/batch", {"batch": [call, call]}, write_key).status_code == 200

    assert count(engine) == 1


def test_one_bad_call_fails_the_whole_batch(
    client: TestClient, engine: Engine, write_key: str
) -> None:
    calls = [make_call(), make_call(), make_call(), make_call("identify", userId=None)]
    response = post(client, "/v1/batch", {"batch": calls}, write_key)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "batch[3].userId"
    assert count(engine) == 0


def test_an_invalid_email_trait_is_named(
    client: TestClient, engine: Engine, write_key: str
) -> None:
    calls = [make_call(), make_call("identify", traits={"email": "ann@"})]
    response = post(client, "/v1/batch", {"batch": calls}, write_key)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["batch[1].traits.email"]
    assert count(engine) == 0


def test_unknown_type_is_refused(client: TestClient, write_key: str) -> None:
    response = post(client, "/v1/batch", {"batch": [{"type": "launch", "userId": "u"}]}, write_key)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "batch[0].type"


@pytest.mark.parametrize("body", [b'{"batch": [', b"\xff\xfe", b"", b"[1, 2]"])
def test_malformed_bodies_get_a_json_error(
    body: bytes, client: TestClient, engine: Engine, write_key: str
) -> None:
    response = post(client, "/v1/batch", body, write_key)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert count(engine) == 0


def test_an_oversized_call_is_refused_by_index(
    client: TestClient, engine: Engine, write_key: str, settings: Settings
) -> None:
    big = make_call(properties={"blob": "x" * settings.max_event_bytes})
    response = post(client, "/v1/batch", {"batch": [make_call(), big]}, write_key)

    assert response.status_code == 413
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["batch[1]"]
    assert count(engine) == 0


def test_an_oversized_single_call_is_refused(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    big = make_call(properties={"blob": "x" * settings.max_event_bytes})

    assert post(client, "/v1/track", big, write_key).status_code == 413


def test_an_oversized_batch_is_refused_while_streaming(
    client: TestClient, engine: Engine, write_key: str, settings: Settings
) -> None:
    call = orjson.dumps(make_call(properties={"blob": "x" * 20_000}))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold as it streams
        yield b'{"batch": ['
        for _ in range(settings.max_batch_bytes // len(call) + 1):
            yield call + b","
        yield call + b"]}"

    response = client.post("/v1/batch", content=chunks(), headers=basic(write_key))

    assert response.status_code == 413
    assert response.json()["error"]["fields"][0]["field"] == "body"
    assert count(engine) == 0


def test_gzip_bodies_are_accepted(client: TestClient, engine: Engine, write_key: str) -> None:
    body = gzip.compress(orjson.dumps({"batch": [make_call(), make_call("page")]}))
    response = post(client, "/v1/batch", body, write_key, **{"Content-Encoding": "gzip"})

    assert response.status_code == 200, response.text
    assert count(engine) == 2


def test_a_gzip_bomb_is_refused(
    client: TestClient, engine: Engine, write_key: str, settings: Settings
) -> None:
    filler = b" " * (settings.max_batch_bytes * 20)  # whitespace is valid JSON padding
    bomb = gzip.compress(orjson.dumps({"batch": [make_call()]}) + filler)
    assert len(bomb) < settings.max_batch_bytes

    response = post(client, "/v1/batch", bomb, write_key, **{"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert count(engine) == 0


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(b"not gzip", "gzip"), (b"{}", "br"), (gzip.compress(b"{}")[:-9], "gzip")],
)
def test_bad_encodings_are_refused(
    body: bytes, encoding: str, client: TestClient, write_key: str
) -> None:
    response = post(client, "/v1/batch", body, write_key, **{"Content-Encoding": encoding})

    assert response.status_code == 422


def test_bearer_and_admin_keys_work_too(
    client: TestClient, engine: Engine, write_key: str, admin: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {write_key}"}
    assert client.post("/v1/track", json=make_call(), headers=bearer).status_code == 200
    assert client.post("/v1/track", json=make_call(), headers=admin).status_code == 200

    assert count(engine) == 2


def test_no_key_is_401_and_a_read_key_403(
    client: TestClient, engine: Engine, read_key: str
) -> None:
    missing = client.post("/v1/track", json=make_call())
    wrong = client.post("/v1/track", json=make_call(), headers=basic("tid_nope_nope"))
    read_only = post(client, "/v1/track", make_call(), read_key)

    assert (missing.status_code, wrong.status_code, read_only.status_code) == (401, 401, 403)
    assert missing.headers["WWW-Authenticate"] == "Basic"
    assert count(engine) == 0


def test_openapi_documents_every_ingest_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for kind in (*spec.EVENT_TYPES, "batch"):
        body = paths[f"/v1/{kind}"]["post"]["requestBody"]["content"]["application/json"]
        assert "$ref" not in orjson.dumps(body["schema"]).decode()
    batch = paths["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(batch["properties"]["batch"]["items"]["oneOf"]) == len(spec.EVENT_TYPES)
