"""Flow figures per step and in total, and a contact's journeys, over runs and history
records written by hand (the engine writes the same rows)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert

from tests.flows.test_store import cart_flow, make_contact, make_run
from tidings import errors
from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import history, journeys, stats, store


def record(
    conn: Connection,
    run_id: int,
    step_id: str | None,
    action: str,
    at: datetime,
    *,
    first: bool = False,
    **detail: Any,
) -> None:
    run = conn.execute(tables.flow_runs.select().where(tables.flow_runs.c.id == run_id)).one()
    conn.execute(
        insert(tables.flow_run_steps).values(
            run_id=run_id,
            flow_id=run.flow_id,
            step_id=step_id,
            action=action,
            first=first,
            detail=detail,
            at=at,
        )
    )


def visit(conn: Connection, run_id: int, at: datetime, *steps: str) -> None:
    """The run entered each step in turn, a minute apart."""
    for n, step in enumerate(steps):
        record(conn, run_id, step, history.WAITING, at + timedelta(minutes=n), first=True)


def test_stats_per_step_and_in_total(engine: Engine, clock: FakeClock) -> None:
    t0 = clock.now()
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        done = make_run(conn, clock, "cart", None, status="completed")
        visit(conn, done, t0, "pause", "reminder", "wait-open", "thanks")
        record(conn, done, "thanks", history.COMPLETED, t0 + timedelta(minutes=4))
        waiting = make_run(conn, clock, "cart", "wait-open")
        visit(conn, waiting, t0, "pause", "reminder", "wait-open")
        exited = make_run(conn, clock, "cart", None, status="exited")
        visit(conn, exited, t0, "pause", "reminder")
        record(conn, exited, "reminder", history.EXITED, t0 + timedelta(minutes=2))
        failed = make_run(conn, clock, "cart", None, status="failed")
        visit(conn, failed, t0, "pause", "reminder")
        record(conn, failed, "reminder", history.FAILED, t0 + timedelta(minutes=2))
        sold = make_run(
            conn,
            clock,
            "cart",
            None,
            status="exited",
            converted_at=t0 + timedelta(hours=5),
            converted_step="reminder",
            revenue=30.5,
            updated_at=t0 + timedelta(hours=5),
        )
        visit(conn, sold, t0, "pause", "reminder", "wait-open")
        record(conn, sold, "wait-open", history.CONVERTED, t0 + timedelta(hours=5))
        record(conn, sold, "wait-open", history.EXITED, t0 + timedelta(hours=5))
        old = make_run(conn, clock, "cart", None, status="completed")
        visit(conn, old, t0 - timedelta(days=1), "retired")
    with engine.connect() as conn:
        figures = stats.flow_stats(conn, "cart")
    by_step = {s["step_id"]: s for s in figures["steps"]}
    assert list(by_step) == ["pause", "reminder", "wait-open", "thanks", "nudge", "retired"]
    counted = ("entered", "waiting", "completed", "exited", "failed", "converted", "revenue")
    assert {k: tuple(s[c] for c in counted) for k, s in by_step.items()} == {
        "pause": (5, 0, 5, 0, 0, 0, 0.0),
        "reminder": (5, 0, 3, 1, 1, 1, 30.5),
        "wait-open": (3, 1, 1, 1, 0, 0, 0.0),
        "thanks": (1, 0, 1, 0, 0, 0, 0.0),
        "nudge": (0, 0, 0, 0, 0, 0, 0.0),
        "retired": (1, 0, 1, 0, 0, 0, 0.0),
    }
    assert by_step["reminder"]["type"] == "send_email"
    assert (by_step["pause"]["type"], by_step["wait-open"]["type"]) == ("wait", "wait_until")
    assert (by_step["retired"]["type"], by_step["retired"]["in_current_version"]) == (None, False)
    assert figures["runs"] == {
        "entered": 6,
        "live": 1,
        "completed": 2,
        "exited": 2,
        "failed": 1,
        "converted": 1,
        "revenue": 30.5,
        "first_activity_at": t0 - timedelta(days=1),
        "last_activity_at": t0 + timedelta(hours=5),
    }
    assert (figures["key"], figures["version"]) == ("cart", 1)


def test_stats_of_a_flow_without_runs(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow())
        figures = stats.flow_stats(conn, "cart")
        with pytest.raises(errors.NotFound):
            stats.flow_stats(conn, "nowhere")
    assert figures["runs"] == {
        "entered": 0,
        "live": 0,
        "completed": 0,
        "exited": 0,
        "failed": 0,
        "converted": 0,
        "revenue": 0.0,
        "first_activity_at": None,
        "last_activity_at": None,
    }
    assert all(s["entered"] == s["waiting"] == 0 for s in figures["steps"])
    assert len(figures["steps"]) == 5


def test_journeys_of_a_contact(engine: Engine, clock: FakeClock) -> None:
    t0 = clock.now()
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        store.apply(conn, clock, cart_flow(key="welcome", trigger={"list_joined": "news"}))
        first = make_run(conn, clock, "cart", None, status="completed", entry_key="cart-1")
        contact = (
            conn.execute(tables.flow_runs.select().where(tables.flow_runs.c.id == first))
            .one()
            .contact_id
        )
        record(conn, first, None, history.ENTERED, t0, trigger="Cart Updated")
        record(conn, first, "pause", history.WAITING, t0, first=True, until="10:00")
        record(conn, first, "reminder", history.BRANCHED, t0, first=True, branch="then")
        clock.advance(hours=1)
        second = make_run(conn, clock, "welcome", "pause", contact_id=contact)
        record(conn, second, "pause", history.WAITING, clock.now(), first=True)
        make_run(conn, clock, "cart", "pause")  # someone else's
        nobody = make_contact(conn, clock)
    with engine.connect() as conn:
        runs = journeys.for_contact(conn, contact)
        assert journeys.for_contact(conn, nobody) == []
        assert [r["run_id"] for r in journeys.for_contact(conn, contact, limit=1)] == [second]
        with pytest.raises(errors.NotFound):
            journeys.for_contact(conn, 10**9)
    assert [(r["run_id"], r["flow_key"], r["status"]) for r in runs] == [
        (second, "welcome", "waiting"),
        (first, "cart", "completed"),
    ]
    assert runs[1]["entry_key"] == "cart-1"
    assert runs[1]["steps"] == [
        {"step_id": None, "action": "entered", "at": t0, "detail": {"trigger": "Cart Updated"}},
        {"step_id": "pause", "action": "waiting", "at": t0, "detail": {"until": "10:00"}},
        {"step_id": "reminder", "action": "branched", "at": t0, "detail": {"branch": "then"}},
    ]
    assert runs[0]["next_at"] == clock.now() + timedelta(hours=1)
