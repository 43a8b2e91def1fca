from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tidings import errors, keys
from tidings.api import errors as api_errors
from tidings.api.deps import require
from tidings.clock import FakeClock
from tidings.keys import ApiKey, KeyVerifier


def make_key(engine: Engine, clock: FakeClock, scope: str) -> tuple[ApiKey, str]:
    with engine.begin() as conn:
        return keys.create(conn, clock, scope, "t")


def test_key_is_shown_once_and_stored_hashed(engine: Engine, clock: FakeClock) -> None:
    key, secret = make_key(engine, clock, "write")
    assert secret.startswith(key.prefix + "_")
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT secret_hash, prefix FROM api_keys").one()
    assert secret not in stored and stored.prefix == key.prefix
    assert KeyVerifier(engine, 0).verify(secret) == key


def test_wrong_or_revoked_keys_are_refused(engine: Engine, clock: FakeClock) -> None:
    key, secret = make_key(engine, clock, "read")
    verifier = KeyVerifier(engine, 0)
    for bad in ("", "nonsense", secret + "x", key.prefix + "_guess"):
        with pytest.raises(errors.Unauthorized):
            verifier.verify(bad)
    with engine.begin() as conn:
        keys.revoke(conn, clock, key.prefix)
    with pytest.raises(errors.Unauthorized):
        verifier.verify(secret)
    with engine.begin() as conn, pytest.raises(errors.NotFound):
        keys.revoke(conn, clock, key.prefix)


def test_unknown_scope_is_invalid(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn, pytest.raises(errors.InvalidInput, match="scope"):
        keys.create(conn, clock, "root")


@pytest.mark.parametrize(
    ("scope", "needed", "allowed"),
    [
        ("admin", "read", True),
        ("admin", "write", True),
        ("write", "write", True),
        ("write", "read", False),
        ("read", "read", True),
        ("read", "write", False),
        ("read", "admin", False),
    ],
)
def test_scopes(scope: str, needed: str, allowed: bool) -> None:
    assert ApiKey(1, "p", scope, "").allows(needed) is allowed


def _scoped_app(engine: Engine) -> FastAPI:
    app = FastAPI()
    app.state.keys = KeyVerifier(engine, 0)
    api_errors.install(app)

    @app.get("/read")
    def read(key: Annotated[ApiKey, Depends(require("read"))]) -> dict[str, str]:
        return {"scope": key.scope}

    return app


def test_http_auth_schemes_and_statuses(engine: Engine, clock: FakeClock) -> None:
    _, read_secret = make_key(engine, clock, "read")
    _, write_secret = make_key(engine, clock, "write")
    client = TestClient(_scoped_app(engine))
    assert client.get("/read", headers={"Authorization": f"Bearer {read_secret}"}).json() == {
        "scope": "read"
    }
    assert client.get("/read", auth=(read_secret, "")).status_code == 200  # Segment style
    missing = client.get("/read")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert client.get("/read", headers={"Authorization": "Basic !!"}).status_code == 401
    forbidden = client.get("/read", headers={"Authorization": f"Bearer {write_secret}"})
    assert forbidden.status_code == 403 and "read" in forbidden.json()["error"]["message"]
