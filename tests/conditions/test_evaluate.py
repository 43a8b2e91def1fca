"""The Python evaluator, operator by operator and edge case by edge case; the
explanation tree; loading a bounded snapshot. The cases that differ most between engines
are also run through SQL on both (`agree`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from tidings import errors
from tidings.conditions import evaluate, model, snapshot, sql, values
from tidings.conditions.snapshot import EventFact, Snapshot

from .test_sql_vs_python import NOW, Population, selected


def holds(rule: Any, snap: Snapshot, **kw: Any) -> bool:
    return evaluate.evaluate(model.parse(rule), snap, now=NOW, **kw)


def attrs(**attributes: Any) -> Snapshot:
    return Snapshot(1, attributes=attributes)


def event(eid: int, name: str, at: datetime, **properties: Any) -> EventFact:
    return EventFact(eid, name, at, properties)


# -- custom attributes: the JSON value rules --------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule", "expected"),
    [
        (5, {"eq": 5}, True),
        (5.0, {"eq": 5}, True),
        ("5", {"eq": 5}, False),
        ("5", {"ne": 5}, True),
        (True, {"eq": 1}, False),
        (1, {"eq": True}, False),
        (True, {"eq": True}, True),
        (False, {"eq": 0}, False),
        (False, {"ne": False}, False),
        (None, {"eq": "x"}, False),
        (None, {"ne": "x"}, True),
        (None, {"exists": False}, True),
        (None, {"exists": True}, False),
        (2.5, {"gt": 2}, True),
        ("b", {"gt": "a"}, True),
        ("b", {"gt": 1}, False),
        (2, {"gt": "1"}, False),
        ("B", {"lt": "a"}, True),  # code point order
        ("é", {"gt": "z"}, True),
        ([1, 2], {"gt": 0}, False),
        ("a", {"in": ["a", 1]}, True),
        (1, {"in": ["1", True]}, False),
        (None, {"not_in": ["a"]}, True),
        ("abc", {"contains": "b"}, True),
        (["abc"], {"contains": "b"}, False),
        (["b", 2], {"contains": "b"}, True),
        ([True], {"contains": 1}, False),
        ([1.0], {"contains": 1}, True),
        ([[1]], {"contains": 1}, False),
        (12, {"contains": 1}, False),
        ("abc", {"starts_with": "ab"}, True),
        ("abc", {"ends_with": "bc"}, True),
        (["abc"], {"starts_with": "a"}, False),
        ({"a": 1}, {"exists": True}, True),
        ({"a": 1}, {"ne": 1}, True),
    ],
)
def test_json_values(value: Any, rule: dict[str, Any], expected: bool) -> None:
    assert holds({"attribute": "x", **rule}, attrs(x=value)) is expected


def test_missing_attribute() -> None:
    empty = attrs()
    for op, value in [
        ("eq", 1),
        ("gt", 1),
        ("in", [1]),
        ("contains", "a"),
        ("before", "2030-01-01"),
    ]:
        assert not holds({"attribute": "x", op: value}, empty)
    for op, value in [("ne", 1), ("not_in", [1]), ("exists", False)]:
        assert holds({"attribute": "x", op: value}, empty)


def test_several_operators_all_hold() -> None:
    assert holds({"attribute": "x", "gte": 1, "lt": 5}, attrs(x=3))
    assert not holds({"attribute": "x", "gte": 1, "lt": 5}, attrs(x=5))


# -- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule", "expected"),
    [
        ("2026-01-01", {"before": "2026-01-02"}, True),
        ("2026-01-02", {"before": "2026-01-02"}, False),  # strict
        ("2026-01-02T00:00:00Z", {"after": "2026-01-02"}, False),
        ("2026-01-02 00:00:01", {"after": "2026-01-02"}, True),
        ("2025-12-06", {"within_last": "30d"}, False),  # midnight is before 09:00 30 days ago
        ("2025-12-06T09:00:00Z", {"within_last": "30d"}, True),  # both ends included
        ("2026-01-05T09:00:00.999Z", {"within_last": "30d"}, True),  # to the second
        ("2026-01-05T09:00:01Z", {"within_last": "30d"}, False),
        ("2026-01-12", {"within_next": "1w"}, True),
        ("2026-01-13", {"within_next": "1w"}, False),
        ("2020-01-05", {"anniversary": "today"}, True),
        ("2020-01-11", {"anniversary": "this_week"}, True),
        ("2020-01-12", {"anniversary": "this_week"}, False),
        ("tomorrow", {"before": "2030-01-01"}, False),
        (20260101, {"before": "2030-01-01"}, False),
    ],
)
def test_json_dates(value: Any, rule: dict[str, Any], expected: bool) -> None:
    assert holds({"attribute": "d", **rule}, attrs(d=value)) is expected


def test_leap_day_anniversaries() -> None:
    leap = attrs(d="2024-02-29")
    feb28 = datetime(2025, 2, 28, 12, tzinfo=UTC)
    rule = model.parse({"attribute": "d", "anniversary": "today"})
    assert evaluate.evaluate(rule, leap, now=feb28)
    assert evaluate.evaluate(rule, attrs(d="2023-02-28"), now=feb28)
    assert not evaluate.evaluate(rule, leap, now=datetime(2028, 2, 28, tzinfo=UTC))
    assert evaluate.evaluate(rule, leap, now=datetime(2028, 2, 29, tzinfo=UTC))
    week = model.parse({"attribute": "d", "anniversary": "this_week"})
    assert evaluate.evaluate(week, leap, now=datetime(2025, 3, 2, tzinfo=UTC))  # Sunday


def test_profile_columns() -> None:
    snap = Snapshot(
        1,
        profile={
            "email": "ann@example.com",
            "country": "DE",
            "first_name": None,
            "score": 50,
            "created_at": datetime(2024, 1, 5, 12, tzinfo=UTC),
        },
    )
    assert holds({"attribute": "country", "eq": "de"}, snap)
    assert holds({"attribute": "first_name", "ne": "Ann"}, snap)
    assert not holds({"attribute": "first_name", "starts_with": "A"}, snap)
    assert holds({"score": {"gte": 50, "lt": 50.5}}, snap)
    assert holds({"attribute": "email", "ends_with": "@example.com"}, snap)
    assert holds({"email_domain": "Example.com"}, snap)
    assert not holds({"email_domain": "ample.com"}, snap)
    assert holds({"attribute": "created_at", "anniversary": "today"}, snap)
    assert holds({"attribute": "created_at", "before": "2024-01-06"}, snap)
    assert not holds({"attribute": "created_at", "within_last": "730d"}, snap)
    assert holds({"attribute": "created_at", "within_last": "731d"}, snap)


def test_tags_lists_random_segments() -> None:
    snap = Snapshot(7, tags=frozenset({"vip"}), lists={"news": "pending"})
    assert holds({"tag": "vip"}, snap) and not holds({"tag": "new"}, snap)
    assert not holds({"list": "news"}, snap)
    assert holds({"list": {"key": "news", "status": "pending"}}, snap)
    assert holds({"random": {"percent": 100}}, snap) and not holds({"random": {"percent": 0}}, snap)
    assert holds({"segment": "s"}, snap, segments=lambda key, cid: key == "s" and cid == 7)
    with pytest.raises(errors.InvalidInput):
        holds({"all": [{"segment": "s"}]}, snap)


def test_random_buckets_are_stable_and_spread() -> None:
    buckets = [values.bucket(cid, "seed") for cid in range(1, 20001)]
    assert buckets == [values.bucket(cid, "seed") for cid in range(1, 20001)]
    share = sum(b < 1000 for b in buckets) / len(buckets)
    assert 0.08 < share < 0.12
    other = [values.bucket(cid, "other") for cid in range(1, 20001)]
    both = sum(a < 5000 and b < 5000 for a, b in zip(buckets, other, strict=True)) / 20000
    assert 0.22 < both < 0.28  # independent halves overlap by about a quarter


# -- events -----------------------------------------------------------------------------

DAY = timedelta(days=1)


def orders() -> Snapshot:
    return Snapshot(
        1,
        events=(
            event(1, "Order Completed", NOW - 100 * DAY, total=50, currency="EUR"),
            event(2, "Order Completed", NOW - 10 * DAY, total=150, currency="EUR"),
            event(3, "Order Completed", NOW - DAY, total=120.5, currency="USD"),
            event(4, "Order Completed", NOW + DAY, total=999, currency="EUR"),  # future
            event(5, "Email Opened", NOW - 2 * DAY, template="welcome", step="s1"),
        ),
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"event": "Order Completed"}, True),
        ({"event": "Order Completed", "count": {"eq": 3}}, True),  # the future one is ignored
        ({"event": "Order Completed", "count": {"gte": 2}, "within": "30d"}, True),
        ({"event": "Order Completed", "count": {"gte": 3}, "within": "30d"}, False),
        ({"event": "Order Completed", "where": {"total": {"gte": 100}, "currency": "EUR"}}, True),
        ({"event": "Order Completed", "where": {"total": {"gte": 200}}}, False),
        ({"event": "Order Completed", "count": {"eq": 0}, "within": "5d"}, False),
        ({"event": "Signed Up", "count": {"eq": 0}}, True),
        ({"event": "Signed Up", "count": {"lt": 2}}, True),
        ({"event": "Order Completed", "between": ["2025-12-26", "2025-12-26"]}, True),
        ({"event": "Order Completed", "between": ["2025-12-27", "2026-01-03"]}, False),
        ({"event": "Order Completed", "first": {"before": "2025-10-01"}}, True),
        ({"event": "Order Completed", "first": {"within_last": "30d"}}, False),
        ({"event": "Order Completed", "first": {"after": "2025-01-01"}}, True),
        ({"event": "Signed Up", "first": {"before": "2030-01-01"}}, False),
        ({"event": "Order Completed", "last": {"property": "currency", "eq": "USD"}}, True),
        (
            {
                "event": "Order Completed",
                "last": {"property": "currency", "eq": "USD"},
                "within": "12h",
            },
            False,
        ),
        (
            {
                "event": "Order Completed",
                "where": {"currency": "EUR"},
                "last": {"property": "total", "eq": 150},
            },
            True,
        ),
        ({"event": "Signed Up", "last": {"property": "plan", "ne": "pro"}}, False),
        ({"opened": "welcome"}, True),
        ({"opened": "s1", "within": "1d"}, False),
        ({"opened": True}, True),
        ({"clicked": True}, False),
        ({"engagement": "opened", "template": "welcome", "step": "s2"}, False),
        ({"not": {"engagement": "opened", "within": "90d"}}, False),
    ],
)
def test_events(rule: dict[str, Any], expected: bool) -> None:
    assert holds(rule, orders()) is expected


def test_last_breaks_ties_by_id() -> None:
    snap = Snapshot(
        1, events=(event(2, "Plan", NOW, plan="pro"), event(1, "Plan", NOW, plan="free"))
    )
    assert holds({"event": "Plan", "last": {"property": "plan", "eq": "pro"}}, snap)


def test_nested_properties() -> None:
    snap = Snapshot(1, events=(event(1, "Cart", NOW, cart={"total": 120, "items": [1]}),))
    assert holds({"event": "Cart", "where": {"cart.total": {"gt": 100}}}, snap)
    assert not holds({"event": "Cart", "where": {"cart.items.x": {"exists": True}}}, snap)
    assert holds({"event": "Cart", "where": {"cart.missing": {"ne": 1}}}, snap)


# -- explanations -----------------------------------------------------------------------


def test_explanations_show_every_part_and_the_values_seen() -> None:
    rule = model.parse(
        {
            "all": [
                {"attribute": "plan", "eq": "pro"},
                {"not": {"tag": "churned"}},
                {"event": "Order Completed", "count": {"gte": 2}, "within": "30d"},
            ]
        }
    )
    snap = Snapshot(1, attributes={"plan": "free"}, tags=frozenset({"vip"}), events=orders().events)
    found = evaluate.explain(rule, snap, now=NOW).as_dict()
    assert found == {
        "path": "",
        "holds": False,
        "rule": rule.rule,
        "children": [
            {
                "path": "all[0]",
                "holds": False,
                "rule": {"attribute": "plan", "eq": "pro"},
                "seen": "free",
            },
            {
                "path": "all[1]",
                "holds": True,
                "rule": {"not": {"tag": "churned"}},
                "children": [
                    {
                        "path": "all[1].not",
                        "holds": False,
                        "rule": {"tag": "churned"},
                        "seen": ["vip"],
                    }
                ],
            },
            {
                "path": "all[2]",
                "holds": True,
                "rule": {"event": "Order Completed", "count": {"gte": 2}, "within": "30d"},
                "seen": {
                    "count": 2,
                    "first": (NOW - 10 * DAY).isoformat(),
                    "last": (NOW - DAY).isoformat(),
                },
            },
        ],
    }


# -- snapshots from the database --------------------------------------------------------


def population() -> Population:
    contact = {
        "id": 1,
        "email": "ann@example.com",
        "country": "DE",
        "score": 5,
        "attributes": {"plan": "pro", "flag": True, "none": None},
        "created_at": NOW - DAY,
        "updated_at": NOW,
    }
    events = [
        {
            "id": i,
            "message_id": f"m{i}",
            "type": "track",
            "name": name,
            "contact_id": 1,
            "properties": {"n": i},
            "context": {},
            "timestamp": at,
            "received_at": NOW,
        }
        for i, (name, at) in enumerate(
            [
                ("A", NOW - 100 * DAY),
                ("A", NOW - DAY),
                ("B", NOW - 40 * DAY),
                ("B", NOW - DAY),
                ("C", NOW - DAY),
                ("A", NOW + DAY),
            ],
            1,
        )
    ]
    return Population(
        contacts=[contact],
        tags=[{"contact_id": 1, "tag": "vip"}],
        memberships=[
            {
                "list_id": 1,
                "contact_id": 1,
                "status": "pending",
                "created_at": NOW,
                "updated_at": NOW,
            }
        ],
        events=events,
    )


def test_snapshot_loads_only_what_the_condition_needs(engine: Engine) -> None:
    selected(engine, population(), [{"tag": "vip"}])
    rule = model.parse({"any": [{"event": "A"}, {"event": "B", "within": "30d"}]})
    with engine.connect() as conn:
        snap = snapshot.load(conn, 1, rule, NOW)
    assert snap.profile["country"] == "DE" and snap.profile["created_at"] == NOW - DAY
    assert snap.attributes == {"plan": "pro", "flag": True, "none": None}
    assert snap.tags == {"vip"} and snap.lists == {"newsletter": "pending"}
    assert [(e.name, e.id) for e in snap.events] == [("A", 1), ("A", 2), ("B", 4)]
    assert snap.events[0].properties == {"n": 1}
    with engine.connect() as conn:
        assert snapshot.load(conn, 1, model.parse({"tag": "vip"}), NOW).events == ()
        with pytest.raises(errors.TidingsError, match="more than 1 events"):
            snapshot.load(conn, 1, rule, NOW, max_events=1)
        with pytest.raises(errors.NotFound):
            snapshot.load(conn, 2, rule, NOW)


def test_event_windows() -> None:
    rule = model.parse(
        {
            "all": [
                {"event": "A", "within": "30d"},
                {"event": "A", "within": "60d"},
                {"event": "B", "within": "1d"},
                {"event": "B", "first": {"before": "2025-01-01"}},
                {"opened": True, "between": ["2025-12-01", "2025-12-02"]},
            ]
        }
    )
    assert snapshot.event_windows(rule, NOW) == {
        "A": NOW - 60 * DAY,
        "B": None,
        "Email Opened": datetime(2025, 12, 1, tzinfo=UTC),
    }


# -- the engine quirks, through SQL too -------------------------------------------------


def agree(engine: Engine, attributes: list[dict[str, Any]], rules: list[Any]) -> list[set[int]]:
    """The ids each rule selects, after checking SQL and Python agree on them."""
    pop = Population(
        contacts=[
            {"id": i, "score": 0, "attributes": a, "created_at": NOW, "updated_at": NOW}
            for i, a in enumerate(attributes, 1)
        ]
    )
    out = []
    for got, expected in selected(engine, pop, rules):
        assert got == expected
        out.append(got)
    return out


def test_booleans_are_not_numbers_on_any_engine(engine: Engine) -> None:
    people = [{"x": True}, {"x": 1}, {"x": False}, {"x": 0}, {"x": "1"}, {"x": [True]}, {"x": [1]}]
    found = agree(
        engine,
        people,
        [
            {"attribute": "x", "eq": True},
            {"attribute": "x", "eq": 1},
            {"attribute": "x", "in": [0, False]},
            {"attribute": "x", "gte": 1},
            {"attribute": "x", "contains": True},
            {"attribute": "x", "contains": 1},
            {"attribute": "x", "ne": 1},
        ],
    )
    assert found == [{1}, {2}, {3, 4}, {2}, {6}, {7}, {1, 3, 4, 5, 6, 7}]


def test_null_is_missing_on_any_engine(engine: Engine) -> None:
    people = [{"x": None}, {}, {"x": "a"}, {"x": {}}, {"x": []}]
    found = agree(
        engine,
        people,
        [
            {"attribute": "x", "exists": True},
            {"attribute": "x", "exists": False},
            {"attribute": "x", "ne": "a"},
            {"attribute": "x", "not_in": ["a", 1]},
            {"not": {"attribute": "x", "eq": "a"}},
        ],
    )
    assert found == [{3, 4, 5}, {1, 2}, {1, 2, 4, 5}, {1, 2, 4, 5}, {1, 2, 4, 5}]


def test_numbers_and_text_order_the_same_on_any_engine(engine: Engine) -> None:
    people = [{"x": 1}, {"x": 1.0}, {"x": 2.5}, {"x": "B"}, {"x": "a"}, {"x": "é"}, {"x": "10"}]
    found = agree(
        engine,
        people,
        [
            {"attribute": "x", "eq": 1},
            {"attribute": "x", "gt": 1},
            {"attribute": "x", "lt": "a"},
            {"attribute": "x", "gt": "z"},
            {"attribute": "x", "gt": 9},
        ],
    )
    assert found == [{1, 2}, {3}, {4, 7}, {6}, set()]


def test_a_segment_resolver_is_needed_for_segments() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        sql.compile(model.parse({"not": {"segment": "vip"}}), now=NOW, dialect="sqlite")
    assert caught.value.fields[0].field == "not"
