"""Tailing the event log: commit order, one worker at a time, nothing skipped or repeated."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, create_engine, func, select

from tests.events.test_apply import append_event
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import apply, cursor


def _skip_unless_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has one writer, so commit order is id order")


def test_reads_in_order_in_batches_and_advances(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        ids = [append_event(conn, clock, user_id=f"u{i}") for i in range(10)]
    seen: list[int] = []
    while True:
        with engine.begin() as conn:
            # other databases on the same server may be writing right now
            cursor.wait_for_writers(conn, 10)
            at = cursor.claim(conn, clock)
            assert at is not None
            rows = cursor.read(conn, at, 4)
            if not rows:
                break
            seen += [row.id for row in rows]
            cursor.advance(conn, clock, cursor.Position.of(rows[-1]))
    assert seen == ids
    with engine.connect() as conn:
        assert cursor.position(conn).id == ids[-1]
        assert cursor.pending(conn) == 0


def test_claim_creates_the_cursor_at_the_start(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        assert cursor.position(conn, "other") == cursor.Position()
        assert cursor.claim(conn, clock, "other") == cursor.Position()
        cursor.advance(conn, clock, cursor.Position(0, 7), "other")
    with engine.begin() as conn:
        assert cursor.claim(conn, clock, "other") == cursor.Position(0, 7)
        count = select(func.count()).select_from(tables.worker_cursors)
        assert conn.execute(count).scalar_one() == 1


def test_read_until_follows_another_cursor(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        ids = [append_event(conn, clock, anonymous_id="a") for _ in range(5)]
    with engine.begin() as conn:
        cursor.wait_for_writers(conn, 10)
        until = cursor.Position.of(cursor.read(conn, cursor.Position(), 3)[-1])
        rows = cursor.read(conn, cursor.Position(), 100, until=until)
        assert [r.id for r in rows] == ids[:3]
        assert cursor.pending(conn) == 5


def test_a_second_worker_does_not_wait_for_the_first(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    _skip_unless_postgresql(engine)
    with engine.begin() as conn:
        append_event(conn, clock, user_id="u0")
    assert apply.process_pending(engine, clock, settings) == 1  # the cursor row now exists
    with engine.begin() as conn:
        append_event(conn, clock, user_id="u1")
    # Connections on which any wait for a lock fails after 2 s instead of passing slowly:
    # "does not wait" is then an error, not a measured time.
    impatient = create_engine(engine.url, connect_args={"options": "-c lock_timeout=2000"})
    try:
        with engine.begin() as first:
            assert cursor.claim(first, clock) is not None
            assert apply.process_pending(impatient, clock, settings) == 0  # taken: skip
            with impatient.begin() as second:
                assert cursor.claim(second, clock) is None
    finally:
        impatient.dispose()
    assert apply.process_pending(engine, clock, settings) == 1


def test_concurrent_workers_apply_each_event_once(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        for i in range(300):
            append_event(conn, clock, user_id=f"u{i % 20}")
    small = settings.model_copy(update={"worker_batch_size": 7})
    applied: list[int] = []
    failures: list[BaseException] = []

    def work() -> None:
        try:
            deadline = time.monotonic() + 60
            while sum(applied) < 300 and time.monotonic() < deadline:
                applied.append(apply.process_pending(engine, clock, small))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(applied) == 300
    with engine.connect() as conn:
        events, contacts = tables.events, tables.contacts
        assert (
            conn.execute(select(func.count()).where(events.c.contact_id.is_(None))).scalar_one()
            == 0
        )
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 20


def test_an_event_committed_late_with_a_lower_id_is_not_skipped(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    _skip_unless_postgresql(engine)
    with engine.connect() as a:
        a.begin()
        early = append_event(a, clock, user_id="early")  # lower id, not committed yet
        with engine.begin() as b:
            late = append_event(b, clock, user_id="late")
        assert early < late
        # `early` may still commit, so nothing after it can be applied yet
        assert apply.process_pending(engine, clock, settings) == 0
        a.commit()
    assert apply.process_pending(engine, clock, settings) == 2
    assert apply.process_pending(engine, clock, settings) == 0
    with engine.connect() as conn:
        events, contacts = tables.events, tables.contacts
        rows = conn.execute(
            select(events.c.id, events.c.tx, contacts.c.external_id)
            .join(contacts, contacts.c.id == events.c.contact_id)
            .order_by(events.c.tx, events.c.id)
        ).all()
        assert [(r.id, r.external_id) for r in rows] == [(early, "early"), (late, "late")]
        assert rows[0].tx < rows[1].tx
        assert cursor.position(conn) == cursor.Position(rows[1].tx, late)
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 2


def test_the_cursor_does_not_pass_a_running_writer(engine: Engine, clock: FakeClock) -> None:
    _skip_unless_postgresql(engine)
    with engine.connect() as a:
        a.begin()
        append_event(a, clock, user_id="open")
        with engine.begin() as b:
            append_event(b, clock, user_id="done")
        with engine.begin() as conn:
            assert cursor.wait_for_writers(conn, 0.05) is False
            assert cursor.read(conn, cursor.Position(), 10) == []
        a.rollback()
    with engine.begin() as conn:
        assert cursor.wait_for_writers(conn, 5) is True
        assert [r.user_id for r in cursor.read(conn, cursor.Position(), 10)] == ["done"]
