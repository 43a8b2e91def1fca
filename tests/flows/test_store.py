"""Stored flows: apply (create, update as a new version, idempotent), the lifecycle and its
refusals, archiving, reading versions, the compiled graph and moving runs between
versions."""

from __future__ import annotations

import copy
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Connection, Engine, func, insert, select

from tidings import errors
from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import build, history, lifecycle, store

_seq = itertools.count(1)


def cart_flow(**overrides: Any) -> dict[str, Any]:
    flow: dict[str, Any] = {
        "key": "cart",
        "name": "Abandoned cart",
        "trigger": {"event": "Cart Updated"},
        "steps": [
            {"id": "pause", "wait": "1h"},
            {"id": "reminder", "send_email": {"template": "cart-reminder"}},
            {
                "id": "wait-open",
                "wait_until": {"opened": "reminder", "timeout": "2d"},
                "then": [{"id": "thanks", "send_email": {"template": "thanks"}}],
                "else": [{"id": "nudge", "send_email": {"template": "nudge"}}],
            },
        ],
    }
    flow.update(overrides)
    return flow


def make_contact(conn: Connection, clock: FakeClock) -> int:
    now = clock.now()
    row = {"email": f"flow{next(_seq)}@example.com", "attributes": {}}
    query = insert(tables.contacts).values(**row, created_at=now, updated_at=now)
    return int(conn.execute(query.returning(tables.contacts.c.id)).scalar_one())


def make_run(
    conn: Connection,
    clock: FakeClock,
    flow_key: str,
    step_id: str | None,
    *,
    version: int = 1,
    status: str = "waiting",
    **values: Any,
) -> int:
    """A run at `step_id`, as the engine would leave it (ended unless live)."""
    flow_id = store.find(conn, flow_key).id
    now = clock.now()
    ended = status not in store.LIVE
    row = {
        "flow_id": flow_id,
        "version": version,
        "contact_id": make_contact(conn, clock),
        "status": status,
        "step_id": None if ended else step_id,
        "next_at": None if ended else now + timedelta(hours=1),
        "state": {},
        "entered_at": now,
        "updated_at": now,
        "ended_at": now if ended else None,
        **values,
    }
    query = insert(tables.flow_runs).values(row).returning(tables.flow_runs.c.id)
    return int(conn.execute(query).scalar_one())


def run_row(conn: Connection, run_id: int) -> Any:
    return conn.execute(select(tables.flow_runs).where(tables.flow_runs.c.id == run_id)).one()


def history_of(conn: Connection, run_id: int) -> list[tuple[Any, ...]]:
    h = tables.flow_run_steps
    query = select(h.c.step_id, h.c.action, h.c.first, h.c.detail).where(h.c.run_id == run_id)
    return [tuple(r) for r in conn.execute(query.order_by(h.c.id))]


def count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# -- apply ------------------------------------------------------------------------------


def test_apply_creates_then_is_idempotent(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        made = store.apply(conn, clock, cart_flow())
    assert made["outcome"] == "created"
    assert {k: made[k] for k in ("key", "name", "status", "version", "live_runs")} == {
        "key": "cart",
        "name": "Abandoned cart",
        "status": "draft",
        "version": 1,
        "live_runs": 0,
    }
    assert (made["trigger_type"], made["trigger_event"]) == ("event", "Cart Updated")
    assert made["definition"] == build.normalise(cart_flow())
    assert [v["version"] for v in made["versions"]] == [1]
    clock.advance(minutes=5)
    with engine.begin() as conn:
        again = store.apply(conn, clock, cart_flow())
        assert count(conn, tables.flow_versions) == 1
    assert again["outcome"] == "unchanged"
    assert again["updated_at"] == made["updated_at"]
    # what is stored (every id explicit) applies as unchanged too
    with engine.begin() as conn:
        assert store.apply(conn, clock, made["definition"])["outcome"] == "unchanged"


def test_ids_derived_from_positions_are_stored_explicitly(engine: Engine, clock: FakeClock) -> None:
    written = cart_flow(steps=[{"wait": "1h"}, {"send_email": {"template": "hello"}}])
    with engine.begin() as conn:
        stored = store.apply(conn, clock, written)["definition"]
        assert all(isinstance(step.get("id"), str) for step in stored["steps"])
        assert store.apply(conn, clock, written)["outcome"] == "unchanged"


def test_a_changed_definition_is_a_new_version_and_runs_keep_theirs(
    engine: Engine, clock: FakeClock
) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        run = make_run(conn, clock, "cart", "reminder")
    clock.advance(hours=1)
    changed = cart_flow(name="Cart recovery")
    changed["steps"][1]["send_email"]["template"] = "cart-reminder-2"
    with engine.begin() as conn:
        updated = store.apply(conn, clock, changed)
        assert run_row(conn, run).version == 1
        old = store.get(conn, "cart", 1)
    assert (updated["outcome"], updated["version"], updated["name"]) == (
        "updated",
        2,
        "Cart recovery",
    )
    assert updated["status"] == "active"
    assert updated["updated_at"] == clock.now()
    assert [(v["version"], v["live_runs"]) for v in updated["versions"]] == [(1, 1), (2, 0)]
    assert updated["definition"]["steps"][1]["send_email"]["template"] == "cart-reminder-2"
    assert old["definition"]["steps"][1]["send_email"]["template"] == "cart-reminder"
    assert (old["shown_version"], old["version"]) == (1, 2)


@pytest.mark.parametrize(
    ("trigger", "columns"),
    [
        ({"event": "Cart Updated"}, ("event", "Cart Updated")),
        ({"segment_entered": "vip"}, ("segment_entered", "Segment Entered")),
        ({"segment_left": "vip"}, ("segment_left", "Segment Left")),
        ({"list_joined": "newsletter"}, ("list_joined", "List Joined")),
        ({"form_submitted": "signup"}, ("form_submitted", "Form Submitted")),
        ({"date_attribute": "birthday", "at": "09:00"}, ("date_attribute", None)),
        ({"inactive": "90d"}, ("inactive", None)),
        ({"score_reached": 50}, ("score_reached", None)),
        ({"api": True}, ("api", None)),
        (
            {"schedule": {"every": "7d", "starting": "2026-01-05T09:00:00+00:00"}},
            ("schedule", None),
        ),
    ],
)
def test_trigger_columns(
    engine: Engine, clock: FakeClock, trigger: dict[str, Any], columns: tuple[str, Any]
) -> None:
    with engine.begin() as conn:
        flow = store.apply(conn, clock, cart_flow(trigger=trigger))
    assert (flow["trigger_type"], flow["trigger_event"]) == columns


def next_check(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(tables.flows.c.next_check_at)).scalar_one()


def test_scheduled_triggers_look_when_active(engine: Engine, clock: FakeClock) -> None:
    birthday = cart_flow(trigger={"date_attribute": "birthday"})
    with engine.begin() as conn:
        store.apply(conn, clock, birthday)
    assert next_check(engine) is None
    with engine.begin() as conn:
        store.apply(conn, clock, birthday, activate=True)
    assert next_check(engine) == clock.now()
    clock.advance(hours=2)
    with engine.begin() as conn:
        store.apply(conn, clock, {**birthday, "name": "Happy birthday"})
    assert next_check(engine) == clock.now()
    with engine.begin() as conn:
        lifecycle.pause(conn, clock, "cart")
    assert next_check(engine) is None
    clock.advance(hours=2)
    with engine.begin() as conn:
        lifecycle.resume(conn, clock, "cart")
    assert next_check(engine) == clock.now()
    with engine.begin() as conn:  # a trigger from the log needs no timer
        store.apply(conn, clock, cart_flow())
    assert next_check(engine) is None


def test_an_invalid_flow_names_its_paths_and_stores_nothing(
    engine: Engine, clock: FakeClock
) -> None:
    bad = cart_flow()
    bad["steps"][2]["then"][0]["send_email"] = {"template": "Not A Slug"}
    bad["steps"][0]["wait"] = "soon"
    with pytest.raises(errors.InvalidInput) as caught, engine.begin() as conn:
        store.apply(conn, clock, bad)
    fields = [f.field for f in caught.value.fields]
    assert "steps[2].then[0].send_email.template" in fields
    assert any(f.startswith("steps[0].wait") for f in fields)
    with engine.connect() as conn:
        assert count(conn, tables.flows) == 0
        assert count(conn, tables.flow_versions) == 0


def test_reserved_keys_are_refused(engine: Engine, clock: FakeClock) -> None:
    with pytest.raises(errors.InvalidInput) as caught, engine.begin() as conn:
        store.apply(conn, clock, cart_flow(key="schema"))
    assert caught.value.fields[0].field == "key"


def test_unknown_templates_are_refused_when_known_ones_are_given(
    engine: Engine, clock: FakeClock
) -> None:
    def known(channel: str, key: str) -> bool:
        return channel == "email" and key in {"cart-reminder", "thanks"}

    with pytest.raises(errors.InvalidInput) as caught, engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), known_templates=known)
    assert [f.field for f in caught.value.fields] == ["steps[2].else[0].send_email.template"]


# -- lifecycle --------------------------------------------------------------------------


def test_lifecycle_and_its_refusals(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow())
    steps = [
        (lifecycle.pause, "draft", False),
        (lifecycle.resume, "draft", False),
        (lifecycle.activate, "active", True),
        (lifecycle.activate, "active", False),
        (lifecycle.resume, "active", False),
        (lifecycle.pause, "paused", True),
        (lifecycle.pause, "paused", False),
        (lifecycle.resume, "active", True),
        (lifecycle.pause, "paused", True),
        (lifecycle.activate, "active", True),
        (lifecycle.archive, "archived", True),
        (lifecycle.archive, "archived", False),
        (lifecycle.activate, "archived", False),
        (lifecycle.resume, "archived", False),
    ]
    for action, status, allowed in steps:
        with engine.begin() as conn:
            if allowed:
                assert action(conn, clock, "cart")["status"] == status
            else:
                with pytest.raises(errors.Conflict, match=f"is {status}"):
                    action(conn, clock, "cart")
                assert store.get(conn, "cart")["status"] == status
    with engine.begin() as conn, pytest.raises(errors.NotFound):
        lifecycle.pause(conn, clock, "nowhere")


def test_archived_is_final_for_apply_too(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow())
        lifecycle.archive(conn, clock, "cart")
        assert store.apply(conn, clock, cart_flow())["outcome"] == "unchanged"
    with engine.begin() as conn, pytest.raises(errors.Conflict, match="archived"):
        store.apply(conn, clock, cart_flow(name="Again"))
    with engine.begin() as conn, pytest.raises(errors.Conflict, match="archived"):
        store.apply(conn, clock, cart_flow(), activate=True)
    with engine.connect() as conn:
        assert store.get(conn, "cart")["version"] == 1


def test_pausing_touches_no_run(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        run = make_run(conn, clock, "cart", "pause")
        before = run_row(conn, run)
        lifecycle.pause(conn, clock, "cart")
        lifecycle.resume(conn, clock, "cart")
        assert run_row(conn, run) == before


def test_archive_exits_the_runs_in_progress(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        waiting = make_run(conn, clock, "cart", "pause")
        active = make_run(conn, clock, "cart", "reminder", status="active")
        done = make_run(conn, clock, "cart", None, status="completed", end_reason="done")
    clock.advance(hours=3)
    with engine.begin() as conn:
        archived = lifecycle.archive(conn, clock, "cart")
        assert (archived["status"], archived["exited_runs"], archived["live_runs"]) == (
            "archived",
            2,
            0,
        )
        for run, step in ((waiting, "pause"), (active, "reminder")):
            row = run_row(conn, run)
            assert (row.status, row.step_id, row.next_at, row.end_reason) == (
                "exited",
                None,
                None,
                lifecycle.ARCHIVED_REASON,
            )
            assert row.ended_at == clock.now()
            reason = {"reason": lifecycle.ARCHIVED_REASON}
            assert history_of(conn, run) == [(step, history.EXITED, False, reason)]
        assert run_row(conn, done).end_reason == "done"
        assert history_of(conn, done) == []


# -- reading ----------------------------------------------------------------------------


def test_reading_flows_and_versions(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        store.apply(conn, clock, cart_flow(key="welcome", trigger={"list_joined": "news"}))
        store.apply(conn, clock, cart_flow(name="Cart v2"))
        make_run(conn, clock, "cart", "pause")
        make_run(conn, clock, "cart", "pause", version=2)
        make_run(conn, clock, "cart", None, status="exited")
    with engine.connect() as conn:
        listed = store.list_all(conn)
        assert [(f["key"], f["status"], f["version"], f["live_runs"]) for f in listed] == [
            ("cart", "active", 2, 2),
            ("welcome", "draft", 1, 0),
        ]
        assert [f["key"] for f in store.list_all(conn, "draft")] == ["welcome"]
        with pytest.raises(errors.InvalidInput, match="status"):
            store.list_all(conn, "bogus")
        assert store.definition(conn, "cart")["name"] == "Cart v2"
        assert store.definition(conn, "cart", 1)["name"] == "Abandoned cart"
        with pytest.raises(errors.NotFound, match="no version 3"):
            store.definition(conn, "cart", 3)
        with pytest.raises(errors.NotFound, match="nowhere"):
            store.get(conn, "nowhere")


def test_graph_is_the_compiled_version(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow())
        store.apply(conn, clock, cart_flow(name="Cart v2"))
        flow_id = store.find(conn, "cart").id
        first, second = store.graph(conn, flow_id, 1), store.graph(conn, flow_id, 2)
        assert (first.version, first.name) == (1, "Abandoned cart")
        assert (second.version, second.name) == (2, "Cart v2")
        assert store.graph(conn, flow_id, 2) is second  # cached: versions never change
        assert "wait-open" in second.steps
        with pytest.raises(errors.NotFound):
            store.graph(conn, flow_id, 3)


# -- moving runs ------------------------------------------------------------------------


def without_pause(**overrides: Any) -> dict[str, Any]:
    flow = cart_flow(**overrides)
    flow["steps"] = copy.deepcopy(flow["steps"][1:]) + [
        {"id": "survey", "send_email": {"template": "survey"}}
    ]
    return flow


def test_move_runs_to_the_newest_version(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        at_pause = make_run(conn, clock, "cart", "pause")
        at_reminder = make_run(conn, clock, "cart", "reminder", status="active")
        at_nudge = make_run(conn, clock, "cart", "nudge")
        ended = make_run(conn, clock, "cart", None, status="completed")
        store.apply(conn, clock, without_pause())
    clock.advance(minutes=10)
    with engine.begin() as conn:
        moved = lifecycle.move_runs(conn, clock, "cart")
        assert moved == {
            "key": "cart",
            "to_version": 2,
            "moved": 2,
            "kept": [{"version": 1, "step_id": "pause", "runs": 1}],
        }
        assert [run_row(conn, r).version for r in (at_pause, at_reminder, at_nudge, ended)] == [
            1,
            2,
            2,
            1,
        ]
        assert run_row(conn, at_nudge).updated_at == clock.now()
        assert run_row(conn, at_nudge).next_at is not None  # a wait keeps its due time
        record = (history.MOVED, False, {"from": 1, "to": 2})
        assert history_of(conn, at_reminder) == [("reminder", *record)]
        assert history_of(conn, at_nudge) == [("nudge", *record)]
        assert history_of(conn, at_pause) == history_of(conn, ended) == []
        again = lifecycle.move_runs(conn, clock, "cart")
        assert (again["moved"], again["kept"]) == (
            0,
            [{"version": 1, "step_id": "pause", "runs": 1}],
        )


def test_move_runs_between_given_versions(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        store.apply(conn, clock, cart_flow(), activate=True)
        on_one = make_run(conn, clock, "cart", "reminder")
        store.apply(conn, clock, cart_flow(name="Two"))
        on_two = make_run(conn, clock, "cart", "reminder", version=2)
        store.apply(conn, clock, cart_flow(name="Three"))
        moved = lifecycle.move_runs(conn, clock, "cart", from_version=2, to_version=1)
        assert (moved["to_version"], moved["moved"], moved["kept"]) == (1, 1, [])
        assert (run_row(conn, on_one).version, run_row(conn, on_two).version) == (1, 1)
        assert history_of(conn, on_two)[-1][3] == {"from": 2, "to": 1}
        for bad in ({"to_version": 4}, {"to_version": 0}, {"from_version": 9}):
            field = next(iter(bad))
            with pytest.raises(errors.InvalidInput) as caught:
                lifecycle.move_runs(conn, clock, "cart", **bad)
            assert caught.value.fields[0].field == field
        with pytest.raises(errors.NotFound):
            lifecycle.move_runs(conn, clock, "nowhere")


def test_the_flow_in_the_docs_applies(engine: Engine, clock: FakeClock) -> None:
    text = (Path(__file__).parents[2] / "docs" / "flows.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    with engine.begin() as conn:
        flow = store.apply(conn, clock, example, activate=True)
    assert (flow["key"], flow["trigger_event"], flow["status"]) == (
        "abandoned-cart",
        "Cart Updated",
        "active",
    )
    steps = flow["definition"]["steps"]
    assert [s["id"] for s in steps] == ["pause", "reminder", "opened-reminder"]
