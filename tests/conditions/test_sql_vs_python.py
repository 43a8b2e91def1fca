"""The proof: for random condition trees over random contacts and events, the contacts the
compiled SQL selects are exactly those the Python evaluator accepts, on every engine.

Values are drawn from small pools that collide on purpose: JSON values of every type
(missing, null, booleans, whole and fractional numbers, text that looks like numbers and
dates, arrays, objects), events at the exact edges of windows and with equal timestamps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, insert, not_, select

from tidings.conditions import evaluate, model, nodes, snapshot, sql
from tidings.db import tables

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
MISSING = object()

# -- pools ------------------------------------------------------------------------------

SCALARS = [True, False, 0, 1, 1.0, 2, 2.5, -1, 100, 150.5, "a", "b", "ab", "B", "1", "é", "EUR"]
DATE_TEXTS = [
    "2025-12-20",
    "2026-01-04T10:00:00Z",
    "2026-01-05 08:00:00",
    "2026-01-05",
    "2025-01-05",
    "2020-01-07T23:59:59",
    "2024-02-29",
    "2026-02-01",
    "2026-01-05T09:00:00",
]
JSON_VALUES = [
    MISSING,
    None,
    "",
    *SCALARS,
    *DATE_TEXTS,
    ["a", 1, True],
    [2, "b", 2.5],
    [],
    {"k": 1},
]
ATTRIBUTES = ["plan", "age", "since", "interests"]
EVENT_NAMES = ["Order Completed", "Email Opened", "Email Clicked", "Signed Up"]
HOUR = timedelta(hours=1)
EVENT_TIMES = [
    NOW,
    NOW - HOUR,
    NOW + HOUR,
    NOW - timedelta(days=1),
    NOW - timedelta(days=30),
    NOW - timedelta(days=30, seconds=1),
    NOW - timedelta(days=90),
    NOW - timedelta(days=100),
    datetime(2025, 12, 1, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=UTC),
]
CREATED = [
    NOW - timedelta(days=2),
    NOW - timedelta(days=40),
    NOW - timedelta(days=365),
    datetime(2024, 2, 29, 12, tzinfo=UTC),
    datetime(2023, 1, 8, tzinfo=UTC),
    NOW,
]
DOMAINS = ["example.com", "Example.com", "shop.de", "example.com.au"]
TAGS = ["vip", "new", "churned"]
LISTS = ["newsletter", "promo"]
STATUSES = ["pending", "subscribed", "unsubscribed"]

# -- populations ------------------------------------------------------------------------


@dataclass
class Population:
    contacts: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _attributes(draw: st.DrawFn) -> dict[str, Any]:
    out = {}
    for name in ATTRIBUTES:
        value = draw(st.sampled_from(JSON_VALUES))
        if value is not MISSING:
            out[name] = value
    return out


@st.composite
def populations(draw: st.DrawFn, min_contacts: int = 1) -> Population:
    pop = Population()
    n = draw(st.integers(min_contacts, 12))
    for cid in range(1, n + 1):
        created = draw(st.sampled_from(CREATED))
        email = draw(st.sampled_from([None, *DOMAINS]))
        pop.contacts.append(
            {
                "id": cid,
                "email": email and f"p{cid}@{email}",
                "first_name": draw(st.sampled_from([None, "Ann", "ann", "Bo", "Émile", ""])),
                "country": draw(st.sampled_from([None, "DE", "FR", "US"])),
                "lifecycle_stage": draw(st.sampled_from([None, "lead", "customer"])),
                "score": draw(st.sampled_from([0, 10, 50, 51, 100, -5])),
                "attributes": _attributes(draw),
                "created_at": created,
                "updated_at": NOW,
            }
        )
        for tag in draw(st.sets(st.sampled_from(TAGS))):
            pop.tags.append({"contact_id": cid, "tag": tag})
        for list_id, _key in enumerate(LISTS, 1):
            status = draw(st.sampled_from([None, *STATUSES]))
            if status:
                pop.memberships.append(
                    {"list_id": list_id, "contact_id": cid, "status": status}
                    | {"created_at": NOW, "updated_at": NOW}
                )
    for eid in range(1, draw(st.integers(min_contacts - 1, 40)) + 1):
        props = {}
        for key, pool in PROPERTY_POOLS.items():
            value = draw(st.sampled_from([MISSING, *pool]))
            if value is not MISSING:
                props[key] = value
        pop.events.append(
            {
                "id": eid,
                "message_id": f"m{eid}",
                "type": "track",
                "name": draw(st.sampled_from(EVENT_NAMES)),
                "contact_id": draw(st.sampled_from([None, *range(1, n + 1)])),
                "properties": props,
                "context": {},
                "timestamp": draw(st.sampled_from(EVENT_TIMES)),
                "received_at": NOW,
            }
        )
    return pop


PROPERTY_POOLS: dict[str, list[Any]] = {
    "total": [None, 50, 100, 100.0, 150.5, "100", True],
    "currency": ["EUR", "USD", "eur"],
    "template": ["welcome", "promo"],
    "step": ["reminder", "welcome"],
    "campaign": ["spring"],
    "cart": [{"total": 120}, {"total": "x"}, {"id": 1}, [1]],
}


def insert_population(conn: Connection, pop: Population) -> None:
    """Replace every contact, tag, list, membership and event with `pop`."""
    for table in (
        tables.events,
        tables.list_memberships,
        tables.contact_tags,
        tables.contacts,
        tables.lists,
    ):
        conn.execute(delete(table))
    lists = [
        {"id": i, "key": key, "name": key, "created_at": NOW, "updated_at": NOW}
        for i, key in enumerate(LISTS, 1)
    ]
    conn.execute(insert(tables.lists), lists)
    for table, rows in (
        (tables.contacts, pop.contacts),
        (tables.contact_tags, pop.tags),
        (tables.list_memberships, pop.memberships),
        (tables.events, pop.events),
    ):
        if rows:
            conn.execute(insert(table), rows)


# -- conditions -------------------------------------------------------------------------

#: Values each operator is tried with, for custom attributes and event properties.
JSON_TRIES: dict[str, list[Any]] = {
    "eq": SCALARS,
    "ne": SCALARS,
    "gt": [0, 1, 2.5, 100, "a", "B", "2025"],
    "gte": [0, 1, 2, 100, "a", "ab"],
    "lt": [1, 2, 150.5, "b", "é"],
    "lte": [1.0, -1, "ab", "EUR"],
    "in": [[1, "a"], [True, 2.5], ["B", "é", 0], [False, "1"]],
    "not_in": [[1, "a"], [True, 2.5], [False, "1", 100]],
    "contains": ["a", "b", 1, 2.5, True, "é", "2026"],
    "starts_with": ["a", "20", "2026-01", "É"],
    "ends_with": ["b", "Z", "00", "9"],
    "exists": [True, False],
    "before": ["2025-12-20", "2026-01-05T08:00:00Z", "2026-01-05"],
    "after": ["2025-12-20", "2026-01-04T10:00:00Z", "2024-02-29"],
    "within_last": ["1d", "30d", "400d", "15h", "2w"],
    "within_next": ["1d", "30d", "2w", "400d"],
    "anniversary": ["today", "this_week"],
}
TEXT_VALUES = ["DE", "de", "FR", "Ann", "ann", "", "lead", "a", "É"]
TEXT_TRIES: dict[str, list[Any]] = {
    "eq": TEXT_VALUES,
    "ne": TEXT_VALUES,
    "gt": TEXT_VALUES,
    "lte": TEXT_VALUES,
    "in": [["DE", "FR"], ["ann", "Ann", ""]],
    "not_in": [["DE"], ["lead", "É"]],
    "contains": ["n", "ea", "@example", "É"],
    "starts_with": ["A", "p1", "cu"],
    "ends_with": ["n", ".com", "e"],
    "exists": [True, False],
}
DATE_TRIES = {op: JSON_TRIES[op] for op in ("before", "after", "within_last", "within_next")} | {
    "exists": [True, False],
    "anniversary": ["today", "this_week"],
    "gte": ["2025-12-06T09:00:00Z", "2024-02-29"],
    "lt": ["2026-01-03T09:00:00Z"],
}
SCORE_TRIES = {op: [0, 10, 50.5, 51, 100] for op in ("eq", "ne", "gt", "lte")} | {
    "in": [[0, 10], [51, 50.0]]
}
COUNT_TRIES = {op: [0, 1, 2, 3] for op in ("eq", "ne", "gt", "gte", "lt", "lte")}
WINDOW_TRIES: list[dict[str, Any]] = [
    {},
    *({"within": w} for w in ["1h", "1d", "30d", "90d", "3650d"]),
    {"between": ["2025-12-01", "2025-12-31"]},
    {"between": ["2025-12-31T23:59:59Z", "2026-01-05T09:00"]},
]


def _pools(tries: Mapping[str, list[Any]]) -> dict[str, st.SearchStrategy[Any]]:
    return {op: st.sampled_from(values) for op, values in tries.items()}


JSON_OPS = _pools(JSON_TRIES)
TEXT_OPS = _pools(TEXT_TRIES)
DATE_OPS = _pools(DATE_TRIES)
SCORE_OPS = _pools(SCORE_TRIES)


def _ops(pool: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.lists(st.sampled_from(sorted(pool)), min_size=1, max_size=2, unique=True)
    return names.flatmap(lambda ops: st.fixed_dictionaries({op: pool[op] for op in ops}))


def _attribute(name: st.SearchStrategy[str], pool: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    return st.builds(lambda n, ops: {"attribute": n, **ops}, name, _ops(pool))


WHERE = st.dictionaries(
    st.sampled_from(["total", "currency", "template", "cart.total", "missing"]),
    st.one_of(st.sampled_from(["EUR", 100, True, "welcome"]), _ops(JSON_OPS)),
    max_size=2,
)
COUNTS = _ops(_pools(COUNT_TRIES))
WINDOWS = st.sampled_from(WINDOW_TRIES)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"event": draw(st.sampled_from(EVENT_NAMES))}
    if where := draw(WHERE):
        rule["where"] = where
    shape = draw(st.sampled_from(["count", "plain", "first", "last"]))
    if shape == "first":
        op = draw(st.sampled_from(["before", "after", "within_last"]))
        rule["first"] = {op: draw(JSON_OPS[op])}
        return rule
    rule |= draw(WINDOWS)
    if shape == "count":
        rule["count"] = draw(COUNTS)
    elif shape == "last":
        prop = draw(st.sampled_from(["total", "currency", "cart.total", "step"]))
        rule["last"] = {"property": prop, **draw(_ops(JSON_OPS))}
    return rule


ENGAGEMENT = st.one_of(
    st.builds(
        lambda kind, target, window: {kind: target, **window},
        st.sampled_from(["opened", "clicked"]),
        st.sampled_from([True, "welcome", "reminder", "spring", "nope"]),
        WINDOWS,
    ),
    st.builds(
        lambda kind, filters, count: {"engagement": kind, **filters, **count},
        st.sampled_from(["opened", "clicked", "sent"]),
        st.dictionaries(
            st.sampled_from(["template", "step", "campaign"]),
            st.sampled_from(["welcome", "spring"]),
            max_size=2,
        ),
        st.one_of(st.just({}), st.builds(lambda c: {"count": c}, COUNTS)),
    ),
)

CUSTOM = _attribute(st.sampled_from([*ATTRIBUTES, "attributes.plan", "nothing"]), JSON_OPS)
LEAVES = st.one_of(
    CUSTOM,
    CUSTOM,
    CUSTOM,
    events(),
    _attribute(st.sampled_from(["country", "first_name", "email", "lifecycle_stage"]), TEXT_OPS),
    _attribute(st.just("created_at"), DATE_OPS),
    st.builds(lambda ops: {"score": ops}, _ops(SCORE_OPS)),
    st.builds(lambda d: {"email_domain": d}, st.sampled_from(DOMAINS)),
    st.builds(lambda t: {"tag": t}, st.sampled_from([*TAGS, "other"])),
    st.builds(lambda k: {"list": k}, st.sampled_from(LISTS)),
    st.builds(
        lambda k, s: {"list": {"key": k, "status": s}},
        st.sampled_from(LISTS),
        st.sampled_from(STATUSES),
    ),
    events(),
    ENGAGEMENT,
    st.builds(
        lambda p, s: {"random": {"percent": p, "seed": s}},
        st.sampled_from([0, 10, 50, 33.3, 100]),
        st.sampled_from(["", "x"]),
    ),
    st.builds(lambda k: {"segment": k}, st.sampled_from(["vips", "first-three", "odd"])),
)
CONDITIONS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=6,
)

# -- every leaf, systematically ----------------------------------------------------------


def _sweep(name: str, tries: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [{"attribute": name, op: value} for op, values in tries.items() for value in values]


PROPERTY_TRIES: dict[str, list[Any]] = {
    "eq": [100, "EUR", True, 150.5, "100"],
    "ne": [100, "EUR"],
    "gte": [100, "a"],
    "lt": [150.5, "b"],
    "exists": [True, False],
    "in": [[100, "EUR"]],
}


def _event_sweep(name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"event": name, **window} for window in WINDOW_TRIES]
    rules += [
        {"event": name, "count": {op: n}, **window}
        for op, ns in COUNT_TRIES.items()
        for n in ns
        for window in (WINDOW_TRIES[0], WINDOW_TRIES[3])
    ]
    rules += [
        {"event": name, "first": {op: value}}
        for op in ("before", "after", "within_last")
        for value in JSON_TRIES[op]
    ]
    for prop in ("total", "currency", "cart.total", "missing"):
        rules += [
            {"event": name, "where": {prop: {op: value}}}
            for op, values in PROPERTY_TRIES.items()
            for value in values
        ]
        rules += [
            {"event": name, "last": {"property": prop, op: value}}
            for op, values in PROPERTY_TRIES.items()
            for value in values
        ]
    return rules


CATALOGUE: list[dict[str, Any]] = [
    *_sweep("plan", JSON_TRIES),
    *_sweep("since", {op: JSON_TRIES[op] for op in ("eq", "gt", *list(JSON_TRIES)[-5:])}),
    *_sweep("interests", {op: JSON_TRIES[op] for op in ("contains", "eq", "ne", "exists")}),
    *_sweep("country", TEXT_TRIES),
    *_sweep("first_name", TEXT_TRIES),
    *_sweep("email", TEXT_TRIES),
    *_sweep("created_at", DATE_TRIES),
    *({"score": {op: value}} for op, values in SCORE_TRIES.items() for value in values),
    *({"email_domain": domain} for domain in DOMAINS),
    *({"tag": tag} for tag in TAGS),
    *({"list": {"key": key, "status": status}} for key in LISTS for status in STATUSES),
    *_event_sweep("Order Completed"),
    *_event_sweep("Email Opened"),
    *({kind: t} for kind in ("opened", "clicked") for t in (True, "welcome", "reminder", "spring")),
    *({"engagement": "opened", key: "welcome"} for key in ("template", "step", "campaign")),
    *({"random": {"percent": p, "seed": seed}} for p in (0, 10, 50, 100) for seed in ("", "x")),
    *({"segment": key} for key in ("vips", "first-three", "odd")),
]


# -- segments ---------------------------------------------------------------------------


def segment_sql(dialect: str) -> sql.SegmentResolver:
    """Three segments, one per shape a resolver may return."""

    def resolve(key: str) -> sql.SegmentSql:
        if key == "vips":
            return sql.compile(model.parse({"tag": "vip"}), now=NOW, dialect=dialect)
        if key == "first-three":
            return select(tables.contacts.c.id).where(tables.contacts.c.id <= 3)
        return {1, 3, 5, 7, 9, 11}

    return resolve


def segment_check(pop: Population) -> evaluate.SegmentCheck:
    vips = {row["contact_id"] for row in pop.tags if row["tag"] == "vip"}

    def check(key: str, contact_id: int) -> bool:
        if key == "vips":
            return contact_id in vips
        if key == "first-three":
            return contact_id <= 3
        return contact_id % 2 == 1

    return check


# -- the property -----------------------------------------------------------------------


def selected(engine: Engine, pop: Population, rules: list[Any]) -> list[tuple[set[int], set[int]]]:
    """For each rule, (ids SQL selects, ids Python accepts) over `pop`."""
    nodes_ = [model.parse(rule) for rule in rules]
    with engine.begin() as conn:
        insert_population(conn, pop)
    dialect = engine.dialect.name
    ids = {row["id"] for row in pop.contacts}
    check = segment_check(pop)
    out = []
    with engine.connect() as conn:
        everything = nodes.All(tuple(nodes_), "")
        snapshots = [snapshot.load(conn, cid, everything, NOW) for cid in sorted(ids)]
        for node in nodes_:
            where = sql.compile(node, now=NOW, dialect=dialect, segments=segment_sql(dialect))
            got = set(conn.scalars(select(tables.contacts.c.id).where(where)))
            rest = set(conn.scalars(select(tables.contacts.c.id).where(not_(where))))
            assert got | rest == ids, "the compiled condition is NULL for some contacts"
            assert not got & rest
            accepted = {
                snap.contact_id
                for snap in snapshots
                if evaluate.evaluate(node, snap, now=NOW, segments=check)
            }
            out.append((got, accepted))
    return out


@settings(
    max_examples=int(os.environ.get("CONDITIONS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pop=populations(), rules=st.lists(CONDITIONS, min_size=1, max_size=8))
def test_sql_selects_exactly_what_python_accepts(
    engine: Engine, pop: Population, rules: list[Any]
) -> None:
    for rule, (got, expected) in zip(rules, selected(engine, pop, rules), strict=True):
        assert got == expected, rule


@settings(
    max_examples=int(os.environ.get("CONDITIONS_SWEEPS", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pop=populations(min_contacts=8))
def test_every_operator_agrees_on_random_contacts(engine: Engine, pop: Population) -> None:
    """Each leaf of the language with each of its tried values, over one population."""
    for rule, (got, expected) in zip(CATALOGUE, selected(engine, pop, CATALOGUE), strict=True):
        assert got == expected, rule
