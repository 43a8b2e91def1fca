"""Ingest: Segment calls become event-log rows, all or nothing, each messageId once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tidings import errors
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.db import tables
from tidings.events import ingest, spec

SOURCE = "tid_test"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def make_call(kind: str = "track", **overrides: Any) -> dict[str, Any]:
    """A valid call of `kind`, with `overrides` (None removes a key)."""
    call: dict[str, Any] = {"type": kind, "userId": "user-1", "context": {"ip": "203.0.113.9"}}
    call |= {
        "identify": {"traits": {"email": "Ann@Example.com", "plan": "pro"}},
        "track": {"event": "Order Completed", "properties": {"total": 42.5}},
        "page": {"name": "Pricing", "properties": {"path": "/pricing"}},
        "screen": {"name": "Cart", "properties": {"items": 2}},
        "group": {"groupId": "acme", "traits": {"employees": 40}},
        "alias": {"previousId": "anon-9"},
    }[kind]
    call |= overrides
    return {k: v for k, v in call.items() if v is not None}


def send(engine: Engine, clock: FakeClock, config: Settings, kind: str, body: Any) -> int:
    return ingest.ingest(engine, clock, config, kind, orjson.dumps(body), SOURCE)


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tables.events).order_by(tables.events.c.id))
        return [dict(r._mapping) for r in rows]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.events)).scalar_one())


EXPECTED = {
    "identify": (None, {"email": "Ann@Example.com", "plan": "pro"}),
    "track": ("Order Completed", {"total": 42.5}),
    "page": ("Pricing", {"path": "/pricing", "category": "Docs"}),
    "screen": ("Cart", {"items": 2, "category": "Docs"}),
    "group": (None, {"groupId": "acme", "traits": {"employees": 40}}),
    "alias": (None, {"previousId": "anon-9"}),
}


@pytest.mark.parametrize("kind", spec.EVENT_TYPES)
def test_each_call_type_is_stored_as_its_row(
    kind: str, engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    category = {"category": "Docs"} if kind in ("page", "screen") else {}
    call = make_call(kind, messageId="m-1", anonymousId="anon-1", **category)
    assert send(engine, clock, settings, kind, call) == 1

    (row,) = stored(engine)
    assert (row["type"], row["name"], row["properties"]) == (kind, *EXPECTED[kind])
    assert (row["user_id"], row["anonymous_id"], row["message_id"]) == ("user-1", "anon-1", "m-1")
    assert row["context"] == {"ip": "203.0.113.9"}
    assert row["contact_id"] is None
    assert row["source"] == SOURCE
    assert row["timestamp"] == row["received_at"] == clock.now()
    assert row["sent_at"] is None


def test_batch_stores_every_call_with_batch_sent_at_and_context(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    calls = [make_call(kind, messageId=kind) for kind in spec.EVENT_TYPES]
    calls[0]["context"] = {"ip": "198.51.100.1", "locale": "de-DE"}
    calls[1]["sentAt"] = "2026-01-05T08:00:00Z"
    body = {
        "batch": calls,
        "sentAt": "2026-01-05T08:59:00Z",
        "context": {"library": {"name": "analytics-python"}, "ip": "192.0.2.1"},
    }
    assert send(engine, clock, settings, "batch", body) == len(calls)

    rows = stored(engine)
    assert [r["type"] for r in rows] == list(spec.EVENT_TYPES)
    assert rows[0]["context"] == {
        "library": {"name": "analytics-python"},
        "ip": "198.51.100.1",  # the call's own keys win
        "locale": "de-DE",
    }
    assert rows[2]["context"]["ip"] == "203.0.113.9"
    assert rows[0]["sent_at"] == datetime(2026, 1, 5, 8, 59, tzinfo=UTC)
    assert rows[1]["sent_at"] == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_timestamp_rules_and_clock_skew_correction(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    now = clock.now()
    calls = [
        # explicit timestamp wins, whatever else is sent
        make_call(
            messageId="explicit",
            timestamp="2025-12-24T18:30:00+01:00",
            originalTimestamp="2020-01-01T00:00:00Z",
            sentAt="2020-01-01T00:00:05Z",
        ),
        # the client's clock is 1 day behind: it happened 5 s before it was sent
        make_call(
            messageId="skewed",
            originalTimestamp="2026-01-04T08:59:50Z",
            sentAt="2026-01-04T08:59:55Z",
        ),
        make_call(messageId="original-only", originalTimestamp="2026-01-04T08:00:00Z"),
        make_call(messageId="nothing"),
        make_call(messageId="naive", timestamp="2026-01-05T07:00:00"),
    ]
    send(engine, clock, settings, "batch", {"batch": calls})

    when = {r["message_id"]: r["timestamp"] for r in stored(engine)}
    assert when["explicit"] == datetime(2025, 12, 24, 17, 30, tzinfo=UTC)
    assert when["skewed"] == now - timedelta(seconds=5)
    assert when["original-only"] == now
    assert when["nothing"] == now
    assert when["naive"] == datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_received_at_comes_from_the_clock(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    send(engine, clock, settings, "track", make_call(messageId="a"))
    later = clock.advance(hours=3)
    send(engine, clock, settings, "track", make_call(messageId="b"))

    assert [r["received_at"] for r in stored(engine)] == [later - timedelta(hours=3), later]


def test_a_repeated_message_id_is_stored_once(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    first = make_call(messageId="dup", properties={"n": 1})
    second = make_call(messageId="dup", properties={"n": 2})
    send(engine, clock, settings, "batch", {"batch": [first, second, make_call(messageId="x")]})
    send(engine, clock, settings, "track", second)
    send(engine, clock, settings, "batch", {"batch": [second]})

    rows = stored(engine)
    assert [r["message_id"] for r in rows] == ["dup", "x"]
    assert rows[0]["properties"] == {"n": 1}


def test_missing_message_ids_are_generated(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    send(engine, clock, settings, "batch", {"batch": [make_call(), make_call()]})

    ids = [r["message_id"] for r in stored(engine)]
    assert len(set(ids)) == 2 and all(len(i) == 36 for i in ids)


def test_numeric_user_ids_become_strings(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    send(engine, clock, settings, "identify", make_call("identify", userId=12345, traits={}))

    assert stored(engine)[0]["user_id"] == "12345"


def test_one_bad_call_fails_the_batch_naming_each_index(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    calls = [
        make_call(),
        make_call(userId=None),
        make_call(event=None),
        make_call("alias", previousId=None),
        make_call("group", groupId=""),
        {"type": "launch", "userId": "u"},
        "not an object",
        make_call(timestamp="yesterday", properties=[1]),
    ]
    with pytest.raises(errors.InvalidInput) as caught:
        send(engine, clock, settings, "batch", {"batch": calls})

    assert [f.field for f in caught.value.fields] == [
        "batch[1].userId",
        "batch[2].event",
        "batch[3].previousId",
        "batch[4].groupId",
        "batch[5].type",
        "batch[6].type",
        "batch[7].properties",
        "batch[7].timestamp",
    ]
    assert count(engine) == 0


def test_alias_needs_a_user_id(engine: Engine, clock: FakeClock, settings: Settings) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        send(engine, clock, settings, "alias", make_call("alias", userId=None, anonymousId="a"))

    assert [f.field for f in caught.value.fields] == ["userId"]


def test_invalid_traits_are_refused_but_valid_ones_stored_as_sent(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    bad = make_call("identify", traits={"email": "not-an-email", "timezone": "Mars/Base"})
    with pytest.raises(errors.InvalidInput) as caught:
        send(engine, clock, settings, "batch", {"batch": [make_call("identify"), bad]})
    assert [f.field for f in caught.value.fields] == [
        "batch[1].traits.email",
        "batch[1].traits.timezone",
    ]
    assert count(engine) == 0

    send(engine, clock, settings, "identify", make_call("identify"))
    assert stored(engine)[0]["properties"]["email"] == "Ann@Example.com"


def test_an_oversized_call_is_refused_by_index(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    big = make_call(properties={"blob": "x" * settings.max_event_bytes})
    with pytest.raises(errors.PayloadTooLarge) as caught:
        send(engine, clock, settings, "batch", {"batch": [make_call(), big]})

    assert [f.field for f in caught.value.fields] == ["batch[1]"]
    assert count(engine) == 0


def test_a_nul_character_is_refused_on_both_engines(
    engine: Engine, clock: FakeClock, settings: Settings
) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        send(engine, clock, settings, "track", make_call(properties={"note": "a\x00b"}))

    assert [f.field for f in caught.value.fields] == ["body"]
    send(engine, clock, settings, "track", make_call(properties={"note": "a\\u0000b"}))
    assert stored(engine)[0]["properties"] == {"note": "a\\u0000b"}


def test_malformed_json_is_refused() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        ingest.parse_json(b'{"batch": [')

    assert caught.value.fields[0].field == "body"


# -- properties of the pure parts ---------------------------------------------------------

moments = st.datetimes(  # hypothesis wants naive bounds; `timezones` makes the values aware
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@settings(max_examples=25)
@given(
    received=moments,
    timestamp=st.none() | moments,
    original=st.none() | moments,
    sent=st.none() | moments,
)
def test_event_time_follows_segment_rules(
    received: datetime,
    timestamp: datetime | None,
    original: datetime | None,
    sent: datetime | None,
) -> None:
    when = spec.event_time(received, timestamp, original, sent)

    if timestamp is not None:
        assert when == timestamp
    elif original is not None and sent is not None:
        assert received - when == sent - original  # same delay as the client saw
    else:
        assert when == received


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)
ids = st.sampled_from(["u-1", "", 7, True, None]) | json_values
times = st.sampled_from(["2026-01-05T09:00:00Z", "2026-01-05", "soon", 0]) | json_values
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=2) | json_values
calls = st.fixed_dictionaries(
    {"type": st.sampled_from([*spec.EVENT_TYPES, "launch"]) | json_values},
    optional={
        **dict.fromkeys(["userId", "anonymousId", "messageId", "groupId", "previousId"], ids),
        **dict.fromkeys(["event", "name", "category"], ids),
        **dict.fromkeys(["timestamp", "sentAt", "originalTimestamp"], times),
        **dict.fromkeys(["properties", "traits", "context"], objects),
    },
)


@settings(max_examples=25)
@given(st.lists(calls, max_size=4))
def test_any_batch_is_either_rows_or_errors_naming_fields(calls: list[dict[str, Any]]) -> None:
    env = spec.Envelope(T0, SOURCE)
    try:
        found = ingest.rows({"batch": calls}, "batch", env, 32 * 1024)
    except errors.InvalidInput as exc:
        assert exc.fields and all(f.field.startswith("batch[") for f in exc.fields)
        return
    assert len(found) == len(calls)
    for row, call in zip(found, calls, strict=True):
        assert row["type"] == call["type"]
        assert row["user_id"] or row["anonymous_id"]
        assert isinstance(row["properties"], dict) and isinstance(row["context"], dict)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_id=st.text(min_size=1, max_size=255) | st.integers(-(2**63), 2**63 - 1),
    properties=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_stored_row_keeps_what_was_sent(
    engine: Engine,
    clock: FakeClock,
    settings: Settings,
    user_id: str | int,
    properties: dict[str, Any],
) -> None:
    if b"\\u0000" in orjson.dumps([user_id, properties]):
        return  # refused on purpose (see the NUL test)
    message_id = f"m-{clock.advance(seconds=1).timestamp()}"
    call = make_call(userId=user_id, properties=properties, messageId=message_id)
    send(engine, clock, settings, "track", call)

    with engine.connect() as conn:
        row = conn.execute(
            select(tables.events).where(tables.events.c.message_id == message_id)
        ).one()
    assert (row.user_id, row.properties) == (str(user_id), properties)
