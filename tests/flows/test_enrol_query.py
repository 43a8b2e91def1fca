"""Set-based enrolment (`enrolment.enrol_query`): the same runs and history as `enrol` for
the same contacts, the entry rules, the entry filter and the active date range."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from tests.flows.factories import apply_flow
from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import enrolment, store

FLOW: dict[str, Any] = {
    "key": "bulk",
    "name": "Bulk",
    "trigger": "api",
    "steps": [{"send_email": {"template": "t"}}, {"wait": "1d"}],
}
_c, _r, _s = tables.contacts, tables.flow_runs, tables.flow_run_steps


def make_contacts(engine: Engine, clock: FakeClock, *attributes: dict[str, Any]) -> list[int]:
    now = clock.now()
    with engine.begin() as conn:
        rows = [{"attributes": a, "created_at": now, "updated_at": now} for a in attributes]
        conn.execute(_c.insert(), rows)
        return list(conn.scalars(select(_c.c.id).order_by(_c.c.id)))


def enrol_all(engine: Engine, clock: FakeClock, flow_key: str = "bulk", **options: Any) -> int:
    with engine.begin() as conn:
        row = store.find(conn, flow_key)
        flow = store.graph(conn, row.id, row.version)
        return enrolment.enrol_query(conn, clock, row, flow, select(_c.c.id), **options)


def runs_and_history(engine: Engine, flow_id: int) -> list[tuple[Any, ...]]:
    """Each run (less its id) with its history (less ids), by contact."""
    with engine.connect() as conn:
        runs = conn.execute(select(_r).where(_r.c.flow_id == flow_id)).all()
        out = []
        for run in runs:
            steps = conn.execute(
                select(_s.c.step_id, _s.c.action, _s.c.first, _s.c.detail, _s.c.at).where(
                    _s.c.run_id == run.id
                )
            ).all()
            out.append((*run[1:], [tuple(step) for step in steps]))
        return sorted(out, key=lambda r: r[2])


def test_the_same_runs_and_history_as_enrol(engine: Engine, clock: FakeClock) -> None:
    ids = make_contacts(engine, clock, {}, {}, {})
    one = apply_flow(engine, clock, FLOW)
    two = apply_flow(engine, clock, {**FLOW, "key": "bulk2"})
    assert enrol_all(engine, clock, properties={"plan": "pro"}) == 3
    with engine.begin() as conn:
        row = store.find(conn, "bulk2")
        flow = store.graph(conn, row.id, row.version)
        cands = [
            enrolment.Candidate(cid, key="", properties={"plan": "pro"}, source="api")
            for cid in ids
        ]
        enrolment.enrol(conn, clock, row, flow, cands)
    bulk, each = runs_and_history(engine, one), runs_and_history(engine, two)
    assert [r[1:] for r in bulk] == [r[1:] for r in each]  # all but flow_id
    assert [r[-1][0][:2] for r in bulk] == [(None, "entered")] * 3


def test_once_enrols_each_contact_once(engine: Engine, clock: FakeClock) -> None:
    make_contacts(engine, clock, {}, {})
    apply_flow(engine, clock, FLOW)
    assert enrol_all(engine, clock) == 2
    assert enrol_all(engine, clock) == 0
    with engine.begin() as conn:
        conn.execute(update(_r).values(status="completed", ended_at=clock.now()))
    assert enrol_all(engine, clock) == 0
    with engine.connect() as conn:
        assert conn.execute(select(_s.c.id)).all().__len__() == 2


def test_after_exit_numbers_each_new_run_after_the_last(engine: Engine, clock: FakeClock) -> None:
    make_contacts(engine, clock, {}, {})
    apply_flow(engine, clock, {**FLOW, "entry": {"reentry": "after_exit"}})
    assert enrol_all(engine, clock) == 2
    assert enrol_all(engine, clock) == 0  # still live
    with engine.begin() as conn:
        first = conn.execute(select(_r.c.id).order_by(_r.c.id).limit(1)).scalar_one()
        conn.execute(
            update(_r).where(_r.c.id == first).values(status="exited", ended_at=clock.now())
        )
    assert enrol_all(engine, clock) == 1
    with engine.connect() as conn:
        seqs = conn.execute(select(_r.c.contact_id, _r.c.entry_seq).order_by(_r.c.id)).all()
    assert [s for _, s in seqs] == [0, 0, 1]


def test_always_starts_a_run_each_time(engine: Engine, clock: FakeClock) -> None:
    make_contacts(engine, clock, {})
    apply_flow(engine, clock, {**FLOW, "entry": {"reentry": "always"}})
    assert enrol_all(engine, clock, key="k") == 1
    assert enrol_all(engine, clock, key="k") == 1
    with engine.connect() as conn:
        keys = conn.scalars(select(_r.c.entry_key)).all()
    assert len(set(keys)) == 2 and all(k.startswith("k#") for k in keys)


def test_entry_filter_and_active_range(engine: Engine, clock: FakeClock) -> None:
    ids = make_contacts(engine, clock, {"plan": "pro"}, {"plan": "free"}, {})
    later = (clock.now() + timedelta(days=1)).isoformat()
    apply_flow(
        engine,
        clock,
        {
            **FLOW,
            "entry": {"filter": {"attribute": "plan", "eq": "pro"}},
            "settings": {"active": {"from": later}},
        },
    )
    assert enrol_all(engine, clock) == 0  # not active yet
    clock.advance(days=1)
    assert enrol_all(engine, clock) == 1
    with engine.connect() as conn:
        assert conn.scalars(select(_r.c.contact_id)).all() == [ids[0]]
