"""Stored membership equals the Python evaluator: random contacts, random rules (including
rules over other segments), then time moving and new events arriving, with the worker's
incremental refresh in between. The Segment Entered/Left events written along the way
must add up to the stored membership."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from tests.conditions.test_sql_vs_python import (
    CONDITIONS,
    EVENT_NAMES,
    NOW,
    Population,
    insert_population,
    populations,
)
from tidings.clock import FakeClock
from tidings.conditions import evaluate, model, snapshot
from tidings.db import tables
from tidings.segments import definitions, membership, refresh

#: The segments the generated rules may refer to, defined by rules of their own.
REFERRED = {
    "vips": {"tag": "vip"},
    "first-three": {"score": {"gte": 50}},
    "odd": {"any": [{"tag": "new"}, {"opened": True, "within": "30d"}]},
}
MOVES = st.lists(
    st.tuples(
        st.sampled_from([timedelta(hours=1), timedelta(days=1), timedelta(days=40)]),
        st.lists(st.tuples(st.integers(1, 12), st.sampled_from(EVENT_NAMES)), max_size=4),
    ),
    min_size=1,
    max_size=3,
)


def _reset(conn: Connection, pop: Population) -> None:
    conn.execute(delete(tables.segment_memberships))
    conn.execute(delete(tables.segments))
    insert_population(conn, pop)
    if conn.dialect.name == "postgresql":  # the population's explicit ids left it behind
        conn.execute(text("SELECT setval(pg_get_serial_sequence('events', 'id'), 100000)"))


def _check(conn: Connection, now: Any, keys: list[str]) -> None:
    """Each segment's stored members are exactly the contacts Python puts in it, and its
    Entered/Left events add up to that membership."""
    ids = sorted(conn.scalars(select(tables.contacts.c.id)))

    def in_segment(key: str, contact_id: int) -> bool:
        return membership.is_member(conn, key, contact_id)

    for key in keys:
        node = model.parse(definitions.find(conn, key).rule)
        stored = set(conn.scalars(_members(key)))
        expected = {
            cid
            for cid in ids
            if evaluate.evaluate(
                node, snapshot.load(conn, cid, node, now), now=now, segments=in_segment
            )
        }
        assert stored == expected, (key, json.dumps(definitions.find(conn, key).rule))
        assert _net_entries(conn, key) == stored, key


def _members(key: str) -> Any:
    m, s = tables.segment_memberships, tables.segments
    return select(m.c.contact_id).join(s, s.c.id == m.c.segment_id).where(s.c.key == key)


def _net_entries(conn: Connection, key: str) -> set[int]:
    e = tables.events
    rows = conn.execute(
        select(e.c.contact_id, e.c.name, func.count())
        .where(e.c.name.in_((membership.ENTERED, membership.LEFT)))
        .where(e.c.source == membership.SOURCE)
        .group_by(e.c.contact_id, e.c.name)
        .having(func.count() > 0)
        .where(e.c.message_id.like(f"segment:{definitions.find(conn, key).id}:%"))
    ).all()
    net: dict[int, int] = {}
    for cid, name, n in rows:
        net[cid] = net.get(cid, 0) + (n if name == membership.ENTERED else -n)
    assert all(v in (0, 1) for v in net.values()), net
    return {cid for cid, v in net.items() if v == 1}


@settings(
    max_examples=int(os.environ.get("SEGMENT_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pop=populations(), rules=st.lists(CONDITIONS, min_size=1, max_size=4), moves=MOVES)
def test_stored_membership_follows_the_evaluator_as_time_and_events_move(
    engine: Engine, pop: Population, rules: list[Any], moves: list[Any]
) -> None:
    clock = FakeClock(NOW)
    keys = [*REFERRED, *(f"rule-{i}" for i in range(len(rules)))]
    with engine.begin() as conn:
        _reset(conn, pop)
        for key, rule in [*REFERRED.items(), *zip(keys[len(REFERRED) :], rules, strict=True)]:
            definitions.create(conn, clock, {"key": key, "name": key, "rule": rule})
    with engine.begin() as conn:
        _check(conn, clock.now(), keys)
    next_id = 1000
    for delta, new_events in moves:
        clock.advance(delta)
        touched = set()
        with engine.begin() as conn:
            known = set(conn.scalars(select(tables.contacts.c.id)))
            for cid, name in new_events:
                if cid not in known:
                    continue
                next_id += 1
                conn.execute(insert(tables.events).values(_event(next_id, cid, name, clock)))
                touched.add(cid)
            refresh.refresh_segments(conn, clock, touched, timedelta(0))
        with engine.begin() as conn:
            _check(conn, clock.now(), keys)


def _event(event_id: int, contact_id: int, name: str, clock: FakeClock) -> dict[str, Any]:
    now = clock.now()
    return {
        "message_id": f"new-{event_id}",
        "type": "track",
        "name": name,
        "contact_id": contact_id,
        "properties": {"step": "welcome", "total": 120},
        "context": {},
        "timestamp": now,
        "received_at": now,
    }
