"""Plain helpers for flow tests: apply a flow, send events through the API, read runs,
history and ledger rows."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import store


def apply_flow(engine: Engine, clock: FakeClock, definition: dict[str, Any]) -> int:
    """Store and activate a flow; its id."""
    with engine.begin() as conn:
        store.apply(conn, clock, definition, activate=True)
        return int(store.find(conn, definition["key"]).id)


def track(
    client: TestClient,
    headers: dict[str, str],
    user: str,
    event: str,
    properties: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    body = {"userId": user, "event": event, "properties": properties or {}, **extra}
    response = client.post("/v1/track", json=body, headers=headers)
    assert response.status_code == 200, response.text


def identify(client: TestClient, headers: dict[str, str], user: str, **traits: Any) -> None:
    body = {"userId": user, "traits": traits}
    response = client.post("/v1/identify", json=body, headers=headers)
    assert response.status_code == 200, response.text


def contact_id(engine: Engine, user: str) -> int:
    c = tables.contacts
    with engine.connect() as conn:
        return int(conn.execute(select(c.c.id).where(c.c.external_id == user)).scalar_one())


def runs(engine: Engine, flow_id: int | None = None) -> list[Any]:
    r = tables.flow_runs
    query = select(r).order_by(r.c.id)
    if flow_id is not None:
        query = query.where(r.c.flow_id == flow_id)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def sent(engine: Engine, contact: int | None = None) -> list[Any]:
    """Ledger rows, oldest first."""
    m = tables.messages
    query = select(m).order_by(m.c.id)
    if contact is not None:
        query = query.where(m.c.contact_id == contact)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def templates_sent(engine: Engine, contact: int | None = None) -> list[str]:
    return [row.template for row in sent(engine, contact)]


def steps(engine: Engine, run_id: int) -> list[tuple[str | None, str]]:
    s = tables.flow_run_steps
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.c.step_id, s.c.action).where(s.c.run_id == run_id).order_by(s.c.id)
        )
        return [(row.step_id, row.action) for row in rows]
