"""Runs in the database, driven by the worker and the fake clock: enrolment by events and
the API, keyed entry, exits and goals by events, waits woken by events, pause and resume,
failures that stay with their run, exactly one live run per key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.flows.factories import (
    apply_flow,
    contact_id,
    identify,
    runs,
    sent,
    steps,
    templates_sent,
    track,
)
from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import history, store
from tidings.worker import Worker

CART: dict[str, Any] = {
    "key": "cart",
    "name": "Cart",
    "trigger": {"event": "Cart Updated"},
    "entry": {"reentry": "after_exit", "key": "properties.cart_id"},
    "exit_when": [{"event": "Order Completed", "match_key": True}],
    "goal": {"event": "Order Completed", "within": "7d", "match_key": True},
    "steps": [
        {"wait": "1h"},
        {"id": "reminder", "send_email": {"template": "cart-reminder"}},
        {"wait": "1d"},
        {"id": "last", "send_email": {"template": "cart-last-call"}},
    ],
}


def test_keyed_runs_one_per_cart_and_an_order_exits_only_its_own(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    flow_id = apply_flow(engine, clock, CART)
    identify(client, admin, "ann", email="ann@example.com")
    for cart in ("c1", "c2", "c1"):  # c1 twice: still one live run for it
        track(client, admin, "ann", "Cart Updated", {"cart_id": cart})
    worker.run_once()
    live = runs(engine, flow_id)
    assert sorted(r.entry_key for r in live) == ["c1", "c2"]

    clock.advance(hours=1)
    worker.run_once()
    ann = contact_id(engine, "ann")
    assert templates_sent(engine, ann) == ["cart-reminder", "cart-reminder"]

    track(client, admin, "ann", "Order Completed", {"cart_id": "c1", "revenue": 42.5})
    worker.run_once()
    by_key = {r.entry_key: r for r in runs(engine, flow_id)}
    assert by_key["c1"].status == "exited" and by_key["c1"].end_reason == "goal reached"
    assert by_key["c1"].revenue == 42.5 and by_key["c1"].converted_step == "reminder"
    assert by_key["c2"].status == "waiting"

    clock.advance(days=1)
    worker.run_once()
    assert templates_sent(engine, ann) == ["cart-reminder", "cart-reminder", "cart-last-call"]
    assert {r.entry_key: r.status for r in runs(engine, flow_id)}["c2"] == "completed"


def test_ledger_rows_name_the_run_step_and_occurrence(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    apply_flow(engine, clock, CART)
    identify(client, admin, "bo")
    track(client, admin, "bo", "Cart Updated", {"cart_id": "x"})
    worker.run_once()
    clock.advance(hours=1)
    worker.run_once()
    (row,) = sent(engine)
    (run,) = runs(engine)
    assert (row.run_id, row.step_id, row.occurrence, row.status) == (
        run.id,
        "reminder",
        1,
        "queued",
    )
    assert row.payload["run"] == run.id and row.payload["flow"] == "cart"
    assert steps(engine, run.id)[:4] == [
        (None, history.ENTERED),
        ("s0", history.WAITING),
        ("s0", history.WAITED),
        ("reminder", history.SENT),
    ]


WAIT_FOR_OPEN: dict[str, Any] = {
    "key": "welcome",
    "name": "Welcome",
    "trigger": {"event": "Signed Up"},
    "steps": [
        {"id": "hello", "send_email": {"template": "hello"}},
        {
            "id": "opened",
            "wait_until": {"opened": "hello", "timeout": "2d"},
            "then": [{"send_email": {"template": "thanks-for-reading"}}],
            "else": [{"send_email": {"template": "did-you-see"}}],
        },
    ],
}


def test_wait_until_opened_is_woken_by_the_open_of_this_runs_message(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    apply_flow(engine, clock, WAIT_FOR_OPEN)
    for user in ("cy", "di"):
        identify(client, admin, user)
        track(client, admin, user, "Signed Up")
    worker.run_once()
    cy_run = next(r for r in runs(engine) if r.contact_id == contact_id(engine, "cy"))
    assert cy_run.wait_event == "Email Opened"
    # an open of another run's message does not count; this run's does
    track(client, admin, "cy", "Email Opened", {"run": cy_run.id + 1000, "step": "hello"})
    worker.run_once()
    assert templates_sent(engine, contact_id(engine, "cy")) == ["hello"]
    track(client, admin, "cy", "Email Opened", {"run": cy_run.id, "step": "hello"})
    worker.run_once()
    assert templates_sent(engine, contact_id(engine, "cy")) == ["hello", "thanks-for-reading"]

    clock.advance(days=2)
    worker.run_once()
    assert templates_sent(engine, contact_id(engine, "di")) == ["hello", "did-you-see"]
    assert {r.status for r in runs(engine)} == {"completed"}


def test_pause_holds_every_run_and_resume_continues(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    apply_flow(engine, clock, CART)
    identify(client, admin, "ed")
    track(client, admin, "ed", "Cart Updated", {"cart_id": "1"})
    worker.run_once()
    with engine.begin() as conn:
        store.transition(conn, clock, "cart", "pause")
    clock.advance(hours=5)
    worker.run_once()
    assert sent(engine) == []
    track(client, admin, "ed", "Cart Updated", {"cart_id": "2"})  # paused: no new run
    worker.run_once()
    assert len(runs(engine)) == 1
    with engine.begin() as conn:
        store.transition(conn, clock, "cart", "resume")
    worker.run_once()
    assert templates_sent(engine) == ["cart-reminder"]


def test_api_enrolment_and_its_errors(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    definition = {**WAIT_FOR_OPEN, "key": "manual", "trigger": "api"}
    apply_flow(engine, clock, definition)
    identify(client, admin, "fi")
    worker.run_once()
    fi = contact_id(engine, "fi")
    ok = client.post("/v1/flows/manual/enrol", json={"contact_ids": [fi, fi]}, headers=admin)
    assert ok.status_code == 200, ok.text
    assert [e["contact_id"] for e in ok.json()["enrolled"]] == [fi]
    again = client.post("/v1/flows/manual/enrol", json={"contact_id": fi}, headers=admin)
    assert again.json()["skipped"] == [{"contact_id": fi, "reason": "already in the flow"}]
    unknown = client.post("/v1/flows/manual/enrol", json={"contact_ids": [fi, 999]}, headers=admin)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "contact_ids[1]"
    assert (
        client.post("/v1/flows/nope/enrol", json={"contact_id": fi}, headers=admin).status_code
        == 404
    )
    client.post("/v1/flows/manual/pause", headers=admin)
    paused = client.post("/v1/flows/manual/enrol", json={"contact_id": fi}, headers=admin)
    assert paused.status_code == 409
    assert len(runs(engine)) == 1


def test_a_failing_step_fails_its_run_and_not_the_others(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    definition = {
        "key": "tagger",
        "name": "Tagger",
        "trigger": {"event": "Joined"},
        "steps": [
            {
                "if": {"attribute": "plan", "eq": "broken"},
                "then": [{"update_contact": {"add_to_list": "no-such-list"}}],
            },
            {"update_contact": {"add_tags": ["joined"], "set": {"lifecycle_stage": "lead"}}},
            {"score": 10},
            {"send_email": {"template": "hi"}},
        ],
    }
    apply_flow(engine, clock, definition)
    identify(client, admin, "gus", plan="broken")
    identify(client, admin, "hal", plan="ok")
    for user in ("gus", "hal"):
        track(client, admin, user, "Joined")
    worker.run_once()
    status = {r.contact_id: r for r in runs(engine)}
    gus, hal = contact_id(engine, "gus"), contact_id(engine, "hal")
    assert status[gus].status == "failed" and "no-such-list" in status[gus].end_reason
    assert status[hal].status == "completed"
    assert templates_sent(engine) == ["hi"]
    with engine.connect() as conn:
        c, t = tables.contacts, tables.contact_tags
        assert conn.execute(select(c.c.score, c.c.lifecycle_stage).where(c.c.id == hal)).one() == (
            10,
            "lead",
        )
        assert (
            conn.execute(select(func.count()).select_from(t).where(t.c.contact_id == gus)).scalar()
            == 0
        )
    journeys = client.get(f"/v1/contacts/{gus}/journeys", headers=admin).json()
    assert "no-such-list" in str(journeys)


def test_one_live_run_per_key_whatever_enrols_it(engine: Engine, clock: FakeClock) -> None:
    from tidings.flows import enrolment

    apply_flow(engine, clock, {**WAIT_FOR_OPEN, "key": "api-flow", "trigger": "api"})
    with engine.begin() as conn:
        c = tables.contacts
        now = clock.now()
        cid = conn.execute(
            c.insert().values(attributes={}, created_at=now, updated_at=now).returning(c.c.id)
        ).scalar_one()
        row = store.find(conn, "api-flow")
        flow = store.graph(conn, row.id, row.version)
        cands = [enrolment.Candidate(cid, key="", source="api")] * 3
        started, skipped = enrolment.enrol(conn, clock, row, flow, cands)
    assert len(started) == 1 and len(skipped) == 2
    assert len(runs(engine)) == 1
    assert timedelta(0) == timedelta(0)
