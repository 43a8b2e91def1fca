"""Parsing conditions: what each form becomes, and every problem named by its path."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tidings import errors
from tidings.conditions import durations, model, nodes, values

DOCS = Path(__file__).parents[2] / "docs" / "conditions.md"


KINDS = (
    "all, any, not, attribute, email_domain, tag, score, list, event, opened, clicked, "
    "engagement, segment, random"
)
ISO_DATE = "must be an ISO date or date-time, like 2026-01-31 or 2026-01-31T09:00:00Z"
DURATION = "must be a duration like 90m, 12h, 30d or 2w (a whole number and a unit)"
ENGAGEMENTS = "must be one of: sent, delivered, opened, clicked, bounced, complained, unsubscribed"


def problems(data: Any) -> dict[str, str]:
    with pytest.raises(errors.InvalidInput) as caught:
        model.parse(data)
    return {f.field: f.message for f in caught.value.fields}


# -- the docs ---------------------------------------------------------------------------


def doc_examples() -> list[tuple[str, str]]:
    blocks = re.findall(r"```(json(?: invalid)?)\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) > 25
    return blocks


@pytest.mark.parametrize(("kind", "text"), doc_examples())
def test_every_example_in_the_docs_parses(kind: str, text: str) -> None:
    data = json.loads(text)
    if kind == "json":
        model.parse(data)
    else:
        assert problems(data)


def test_the_documented_error_paths() -> None:
    (text,) = [t for kind, t in doc_examples() if kind == "json invalid"]
    assert problems(json.loads(text)) == {
        "all[1].attribute.gte": "must be a number",
        "all[2].event.where.total.gte": "must be a number or text",
    }


# -- what forms become ------------------------------------------------------------------


def test_combinators_nest_and_keep_paths() -> None:
    node = model.parse({"all": [{"tag": "a"}, {"any": [{"not": {"tag": "b"}}]}]})
    assert isinstance(node, nodes.All)
    inner = node.children[1]
    assert isinstance(inner, nodes.AnyOf)
    negated = inner.children[0]
    assert isinstance(negated, nodes.Not)
    assert negated.child == nodes.Tag("b", "all[1].any[0].not")
    assert negated.path == "all[1].any[0]"


def test_profile_columns_are_typed_and_others_are_custom() -> None:
    assert model.parse({"attribute": "country", "eq": "de"}) == nodes.Profile(
        "country", (values.Test("eq", "DE", "attribute.eq"),), ""
    )
    assert isinstance(model.parse({"attribute": "plan", "eq": 1}), nodes.Attribute)
    custom = model.parse({"attribute": "attributes.email", "exists": True})
    assert custom == nodes.Attribute(
        "email", (values.Test("exists", True, "attribute.exists"),), ""
    )


def test_shorthands() -> None:
    assert model.parse({"score": {"gte": 50}}) == nodes.Profile(
        "score", (values.Test("gte", 50, "score.gte"),), ""
    )
    assert model.parse({"score": 7}) == nodes.Profile(
        "score", (values.Test("eq", 7, "score.eq"),), ""
    )
    assert model.parse({"email_domain": "@Example.COM"}) == nodes.EmailDomain("example.com", "")
    assert model.parse({"list": "news"}) == nodes.ListMember("news", "subscribed", "")
    assert model.parse({"list": {"key": "news", "status": "pending"}}) == nodes.ListMember(
        "news", "pending", ""
    )


def test_dates_and_durations_are_read_once() -> None:
    node = model.parse(
        {
            "attribute": "created_at",
            "before": "2026-01-05",
            "within_last": "2w",
            "gte": date(2025, 1, 1),
        }
    )
    assert isinstance(node, nodes.Profile)
    values = [t.value for t in node.tests]
    assert values == [
        datetime(2026, 1, 5, tzinfo=UTC),
        timedelta(weeks=2),
        datetime(2025, 1, 1, tzinfo=UTC),
    ]
    offset = model.parse({"attribute": "since", "after": "2026-01-05T10:00:00+02:00"})
    assert isinstance(offset, nodes.Attribute)
    assert offset.tests[0].value == datetime(2026, 1, 5, 8, tzinfo=UTC)


def test_event_defaults_to_at_least_once() -> None:
    node = model.parse({"event": "Signed Up"})
    assert isinstance(node, nodes.Event)
    assert [(t.op, t.value) for t in node.count] == [("gte", 1)]
    assert node.within is None and node.between is None


def test_event_parts() -> None:
    node = model.parse(
        {
            "event": "Order Completed",
            "where": {
                "total": {"gte": 100, "lt": 500},
                "currency": "EUR",
                "cart.id": {"exists": True},
            },
            "count": {"gte": 2},
            "between": ["2025-12-01", "2025-12-31T12:00:00Z"],
        }
    )
    assert isinstance(node, nodes.Event)
    assert [p.keys for p in node.where] == [("total",), ("currency",), ("cart", "id")]
    assert [(t.op, t.value) for t in node.where[0].tests] == [("gte", 100), ("lt", 500)]
    assert node.where[1].tests == (values.Test("eq", "EUR", "event.where.currency"),)
    assert node.between == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2025, 12, 31, 12, 0, 0, 1, tzinfo=UTC),
    )
    bare = model.parse({"event": "X", "between": ["2025-12-01", "2025-12-31"]})
    assert isinstance(bare, nodes.Event) and bare.between
    assert bare.between[1] == datetime(2026, 1, 1, tzinfo=UTC)


def test_first_and_last() -> None:
    first = model.parse({"event": "Order Completed", "first": {"before": "2025-01-01"}})
    assert isinstance(first, nodes.Event) and first.first and not first.count
    last = model.parse(
        {"event": "Plan", "last": {"property": "plan", "ne": "free"}, "within": "30d"}
    )
    assert isinstance(last, nodes.Event) and last.last and not last.count
    assert last.last.keys == ("plan",) and last.within == timedelta(days=30)


def test_engagement_is_an_event() -> None:
    opened = model.parse({"opened": "reminder", "within": "7d"})
    assert isinstance(opened, nodes.Event)
    assert opened.name == "Email Opened"
    assert [p.keys for p in opened.where_any] == [("step",), ("template",), ("campaign",)]
    anything = model.parse({"clicked": True})
    assert isinstance(anything, nodes.Event) and not anything.where_any
    general = model.parse(
        {"engagement": "bounced", "campaign": "spring", "count": {"gte": 2}, "within": "90d"}
    )
    assert isinstance(general, nodes.Event)
    assert general.name == "Email Bounced"
    assert general.where[0].tests == (values.Test("eq", "spring", "engagement.campaign"),)
    assert [(t.op, t.value) for t in general.count] == [("gte", 2)]
    unsub = model.parse({"engagement": "unsubscribed"})
    assert isinstance(unsub, nodes.Event) and unsub.name == "Unsubscribed"


def test_random_and_segment() -> None:
    assert model.parse({"random": {"percent": 12.34, "seed": "s"}}) == nodes.Random(
        12.34, 1234, "s", ""
    )
    assert model.parse({"segment": "vip"}) == nodes.Segment("vip", "")


def test_a_prefix_path_is_kept() -> None:
    assert problems({"tag": ""}) == {"tag": "must be a name of 1 to 255 characters"}
    with pytest.raises(errors.InvalidInput) as caught:
        model.parse({"all": [{"tag": 1}]}, "steps[3].if")
    assert caught.value.fields[0].field == "steps[3].if.all[0].tag"


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            "vip",
            {"condition": f"must be an object with one of: {KINDS}"},
        ),
        ({"colour": "red"}, {"colour": "unknown condition"}),
        (
            {"tag": "a", "list": "b"},
            {
                "condition": "must have exactly one of: all, any, not, "
                "attribute, email_domain, tag, score, list, event, opened, clicked, engagement, "
                "segment, random"
            },
        ),
        ({"all": []}, {"all": "must be a non-empty list of conditions"}),
        ({"any": {"tag": "a"}}, {"any": "must be a non-empty list of conditions"}),
        ({"all": [{"tag": "a"}], "extra": 1}, {"all.extra": "unknown key"}),
        (
            {"not": {}},
            {
                "not": "must have exactly one of: all, any, not, attribute, email_domain, "
                "tag, score, list, event, opened, clicked, engagement, segment, random"
            },
        ),
        (
            {"attribute": "plan"},
            {"attribute": "needs an operator, like eq, gte, exists or within_last"},
        ),
        ({"attribute": "plan", "equals": 1}, {"attribute.equals": "unknown operator"}),
        (
            {"attribute": "country", "within_last": "3d"},
            {"attribute.within_last": "not for text values"},
        ),
        ({"attribute": "score", "gte": "abc"}, {"attribute.gte": "must be a number"}),
        ({"attribute": "score", "gte": True}, {"attribute.gte": "must be a number"}),
        ({"attribute": "email", "eq": 5}, {"attribute.eq": "must be text"}),
        ({"attribute": "created_at", "eq": "2025-01-01"}, {"attribute.eq": "not for date values"}),
        (
            {"attribute": "created_at", "before": "yesterday"},
            {"attribute.before": ISO_DATE},
        ),
        (
            {"attribute": "created_at", "before": "2025-02-30"},
            {"attribute.before": "is not a valid date or date-time"},
        ),
        (
            {"attribute": "plan", "eq": None},
            {"attribute.eq": "must be a value; to match a missing attribute use exists: false"},
        ),
        (
            {"attribute": "plan", "eq": [1]},
            {"attribute.eq": "must be text, a number or true/false"},
        ),
        ({"attribute": "plan", "gt": True}, {"attribute.gt": "must be a number or text"}),
        ({"attribute": "plan", "gt": 2**60}, {"attribute.gt": "must be a number or text"}),
        ({"attribute": "plan", "in": []}, {"attribute.in": "must be a list of 1 to 1000 values"}),
        (
            {"attribute": "plan", "in": ["a", {"b": 1}]},
            {"attribute.in[1]": "must be text, a number or true/false"},
        ),
        (
            {"attribute": "plan", "starts_with": ""},
            {"attribute.starts_with": "must be non-empty text"},
        ),
        ({"attribute": "plan", "exists": "yes"}, {"attribute.exists": "must be true or false"}),
        (
            {"attribute": "plan", "anniversary": "tomorrow"},
            {"attribute.anniversary": "must be today or this_week"},
        ),
        (
            {"attribute": "plan", "within_last": "20y"},
            {"attribute.within_last": DURATION},
        ),
        (
            {"attribute": "plan", "within_last": "3660d"},
            {"attribute.within_last": "must be at most 3653d"},
        ),
        ({"attribute": "attributes.", "eq": 1}, {"attribute": "needs a name after 'attributes.'"}),
        ({"attribute": 'a"b', "eq": 1}, {"attribute": 'must not contain " or \\'}),
        ({"score": {}}, {"score": "needs an operator, like gte"}),
        ({"score": {"gte": "x"}}, {"score.gte": "must be a number"}),
        ({"email_domain": "a@b.com"}, {"email_domain": "must be a domain, like example.com"}),
        (
            {"list": {"key": "n", "status": "gone"}},
            {"list.status": "must be one of: pending, subscribed, unsubscribed"},
        ),
        (
            {"list": {"name": "n"}},
            {"list.name": "unknown key", "list.key": "must be a name of 1 to 255 characters"},
        ),
        ({"random": {"percent": 101}}, {"random.percent": "must be a number from 0 to 100"}),
        ({"random": 5}, {"random": "must be an object like {percent: 10, seed: spring-test}"}),
        ({"event": ""}, {"event": "must be a name of 1 to 255 characters"}),
        ({"event": "X", "when": "now"}, {"event.when": "unknown key"}),
        (
            {"event": "X", "count": {"gte": -1}},
            {"event.count.gte": "must be a whole number, 0 or more"},
        ),
        ({"event": "X", "count": {"most": 1}}, {"event.count.most": "unknown operator"}),
        ({"event": "X", "count": 2}, {"event.count": "must be an object like {gte: 2}"}),
        (
            {"event": "X", "within": "30d", "between": ["2025-01-01", "2025-02-01"]},
            {"event.between": "cannot be used with within"},
        ),
        (
            {"event": "X", "between": ["2025-02-01", "2025-01-01"]},
            {"event.between": "must end after it starts"},
        ),
        (
            {"event": "X", "between": ["2025-02-01"]},
            {"event.between": "must be [from, to]: two dates or date-times"},
        ),
        ({"event": "X", "within": "0d"}, {"event.within": "must be longer than zero"}),
        (
            {"event": "X", "where": {"total": {}}},
            {"event.where.total": "needs an operator, like eq or gte"},
        ),
        (
            {"event": "X", "where": {"a..b": 1}},
            {"event.where.a..b": "must not have an empty part between dots"},
        ),
        (
            {"event": "X", "where": {"total": {"gte": 1, "near": 2}}},
            {"event.where.total.near": "unknown operator"},
        ),
        (
            {"event": "X", "where": []},
            {"event.where": "must be an object of at most 50 property filters"},
        ),
        (
            {"event": "X", "first": {"before": "2025-01-01"}, "count": {"gte": 2}},
            {"event.count": "cannot be used with first"},
        ),
        (
            {"event": "X", "first": {"eq": "2025-01-01"}},
            {"event.first": "must be an object with one of: before, after, within_last"},
        ),
        (
            {"event": "X", "last": {"eq": 1}},
            {"event.last": "must be an object like {property: plan, eq: pro}"},
        ),
        (
            {"event": "X", "last": {"property": "p", "eq": 1}, "count": {"eq": 1}},
            {"event.count": "cannot be used with last"},
        ),
        ({"opened": ""}, {"opened": "must be a name of 1 to 255 characters"}),
        ({"opened": "x", "template": "y"}, {"opened.template": "unknown key"}),
        (
            {"engagement": "read"},
            {"engagement": ENGAGEMENTS},
        ),
        (
            {"engagement": ["opened"]},
            {"engagement": ENGAGEMENTS},
        ),
        (
            {"engagement": "opened", "campaign": 3},
            {"engagement.campaign": "must be a name of 1 to 255 characters"},
        ),
        ({"segment": None}, {"segment": "must be a name of 1 to 255 characters"}),
    ],
)
def test_problems_are_named_by_path(data: Any, expected: dict[str, str]) -> None:
    assert problems(data) == expected


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "any": [
                {"tag": "ok"},
                {"attribute": "score", "gte": "abc"},
                {"all": [{"event": "Order Completed", "where": {"total": {"gte": "1", "x": 2}}}]},
                {"not": {"nope": 1}},
            ]
        }
    )
    assert found == {
        "any[1].attribute.gte": "must be a number",
        "any[2].all[0].event.where.total.x": "unknown operator",
        "any[3].not.nope": "unknown condition",
    }


def test_groups_have_a_size_limit() -> None:
    assert problems({"any": [{"tag": "a"}] * 1001}) == {"any": "must have at most 1000 conditions"}


# -- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        (" 1d ", timedelta(days=1)),
    ],
)
def test_durations(text: str, span: timedelta) -> None:
    assert durations.parse(text) == span


@pytest.mark.parametrize("text", ["", "d", "1.5d", "-1d", "1 d", "1y", "1dd", 30, None, "1d2h"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        durations.parse(text, "wait")
    assert caught.value.fields[0].field == "wait"


def test_durations_are_bounded() -> None:
    assert durations.parse("3653d") == durations.MAX
    with pytest.raises(errors.InvalidInput):
        durations.parse("522w")
    assert durations.parse("100d", maximum=timedelta(days=100)) == timedelta(days=100)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(weeks=2), "2w"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=3), "3d"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=5), "5m"),
    ],
)
def test_durations_format_back(span: timedelta, text: str) -> None:
    assert durations.format(span) == text
    assert durations.parse(text) == span
