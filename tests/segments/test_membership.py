"""Materialised membership: a full rebuild equals the compiled query and logs each change
once; the worker task re-evaluates contacts touched by events and profile changes, and
rebuilds time-window rules as the clock moves, with no event needed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update

from tests.segments.factories import (
    add_event,
    identity_caught_up,
    make_contact,
    members,
    segment_events,
)
from tidings import worker
from tidings.clock import FakeClock
from tidings.conditions import model, sql
from tidings.config import Settings
from tidings.db import tables
from tidings.segments import definitions, membership, refresh

DAY = timedelta(days=1)
ENTERED, LEFT = "Segment Entered", "Segment Left"


def seg(engine: Engine, clock: FakeClock, key: str, rule: Any) -> int:
    with engine.begin() as conn:
        definitions.create(conn, clock, {"key": key, "name": key, "rule": rule})
        return int(definitions.find(conn, key).id)


def test_full_rebuild_equals_the_compiled_query(engine: Engine, clock: FakeClock) -> None:
    rule = {"any": [{"attribute": "country", "in": ["DE", "AT"]}, {"score": {"gte": 50}}]}
    with engine.begin() as conn:
        people = [("DE", 0), ("FR", 60), ("FR", 10), ("AT", 0), (None, 0)]
        ids = [make_contact(conn, clock, country=c, score=s) for c, s in people]
    segment_id = seg(engine, clock, "wide", rule)
    with engine.begin() as conn:
        where = sql.compile(model.parse(rule), now=clock.now(), dialect=engine.dialect.name)
        expected = set(conn.execute(select(tables.contacts.c.id).where(where)).scalars())
        assert members(conn, "wide") == expected == {ids[0], ids[1], ids[3]}
        props = {"segment": "wide", "segment_id": segment_id}
        assert segment_events(conn) == [
            (ENTERED, i, f"user-{i}" if False else segment_events(conn)[n][2], props)
            for n, i in enumerate(sorted(expected))
        ]
        # a second rebuild changes nothing and writes nothing
        assert membership.rebuild(conn, clock, "wide") == 0
        assert len(segment_events(conn)) == 3
        # a change: one leaves, one enters, each logged once
        c = tables.contacts
        conn.execute(update(c).where(c.c.id == ids[0]).values(country="FR"))
        conn.execute(update(c).where(c.c.id == ids[2]).values(score=55))
        assert membership.rebuild(conn, clock, "wide") == 2
        assert members(conn, "wide") == {ids[1], ids[2], ids[3]}
        assert [(e[0], e[1]) for e in segment_events(conn)[3:]] == [
            (ENTERED, ids[2]),
            (LEFT, ids[0]),
        ]


def test_events_carry_the_contact_and_unique_ids(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        known = make_contact(conn, clock, external_id="shop-7", score=9)
        anon = make_contact(conn, clock, external_id=None, score=9)
    segment_id = seg(engine, clock, "nine", {"score": {"eq": 9}})
    with engine.begin() as conn:
        e = tables.events
        rows = conn.execute(select(e).where(e.c.source == "tidings").order_by(e.c.id)).all()
        assert [(r.contact_id, r.user_id, r.anonymous_id) for r in rows] == [
            (known, "shop-7", None),
            (anon, None, None),
        ]
        for r in rows:
            assert r.type == "track" and r.context == {}
            assert r.timestamp == r.received_at == clock.now()
            assert r.properties == {"segment": "nine", "segment_id": segment_id}
            assert r.message_id == f"segment:{segment_id}:{r.contact_id}:entered:1"
        # leave and come back at the same instant: new, distinct message ids
        c = tables.contacts
        conn.execute(update(c).values(score=0))
        membership.rebuild(conn, clock, "nine")
        conn.execute(update(c).values(score=9))
        membership.rebuild(conn, clock, "nine")
        ids = conn.execute(select(e.c.message_id).where(e.c.source == "tidings")).scalars().all()
        assert len(ids) == len(set(ids)) == 6


def test_refresh_follows_events_behind_the_identity_worker(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    rule = {"event": "Order Completed", "count": {"gte": 2}, "within": "90d"}
    with engine.begin() as conn:
        buyer, other = make_contact(conn, clock), make_contact(conn, clock)
    clock.advance(seconds=1)  # profiles unchanged since the segment was built
    seg(engine, clock, "repeat", rule)
    with engine.begin() as conn:
        add_event(conn, clock, buyer, "Order Completed", clock.now() - DAY)
        add_event(conn, clock, buyer, "Order Completed")
        add_event(conn, clock, other, "Order Completed")
    # not applied by the identity worker yet: nothing moves
    assert refresh.refresh(engine, clock, settings) == 0
    identity_caught_up(engine, clock)
    assert refresh.refresh(engine, clock, settings) == 1
    assert refresh.refresh(engine, clock, settings) == 0
    with engine.begin() as conn:
        assert members(conn, "repeat") == {buyer}
        assert [(e[0], e[1]) for e in segment_events(conn)] == [(ENTERED, buyer)]


def test_refresh_sees_profile_changes_without_events(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        a, b = make_contact(conn, clock, country="DE"), make_contact(conn, clock, country="FR")
    seg(engine, clock, "de", {"attribute": "country", "eq": "DE"})
    clock.advance(seconds=5)
    with engine.begin() as conn:
        c = tables.contacts
        conn.execute(update(c).where(c.c.id == a).values(country="FR", updated_at=clock.now()))
        conn.execute(update(c).where(c.c.id == b).values(country="DE", updated_at=clock.now()))
    clock.advance(seconds=5)
    assert refresh.refresh(engine, clock, settings) == 2
    with engine.begin() as conn:
        assert members(conn, "de") == {b}
        assert [(e[0], e[1]) for e in segment_events(conn)[1:]] == [(ENTERED, b), (LEFT, a)]
    assert refresh.refresh(engine, clock, settings) == 0


def test_a_window_moving_drops_a_contact_without_any_event(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        opener, never = make_contact(conn, clock), make_contact(conn, clock)
        add_event(conn, clock, opener, "Email Opened", clock.now() - 29 * DAY)
    identity_caught_up(engine, clock)
    seg(engine, clock, "engaged", {"event": "Email Opened", "within": "30d"})
    seg(engine, clock, "dormant", {"not": {"event": "Email Opened", "within": "30d"}})
    assert refresh.refresh(engine, clock, settings) == 0
    with engine.begin() as conn:
        assert members(conn, "engaged") == {opener}
        assert members(conn, "dormant") == {never}
        before = conn.execute(select(func.count()).select_from(tables.events)).scalar_one()
    clock.advance(DAY)  # the open is exactly 30 days old: a rebuild keeps it in
    assert refresh.refresh(engine, clock, settings) == 0
    clock.advance(seconds=1)
    assert refresh.refresh(engine, clock, settings) == 0  # rebuilt less than 300 s ago
    clock.advance(seconds=settings.segment_rebuild_seconds)
    assert refresh.refresh(engine, clock, settings) == 2
    with engine.begin() as conn:
        assert members(conn, "engaged") == set()
        assert members(conn, "dormant") == {opener, never}
        e = tables.events
        new = conn.execute(select(e.c.name, e.c.source, e.c.contact_id).where(e.c.id > before))
        assert sorted(new.all()) == [(ENTERED, "tidings", opener), (LEFT, "tidings", opener)]


def test_segment_of_segment_changes_in_one_round(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        a = make_contact(conn, clock, country="DE", score=80)
        b = make_contact(conn, clock, country="DE", score=10)
    seg(engine, clock, "de", {"attribute": "country", "eq": "DE"})
    seg(engine, clock, "de-vip", {"all": [{"segment": "de"}, {"score": {"gte": 50}}]})
    seg(engine, clock, "de-rest", {"all": [{"segment": "de"}, {"not": {"segment": "de-vip"}}]})
    with engine.begin() as conn:
        assert (members(conn, "de-vip"), members(conn, "de-rest")) == ({a}, {b})
    clock.advance(seconds=1)
    with engine.begin() as conn:
        c = tables.contacts
        conn.execute(update(c).where(c.c.id == a).values(country="FR", updated_at=clock.now()))
        conn.execute(update(c).where(c.c.id == b).values(score=90, updated_at=clock.now()))
    assert refresh.refresh(engine, clock, settings) == 4
    with engine.begin() as conn:
        assert members(conn, "de") == {b}
        assert members(conn, "de-vip") == {b}
        assert members(conn, "de-rest") == set()
        # re-evaluating some contacts directly does the dependencies first, too
        conn.execute(update(c).where(c.c.id == b).values(country="AT"))
        assert membership.reevaluate(conn, clock, "de-vip", [b]) == {b}
        assert members(conn, "de") == set()


def test_changing_a_rule_rebuilds_the_segments_that_use_it(
    engine: Engine, clock: FakeClock
) -> None:
    with engine.begin() as conn:
        a = make_contact(conn, clock, score=70)
    seg(engine, clock, "base", {"score": {"gte": 100}})
    seg(engine, clock, "top", {"segment": "base"})
    with engine.begin() as conn:
        definitions.update_segment(conn, clock, "base", {"rule": {"score": {"gte": 50}}})
        assert members(conn, "top") == {a}


def test_the_worker_runs_the_refresh() -> None:
    assert refresh.refresh in worker.TASKS
