"""The worker applies the event log to contacts: creates, updates, merges, exactly once."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, insert, select

from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.contacts import fields
from tidings.db import tables
from tidings.events import apply
from tidings.worker import Worker

_message_ids = itertools.count(1)


def append_event(
    conn: Connection,
    clock: FakeClock,
    type: str = "track",  # noqa: A002 - the Segment field name
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    name: str | None = None,
    properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
) -> int:
    """Append one event row as ingest does (contact_id NULL, tx from the server default)."""
    now = clock.now()
    return int(
        conn.execute(
            insert(tables.events)
            .values(
                message_id=message_id or f"m-{next(_message_ids)}",
                type=type,
                name=name if name is not None else ("Viewed" if type == "track" else None),
                user_id=user_id,
                anonymous_id=anonymous_id,
                properties=properties or {},
                context=context or {},
                timestamp=timestamp or now,
                received_at=now,
                sent_at=now,
                source="test",
            )
            .returning(tables.events.c.id)
        ).scalar_one()
    )


def identify(conn: Connection, clock: FakeClock, user_id: str | None = None, **kw: Any) -> int:
    anonymous_id = kw.pop("anonymous_id", None)
    timestamp = kw.pop("timestamp", None)
    return append_event(
        conn,
        clock,
        "identify",
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=kw,
        timestamp=timestamp,
    )


def all_contacts(engine: Engine) -> list[dict[str, Any]]:
    """Every contact with its anonymous ids and event ids, in id order."""
    c, a, e = tables.contacts, tables.contact_anonymous_ids, tables.events
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(select(c).order_by(c.c.id))]
        for contact in out:
            contact["anonymous_ids"] = set(
                conn.execute(select(a.c.anonymous_id).where(a.c.contact_id == contact["id"]))
                .scalars()
                .all()
            )
            contact["events"] = set(
                conn.execute(select(e.c.id).where(e.c.contact_id == contact["id"])).scalars()
            )
    return out


def only_contact(engine: Engine) -> dict[str, Any]:
    found = all_contacts(engine)
    assert len(found) == 1, found
    return found[0]


def unassigned(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(tables.events.c.contact_id.is_(None))
            ).scalar_one()
        )


def test_identify_creates_a_contact_with_profile_and_attributes(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        event = identify(
            conn, clock, "u1", email="Ada@Example.COM", name="Ada Lovelace", plan="pro"
        )
    assert worker.run_once() == 1
    contact = only_contact(engine)
    assert contact["external_id"] == "u1"
    assert contact["email"] == "ada@example.com"
    assert (contact["first_name"], contact["last_name"]) == ("Ada", "Lovelace")
    assert contact["attributes"] == {"name": "Ada Lovelace", "plan": "pro"}
    assert contact["events"] == {event}
    assert contact["created_at"] == contact["updated_at"] == clock.now()


def test_identify_updates_without_wiping_omitted_fields(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", email="a@example.com", firstName="Ada", plan="free", n=1)
    worker.run_once()
    clock.advance(minutes=5)
    with engine.begin() as conn:
        identify(conn, clock, "u1", plan="pro", country="de", tier=None)
        identify(conn, clock, "u1", n=2)
    worker.run_once()
    contact = only_contact(engine)
    assert contact["email"] == "a@example.com"
    assert contact["first_name"] == "Ada"
    assert contact["country"] == "DE"
    assert contact["attributes"] == {"plan": "pro", "n": 2}
    assert contact["updated_at"] == clock.now()
    assert contact["traits_at"] == clock.now()


def test_track_for_an_unknown_user_creates_the_contact(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        events = {append_event(conn, clock, user_id="u9") for _ in range(3)}
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] == "u9"
    assert contact["email"] is None
    assert contact["events"] == events


def test_anonymous_activity_creates_an_anonymous_contact(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        append_event(conn, clock, "page", anonymous_id="anon-1", name="Home")
        append_event(conn, clock, anonymous_id="anon-1")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] is None and contact["email"] is None
    assert contact["anonymous_ids"] == {"anon-1"}
    assert len(contact["events"]) == 2


def test_identify_after_anonymous_activity_keeps_the_history(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        first = append_event(conn, clock, anonymous_id="anon-1")
    worker.run_once()
    anonymous_id = only_contact(engine)["id"]
    with engine.begin() as conn:
        second = identify(conn, clock, "u1", anonymous_id="anon-1", email="a@example.com")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["id"] == anonymous_id  # the anonymous contact became the user
    assert contact["external_id"] == "u1" and contact["email"] == "a@example.com"
    assert contact["events"] == {first, second}


def test_anonymous_contact_is_merged_into_the_known_one(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        known = identify(conn, clock, "u1", email="a@example.com", plan="pro")
        visit = append_event(
            conn, clock, anonymous_id="anon-1", context={"traits": {"color": "red"}}
        )
        identify(conn, clock, anonymous_id="anon-1", plan="free", color="blue", size="m")
    worker.run_once()
    assert len(all_contacts(engine)) == 2
    with engine.begin() as conn:
        login = append_event(conn, clock, user_id="u1", anonymous_id="anon-1")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] == "u1"
    assert contact["anonymous_ids"] == {"anon-1"}
    assert contact["attributes"] == {"plan": "pro", "color": "blue", "size": "m"}
    assert known in contact["events"] and visit in contact["events"]
    assert login in contact["events"] and len(contact["events"]) == 4


def test_alias_merges_the_previous_identity(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        append_event(conn, clock, anonymous_id="anon-1")
        append_event(conn, clock, user_id="u1")
    worker.run_once()
    assert len(all_contacts(engine)) == 2
    with engine.begin() as conn:
        append_event(conn, clock, "alias", user_id="u1", properties={"previousId": "anon-1"})
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] == "u1"
    assert contact["anonymous_ids"] == {"anon-1"}
    assert len(contact["events"]) == 3


def test_alias_of_an_unseen_id_records_it(engine: Engine, clock: FakeClock, worker: Worker) -> None:
    with engine.begin() as conn:
        append_event(conn, clock, "alias", user_id="u1", properties={"previousId": "old"})
        append_event(conn, clock, anonymous_id="old")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] == "u1" and contact["anonymous_ids"] == {"old"}
    assert len(contact["events"]) == 2


def test_two_known_users_are_never_merged(
    engine: Engine, clock: FakeClock, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", anonymous_id="shared-device", email="one@example.com")
        identify(conn, clock, "u2", anonymous_id="shared-device", email="one@example.com")
        append_event(conn, clock, "alias", user_id="u2", properties={"previousId": "u1"})
    with caplog.at_level(logging.INFO):
        worker.run_once()
    one, two = all_contacts(engine)
    assert (one["external_id"], two["external_id"]) == ("u1", "u2")
    assert one["anonymous_ids"] == {"shared-device"} and two["anonymous_ids"] == set()
    assert one["email"] == "one@example.com" and two["email"] is None
    assert len(one["events"]) == 1 and len(two["events"]) == 2
    assert "not merging two known contacts" in caplog.text


def test_identify_email_finds_a_contact_without_external_id(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    now = clock.now()
    with engine.begin() as conn:
        imported = conn.execute(
            insert(tables.contacts)
            .values(email="a@example.com", attributes={}, created_at=now, updated_at=now)
            .returning(tables.contacts.c.id)
        ).scalar_one()
        identify(conn, clock, "u1", email="A@example.com")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["id"] == imported and contact["external_id"] == "u1"


def test_track_context_traits_email_fills_the_contact(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        append_event(conn, clock, user_id="u1", context={"traits": {"email": "X@Example.com"}})
        append_event(conn, clock, user_id="u1", context={"traits": {"email": "y@example.com"}})
        append_event(conn, clock, user_id="u2", context={"traits": {"email": "not an email"}})
    worker.run_once()
    one, two = all_contacts(engine)
    assert one["email"] == "x@example.com"  # filled once, not replaced by a track
    assert two["email"] is None


def test_identify_reads_context_traits_under_the_traits(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        append_event(
            conn,
            clock,
            "identify",
            user_id="u1",
            properties={"plan": "pro"},
            context={"traits": {"email": "a@example.com", "plan": "free"}},
        )
    worker.run_once()
    contact = only_contact(engine)
    assert contact["email"] == "a@example.com" and contact["attributes"] == {"plan": "pro"}


def test_invalid_traits_are_skipped_and_the_rest_applied(
    engine: Engine, clock: FakeClock, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", email="nope", timezone="Mars/Base", firstName="Ada", plan="pro")
    with caplog.at_level(logging.WARNING):
        assert worker.run_once() == 1
    contact = only_contact(engine)
    assert contact["email"] is None and contact["timezone"] is None
    assert contact["first_name"] == "Ada" and contact["attributes"] == {"plan": "pro"}
    assert "invalid traits skipped" in caplog.text
    assert unassigned(engine) == 0


def test_traits_to_changes_keeps_name_and_address_as_attributes() -> None:
    changes = apply.traits_to_changes(
        {"name": "A" * 300, "address": {"country": "Atlantis"}, "city": "Kiel"}
    )
    assert changes.profile == {}
    assert changes.attributes == {
        "name": "A" * 300,
        "address": {"country": "Atlantis"},
        "city": "Kiel",
    }
    assert apply.traits_to_changes({"email": "a@b.de"}) == fields.from_traits(
        {"email": "a@b.de"}, where=""
    )


def test_an_older_identify_only_fills_empty_fields(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    later = clock.now()
    earlier = later - timedelta(hours=1)
    with engine.begin() as conn:
        identify(conn, clock, "u1", plan="pro", email="new@example.com", timestamp=later)
        identify(
            conn, clock, "u1", plan="free", email="old@example.com", city="Kiel", timestamp=earlier
        )
    worker.run_once()
    contact = only_contact(engine)
    assert contact["email"] == "new@example.com"
    assert contact["attributes"] == {"plan": "pro", "city": "Kiel"}
    assert contact["traits_at"] == later


def test_contact_id_is_set_on_every_event(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        for i in range(50):
            kind = ["track", "page", "screen", "group", "identify"][i % 5]
            props = {"groupId": "g1", "traits": {}} if kind == "group" else {}
            append_event(conn, clock, kind, user_id=f"u{i % 7}", properties=props)
            append_event(conn, clock, anonymous_id=f"a{i % 3}")
    small = settings.model_copy(update={"worker_batch_size": 7})
    assert Worker(small, engine, clock).run_once() == 100
    assert unassigned(engine) == 0
    assert len(all_contacts(engine)) == 10


def test_a_restarted_worker_applies_nothing_twice(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with engine.begin() as conn:
        for i in range(10):
            identify(conn, clock, f"u{i % 3}", visits=i)
    assert Worker(settings, engine, clock).run_once() == 10
    before = all_contacts(engine)
    again = Worker(settings, engine, clock)  # a new process, same database
    assert again.run_once() == 0
    assert again.run_once() == 0
    assert all_contacts(engine) == before
    with engine.begin() as conn:
        identify(conn, clock, "u0", visits=99)
    assert again.run_once() == 1
    assert all_contacts(engine)[0]["attributes"] == {"visits": 99}


def test_a_failed_batch_rolls_back_and_is_retried(
    engine: Engine, clock: FakeClock, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as conn:
        append_event(conn, clock, user_id="u1")
    original = apply.assign

    def crash(*args: Any) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(apply, "assign", crash)
    with pytest.raises(RuntimeError):
        worker.run_once()
    assert all_contacts(engine) == []
    monkeypatch.setattr(apply, "assign", original)
    assert worker.run_once() == 1
    assert len(only_contact(engine)["events"]) == 1


def test_emails_can_move_between_contacts_within_one_batch(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", email="one@example.com")
        identify(conn, clock, "u2", email="two@example.com")
    worker.run_once()
    clock.advance(minutes=1)
    with engine.begin() as conn:  # a swap, through a third address
        identify(conn, clock, "u1", email="three@example.com")
        identify(conn, clock, "u2", email="one@example.com")
        identify(conn, clock, "u1", email="two@example.com")
        identify(conn, clock, "u3", email="three@example.com")
    worker.run_once()
    emails = {c["external_id"]: c["email"] for c in all_contacts(engine)}
    assert emails == {"u1": "two@example.com", "u2": "one@example.com", "u3": "three@example.com"}


def test_an_event_linked_before_its_contact_is_merged_follows_it(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", email="a@example.com")
        append_event(conn, clock, anonymous_id="anon-1")
    worker.run_once()
    with engine.begin() as conn:  # one batch: a plain link to the anonymous contact, then
        visit = append_event(conn, clock, anonymous_id="anon-1")  # its merge into u1
        login = append_event(conn, clock, user_id="u1", anonymous_id="anon-1")
        later = append_event(conn, clock, anonymous_id="anon-1")
    worker.run_once()
    contact = only_contact(engine)
    assert contact["external_id"] == "u1" and contact["anonymous_ids"] == {"anon-1"}
    assert {visit, login, later} <= contact["events"] and len(contact["events"]) == 5


def test_rows_read_with_the_cursor_columns_apply_the_same(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    from tidings.events import cursor

    with engine.begin() as conn:
        identify(conn, clock, "u1", email="a@example.com", plan="pro")
        append_event(conn, clock, user_id="u1", context={"traits": {"email": "b@example.com"}})
        append_event(conn, clock, anonymous_id="anon-1", context={"traits": {"x": 1}})
    with engine.begin() as conn:
        rows = cursor.read(conn, cursor.Position(), 10)  # the whole context, converted times
        apply.apply_events(conn, clock, rows)
    found = {c["external_id"]: c for c in all_contacts(engine)}
    assert found["u1"]["email"] == "a@example.com" and found["u1"]["attributes"] == {"plan": "pro"}
    assert found[None]["anonymous_ids"] == {"anon-1"}
    assert unassigned(engine) == 0


def test_events_written_with_their_contact_are_passed_over(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    """Tidings' own events (Segment Entered/Left) name their contact and no user ids: the
    worker counts them as applied and creates or changes nothing for them."""
    with engine.begin() as conn:
        append_event(conn, clock, "identify", user_id="u1", properties={"email": "a@example.com"})
    worker.run_once()
    with engine.begin() as conn:
        contact_id = conn.execute(select(tables.contacts.c.id)).scalar_one()
        conn.execute(
            insert(tables.events).values(
                message_id="segment:1:x",
                type="track",
                name="Segment Entered",
                contact_id=contact_id,
                properties={"segment": "vip"},
                context={},
                timestamp=clock.now(),
                received_at=clock.now(),
                source="tidings",
            )
        )
        append_event(conn, clock, "track", user_id="u1")
    assert worker.run_once() == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.contacts)).scalar() == 1
        owners = conn.execute(select(tables.events.c.contact_id)).scalars().all()
    assert owners == [contact_id] * 3
