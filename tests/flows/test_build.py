"""Reading the written flow format: what each form becomes, how nested steps are
flattened and named, every problem named by its path, normalising, reading files."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings import errors
from tidings.conditions import values
from tidings.conditions.nodes import Property, Segment, Tag
from tidings.flows import build, graph, step_checks

ALL_DAYS = frozenset(range(7))
SLUG = "must be a lower-case slug: a-z, 0-9, '-' and '_', at most 100 characters"
DURATION = "must be a duration like 90m, 12h, 30d or 2w (a whole number and a unit)"


def make_flow(**overrides: Any) -> dict[str, Any]:
    """A small valid definition; keys given replace its own (None removes one)."""
    data: dict[str, Any] = {
        "key": "welcome",
        "name": "Welcome",
        "trigger": {"event": "Signed Up"},
        "steps": [{"send_email": {"template": "hello"}}],
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def steps_of(*steps: Any, **overrides: Any) -> dict[str, graph.Step]:
    return dict(build.load(make_flow(steps=list(steps), **overrides)).steps)


def problems(data: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(errors.InvalidInput) as caught:
        build.load(data, **kwargs)
    return {f.field: f.message for f in caught.value.fields}


# -- the whole flow ---------------------------------------------------------------------


def test_a_small_flow() -> None:
    flow = build.load(make_flow(description="Say hello"))
    assert flow == graph.Flow(
        key="welcome",
        name="Welcome",
        trigger=graph.EventTrigger("Signed Up"),
        start="s0",
        steps={"s0": graph.Send("s0", None, "email", "hello")},
        description="Say hello",
    )


def test_top_level_problems() -> None:
    assert problems({"key": "Welcome!", "name": "", "colour": "red"}) == {
        "colour": "unknown key",
        "trigger": "is required",
        "steps": "is required",
        "key": SLUG,
        "name": "must not be empty",
    }
    assert problems([1, 2]) == {"flow": "must be an object with key, name, trigger and steps"}
    assert problems(make_flow(steps=[])) == {"steps": "must be a non-empty list of steps"}


# -- triggers ---------------------------------------------------------------------------

TRIGGERS: list[tuple[Any, graph.Trigger]] = [
    ({"event": "Order Completed"}, graph.EventTrigger("Order Completed")),
    (
        {"event": "Order Completed", "where": {"total": {"gte": 100}}},
        graph.EventTrigger(
            "Order Completed",
            (
                Property(
                    ("total",),
                    (values.Test("gte", 100, "trigger.where.total.gte"),),
                    "trigger.where.total",
                ),
            ),
        ),
    ),
    ({"segment_entered": "vip"}, graph.SegmentTrigger("vip")),
    ({"segment_left": "vip"}, graph.SegmentTrigger("vip", entered=False)),
    ({"list_joined": "newsletter"}, graph.ListJoined("newsletter")),
    ({"form_submitted": "contact-us"}, graph.FormSubmitted("contact-us")),
    ({"date_attribute": "birthday"}, graph.DateTrigger("birthday")),
    (
        {"date_attribute": "created_at", "offset": "-7d", "at": "10:30"},
        graph.DateTrigger("created_at", -7, time(10, 30)),
    ),
    ({"date_attribute": "attributes.renewal", "offset": "2w"}, graph.DateTrigger("renewal", 14)),
    ({"date_attribute": "birthday", "offset": 0}, graph.DateTrigger("birthday", 0)),
    ({"inactive": "90d"}, graph.InactiveTrigger(90)),
    ({"inactive": "2w", "events": ["Page Viewed"]}, graph.InactiveTrigger(14, ("Page Viewed",))),
    ({"score_reached": 50}, graph.ScoreReached(50)),
    ({"api": True}, graph.ApiTrigger()),
    ("api", graph.ApiTrigger()),
    (
        {"schedule": {"every": "7d", "starting": "2026-01-05T09:00:00+01:00", "segment": "vip"}},
        graph.ScheduleTrigger(timedelta(days=7), datetime(2026, 1, 5, 8, tzinfo=UTC), "vip"),
    ),
    (
        {"schedule": {"every": "1h", "starting": datetime(2026, 1, 5, 9, tzinfo=UTC)}},
        graph.ScheduleTrigger(timedelta(hours=1), datetime(2026, 1, 5, 9, tzinfo=UTC)),
    ),
]


@pytest.mark.parametrize(("written", "expected"), TRIGGERS)
def test_trigger_forms(written: Any, expected: graph.Trigger) -> None:
    assert build.load(make_flow(trigger=written)).trigger == expected


ONE_TRIGGER = (
    "must be an object with exactly one of: event, segment_entered, segment_left, list_joined, "
    "form_submitted, date_attribute, inactive, score_reached, api, schedule"
)
BAD_TRIGGERS: list[tuple[Any, dict[str, str]]] = [
    ({"event": "X", "segment_entered": "vip"}, {"trigger": ONE_TRIGGER}),
    ({}, {"trigger": ONE_TRIGGER}),
    ("manual", {"trigger": ONE_TRIGGER}),
    ({"event": ""}, {"trigger.event": "must be a name of 1 to 255 characters"}),
    (
        {"event": "X", "where": {"total": {"gte": "a lot", "zz": 1}}},
        {"trigger.where.total.zz": "unknown operator"},
    ),
    ({"segment_entered": "VIP"}, {"trigger.segment_entered": SLUG}),
    ({"list_joined": "news", "where": {}}, {"trigger.where": "unknown key"}),
    (
        {"date_attribute": "email"},
        {"trigger.date_attribute": "is a profile field that holds no date"},
    ),
    (
        {"date_attribute": "birthday", "offset": "-36h", "at": "25:00"},
        {
            "trigger.offset": "must be whole days like -7d or 3d, or 0",
            "trigger.at": 'must be a time of day like "09:00"',
        },
    ),
    (
        {"date_attribute": "birthday", "at": 1200},
        {
            "trigger.at": 'must be a time of day like "09:00" '
            "(quote it in YAML: unquoted 20:00 reads as a number)"
        },
    ),
    ({"inactive": "36h"}, {"trigger.inactive": "must be whole days, like 90d"}),
    ({"inactive": "90d", "events": []}, {"trigger.events": "must name at least one event"}),
    ({"score_reached": "50"}, {"trigger.score_reached": "must be a whole number"}),
    ({"api": False}, {"trigger.api": "must be true"}),
    (
        {"schedule": {"every": "10m", "starting": "2026-01-05T09:00:00"}},
        {
            "trigger.schedule.every": "must be at least 1h",
            "trigger.schedule.starting": "must be an ISO date-time with a zone, "
            "like 2026-01-05T09:00:00+01:00",
        },
    ),
    ({"schedule": {"every": "1d"}}, {"trigger.schedule.starting": "is required"}),
]


@pytest.mark.parametrize(("written", "expected"), BAD_TRIGGERS)
def test_bad_triggers_name_their_path(written: Any, expected: dict[str, str]) -> None:
    assert problems(make_flow(trigger=written)) == expected


# -- entry, exits, goal ------------------------------------------------------------------


def test_entry_rules() -> None:
    assert build.load(make_flow()).entry == graph.Entry()
    entry = {"reentry": "after_exit", "key": "properties.cart_id", "filter": {"segment": "vip"}}
    assert build.load(make_flow(entry=entry)).entry == graph.Entry(
        "after_exit", "properties.cart_id", Segment("vip", "entry.filter")
    )
    context = build.load(make_flow(entry={"reentry": "always", "key": "context.page.url"}))
    assert context.entry == graph.Entry("always", "context.page.url")


def test_entry_problems() -> None:
    bad = {"reentry": "twice", "key": "cart_id", "filter": {"tag": ""}, "limit": 1}
    assert problems(make_flow(entry=bad)) == {
        "entry.limit": "unknown key",
        "entry.reentry": "must be 'once', 'after_exit' or 'always'",
        "entry.key": "must be a path into the trigger event, like properties.cart_id",
        "entry.filter.tag": "must be a name of 1 to 255 characters",
    }
    keyed = make_flow(entry={"key": "properties.cart_id"}, trigger={"inactive": "30d"})
    assert problems(keyed) == {
        "entry.key": "needs a trigger that starts runs from an event: event, segment_entered, "
        "segment_left, list_joined, form_submitted or api"
    }


def test_exit_rules() -> None:
    written = [
        {"event": "Order Completed", "where": {"total": {"gt": 0}}, "match_key": True},
        {"unsubscribed": True, "reason": "unsubscribed"},
        {"segment_left": "trial"},
        {"condition": {"tag": "customer"}, "reason": "bought"},
    ]
    flow = build.load(make_flow(entry={"key": "properties.cart_id"}, exit_when=written))
    total = Property(
        ("total",),
        (values.Test("gt", 0, "exit_when[0].where.total.gt"),),
        "exit_when[0].where.total",
    )
    segment = Property(
        ("segment",),
        (values.Test("eq", "trial", "exit_when[2].segment_left"),),
        "exit_when[2].segment_left",
    )
    assert flow.exit_when == (
        graph.ExitRule(graph.EventMatch("Order Completed", (total,), match_key=True)),
        graph.ExitRule(graph.EventMatch("Unsubscribed"), reason="unsubscribed"),
        graph.ExitRule(graph.EventMatch("Segment Left", (segment,))),
        graph.ExitRule(condition=Tag("customer", "exit_when[3].condition"), reason="bought"),
    )


def test_exit_rule_problems() -> None:
    written = [
        {"event": "Order Completed", "match_key": True},
        {"unsubscribed": True, "segment_left": "trial"},
        {"condition": {"colour": "red"}},
        {"segment_left": "trial", "reason": 3},
    ]
    assert problems(make_flow(exit_when=written)) == {
        "exit_when[0].match_key": "needs entry.key: runs have no key to match",
        "exit_when[1]": "must be an object with exactly one of: event, unsubscribed, "
        "segment_left, condition",
        "exit_when[2].condition.colour": "unknown condition",
        "exit_when[3].reason": "must be text",
    }
    assert problems(make_flow(exit_when={"unsubscribed": True})) == {
        "exit_when": "must be a list of exit rules"
    }


def test_goal() -> None:
    written = {"event": "Order Completed", "within": "7d", "revenue": "order.total", "exit": False}
    flow = build.load(make_flow(goal=written))
    assert flow.goal == graph.Goal(
        graph.EventMatch("Order Completed"), timedelta(days=7), "order.total", exit=False
    )
    plain = build.load(make_flow(goal={"event": "Order Completed", "within": "2w"})).goal
    assert plain == graph.Goal(graph.EventMatch("Order Completed"), timedelta(days=14))
    assert problems(make_flow(goal={"event": "X"})) == {"goal.within": "is required"}
    bad = {"event": "X", "within": "7d", "revenue": "a..b", "match_key": True, "exit": "yes"}
    assert problems(make_flow(goal=bad)) == {
        "goal.exit": "must be true or false",
        "goal.match_key": "needs entry.key: runs have no key to match",
        "goal.revenue": "must not have an empty part between dots",
    }


# -- settings ---------------------------------------------------------------------------


def test_settings() -> None:
    written = {
        "send_window": {"days": "mon-fri", "from": "08:30", "to": "18:00", "tz": "Europe/Berlin"},
        "frequency_cap": {"email": 2, "sms": 1, "per": "1d", "then": "defer"},
        "active": {"from": "2026-01-01", "until": "2026-03-31T23:00:00Z"},
    }
    settings = build.load(make_flow(settings=written)).settings
    assert settings == graph.FlowSettings(
        graph.SendWindow(frozenset(range(5)), time(8, 30), time(18), "Europe/Berlin"),
        {
            "email": graph.FrequencyCap(2, timedelta(days=1)),
            "sms": graph.FrequencyCap(1, timedelta(days=1)),
        },
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 31, 23, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("mon-sun", ALL_DAYS),
        ("sat", frozenset({5})),
        ("fri-mon", frozenset({4, 5, 6, 0})),
        (["mon", "wed", "Friday"], frozenset({0, 2, 4})),
    ],
)
def test_send_window_days(days: Any, expected: frozenset[int]) -> None:
    window = {"days": days, "from": "09:00", "to": "17:00", "tz": "contact", "spread": 0}
    settings = build.load(make_flow(settings={"send_window": window})).settings
    assert settings.send_window == graph.SendWindow(
        expected, time(9), time(17), "contact", timedelta(0)
    )


def test_settings_problems() -> None:
    written = {
        "send_window": {
            "days": ["mon", "someday"],
            "from": "20:00",
            "to": "09:00",
            "tz": "Mars/Olympus",
        },
        "frequency_cap": {"email": 0, "per": "16h", "then": "drop"},
        "active": {"from": "2026-02-01", "until": "2026-01-01"},
        "quiet": True,
    }
    assert problems(make_flow(settings=written)) == {
        "settings.quiet": "unknown key",
        "settings.send_window.days[1]": "must be a day: mon, tue, wed, thu, fri, sat, sun",
        "settings.send_window.to": "must be after from (a window cannot cross midnight)",
        "settings.send_window.tz": "must be contact or a time zone name like Europe/Berlin",
        "settings.frequency_cap.email": "must be at least 1",
        "settings.frequency_cap.then": "must be 'defer'",
        "settings.active.until": "must be after from",
    }
    assert problems(make_flow(settings={"frequency_cap": {"per": "1d"}})) == {
        "settings.frequency_cap": "needs a cap for email or sms, like {email: 1, per: 16h}"
    }
    assert problems(make_flow(settings={"send_window": {"from": "9am"}})) == {
        "settings.send_window.from": 'must be a time of day like "09:00"'
    }


# -- steps ------------------------------------------------------------------------------


def test_sending_steps() -> None:
    assert steps_of(
        {"send_email": {"template": "hello"}},
        {"send_sms": {"template": "hello-sms"}},
        {"webhook": {"url": "https://crm.example/hook"}},
        {
            "webhook": {
                "url": "http://localhost:9000/in",
                "method": "PUT",
                "headers": {"X-Token": "abc"},
                "body": {"when": datetime(2026, 1, 5, tzinfo=UTC), "n": [1, 2]},
            }
        },
        {"notify": {"to": "sales@example.com", "template": "hot-lead"}},
        {"notify": {"to": "+4930123456", "text": "New lead"}},
        {
            "notify": {
                "to": "https://hooks.slack.com/services/T0/B0/x",
                "text": "New lead",
                "via": "slack",
            }
        },
    ) == {
        "s0": graph.Send("s0", "s1", "email", "hello"),
        "s1": graph.Send("s1", "s2", "sms", "hello-sms"),
        "s2": graph.Send(
            "s2", "s3", "webhook", None, {"url": "https://crm.example/hook", "method": "POST"}
        ),
        "s3": graph.Send(
            "s3",
            "s4",
            "webhook",
            None,
            {
                "url": "http://localhost:9000/in",
                "method": "PUT",
                "headers": {"X-Token": "abc"},
                "body": {"when": "2026-01-05T00:00:00+00:00", "n": [1, 2]},
            },
        ),
        "s4": graph.Send(
            "s4", "s5", "notify", "hot-lead", {"to": "sales@example.com", "via": "email"}
        ),
        "s5": graph.Send(
            "s5", "s6", "notify", None, {"to": "+4930123456", "via": "sms", "text": "New lead"}
        ),
        "s6": graph.Send(
            "s6",
            None,
            "notify",
            None,
            {"to": "https://hooks.slack.com/services/T0/B0/x", "via": "slack", "text": "New lead"},
        ),
    }


def test_waiting_steps() -> None:
    assert steps_of(
        {"wait": "1h"},
        {"wait": {"duration": "2d"}},
        {"wait": {"until": "09:00", "days": "mon-fri"}},
        {"wait": {"until": "18:30"}},
        {"wait": {"until_attribute": "renewal_date", "offset": "-1d", "at": "09:00"}},
        {"wait": {"until_attribute": "trial_ends"}},
    ) == {
        "s0": graph.Wait("s0", "s1", duration=timedelta(hours=1)),
        "s1": graph.Wait("s1", "s2", duration=timedelta(days=2)),
        "s2": graph.Wait("s2", "s3", until=time(9), days=frozenset(range(5))),
        "s3": graph.Wait("s3", "s4", until=time(18, 30)),
        "s4": graph.Wait(
            "s4", "s5", until_attribute="renewal_date", offset=timedelta(days=-1), at=time(9)
        ),
        "s5": graph.Wait("s5", None, until_attribute="trial_ends"),
    }


def test_wait_until_forms() -> None:
    steps = steps_of(
        {"id": "hello", "send_email": {"template": "hello"}},
        {
            "wait_until": {"opened": "hello", "timeout": "2d"},
            "then": [{"score": 5}],
            "else": ["exit"],
        },
        {"wait_until": {"clicked": "hello"}, "then": [{"score": 10}]},
        {"wait_until": {"event": "Email Clicked", "message": "hello", "timeout": "1d"}},
        {
            "wait_until": {
                "event": "Order Completed",
                "where": {"total": {"gt": 0}},
                "match_key": True,
            }
        },
        entry={"key": "properties.cart_id"},
    )
    total = Property(
        ("total",),
        (values.Test("gt", 0, "steps[4].wait_until.where.total.gt"),),
        "steps[4].wait_until.where.total",
    )
    assert steps["s1"] == graph.WaitUntil(
        "s1", "s1.then.0", "s1.else.0", None, "hello", "opened", timedelta(days=2)
    )
    assert steps["s2"] == graph.WaitUntil("s2", "s2.then.0", "s3", None, "hello", "clicked")
    assert steps["s3"] == graph.WaitUntil(
        "s3", "s4", "s4", None, "hello", "clicked", timedelta(days=1)
    )
    assert steps["s4"] == graph.WaitUntil(
        "s4", None, None, graph.EventMatch("Order Completed", (total,), match_key=True)
    )
    awaited = {"event": "Order Completed", "message": "hello", "where": {"a": 1}}
    wrong = [{"id": "hello", "send_email": {"template": "hello"}}, {"wait_until": awaited}]
    assert problems(make_flow(steps=wrong)) == {
        "steps[1].wait_until.message": "goes only with the events Email Opened and Email Clicked",
        "steps[1].wait_until.where": "cannot be used with message",
    }


def test_deciding_steps() -> None:
    steps = steps_of(
        {"if": {"tag": "vip"}, "then": [{"score": 1}], "else": [{"score": 2}]},
        {"if": {"segment": "trial"}, "else": [{"score": 3}]},
        {"split": {"a": 50, "b": 30, "holdout": 20}, "a": [{"score": 4}], "b": []},
        {"score": "+1"},
    )
    assert steps["s0"] == graph.Branch("s0", Tag("vip", "steps[0].if"), "s0.then.0", "s0.else.0")
    assert steps["s1"] == graph.Branch("s1", Segment("trial", "steps[1].if"), "s2", "s1.else.0")
    assert steps["s2"] == graph.Split(
        "s2", (("a", 50, "s2.a.0"), ("b", 30, "s3"), ("holdout", 20, "s3"))
    )


def test_contact_steps_exit_and_goto() -> None:
    assert steps_of(
        {"id": "top", "wait": "1d"},
        {
            "update_contact": {
                "set": {"stage": "lead", "plan": {"name": "pro"}},
                "unset": ["trial_ends"],
                "add_tags": ["cart"],
                "remove_tags": ["cold"],
                "add_to_list": "customers",
                "remove_from_list": ["prospects", "trial"],
                "move_to_list": {"from": "leads", "to": "clients"},
            }
        },
        {"score": 10},
        {"score": "-5"},
        {"if": {"tag": "done"}, "then": [{"exit": "finished"}]},
        {"if": {"tag": "bored"}, "then": [{"goto": "top"}]},
        {"exit": True},
    ) == {
        "top": graph.Wait("top", "s1", duration=timedelta(days=1)),
        "s1": graph.UpdateContact(
            "s1",
            "s2",
            set={"stage": "lead", "plan": {"name": "pro"}},
            unset=("trial_ends",),
            add_tags=("cart",),
            remove_tags=("cold",),
            add_to_lists=("customers", "clients"),
            remove_from_lists=("prospects", "trial", "leads"),
        ),
        "s2": graph.Score("s2", "s3", 10),
        "s3": graph.Score("s3", "s4", -5),
        "s4": graph.Branch("s4", Tag("done", "steps[4].if"), "s4.then.0", "s5"),
        "s4.then.0": graph.Exit("s4.then.0", "finished"),
        "s5": graph.Branch("s5", Tag("bored", "steps[5].if"), "s5.then.0", "s6"),
        "s5.then.0": graph.Goto("s5.then.0", "top"),
        "s6": graph.Exit("s6"),
    }


def test_nested_lists_are_flattened_in_order() -> None:
    split = {"split": {"a": 1, "b": 1}, "a": [{"wait": "1h"}, {"score": 1}], "b": [{"score": 2}]}
    check = {
        "id": "check",
        "if": {"tag": "vip"},
        "then": [{"send_email": {"template": "vip"}}, split],
    }
    flow = build.load(make_flow(steps=[check, {"id": "last", "score": 3}]))
    # Derived ids follow the position, not the parent's written id.
    assert list(flow.steps) == [
        "check", "s0.then.0", "s0.then.1", "s0.then.1.a.0", "s0.then.1.a.1", "s0.then.1.b.0", "last"
    ]  # fmt: skip
    steps = flow.steps
    assert flow.start == "check"
    assert steps["check"] == graph.Branch("check", Tag("vip", "steps[0].if"), "s0.then.0", "last")
    assert steps["s0.then.0"] == graph.Send("s0.then.0", "s0.then.1", "email", "vip")
    assert steps["s0.then.1"] == graph.Split(
        "s0.then.1", (("a", 1, "s0.then.1.a.0"), ("b", 1, "s0.then.1.b.0"))
    )
    assert steps["s0.then.1.a.1"] == graph.Score("s0.then.1.a.1", "last", 1)
    assert steps["s0.then.1.b.0"] == graph.Score("s0.then.1.b.0", "last", 2)
    assert steps["last"] == graph.Score("last", None, 3)


# -- step problems ----------------------------------------------------------------------

ACTIONS = (
    "send_email, send_sms, webhook, notify, wait, wait_until, if, split, update_contact, "
    "score, exit, goto"
)
BAD_STEPS: list[tuple[Any, dict[str, str]]] = [
    ({"send_email": {"template": "Hello!"}}, {"steps[0].send_email.template": SLUG}),
    (
        {"send_email": {"template": "hello", "subject": "Hi"}},
        {"steps[0].send_email.subject": "unknown key"},
    ),
    ({"send_email": "hello"}, {"steps[0].send_email": "must be an object"}),
    ({"send_sms": {}}, {"steps[0].send_sms.template": "is required"}),
    ({"send_emial": {"template": "hello"}}, {"steps[0].send_emial": "unknown action"}),
    ({"id": "x"}, {"steps[0]": f"must have exactly one action: {ACTIONS}"}),
    (
        {"send_email": {"template": "a"}, "wait": "1h"},
        {"steps[0]": "has more than one action (send_email, wait): give each its own step"},
    ),
    (42, {"steps[0]": "must be an object with one action, or the word exit"}),
    ({"wait": "1h", "then": []}, {"steps[0].then": "unknown key"}),
    ({"wait": "soon"}, {"steps[0].wait": DURATION}),
    (
        {"wait": {"duration": "1h", "until": "09:00"}},
        {
            "steps[0].wait": "must be an object with exactly one of: "
            "duration, until, until_attribute"
        },
    ),
    ({"wait": {"until": "9"}}, {"steps[0].wait.until": 'must be a time of day like "09:00"'}),
    (
        {"wait": {"until": "09:00", "days": "weekdays"}},
        {"steps[0].wait.days": "must be a day: mon, tue, wed, thu, fri, sat, sun"},
    ),
    (
        {"wait": {"until_attribute": "renewal", "offset": "soon"}},
        {"steps[0].wait.offset": "must be a duration like -1d or 2h, or 0"},
    ),
    (
        {"webhook": {"url": "ftp://example.com"}},
        {"steps[0].webhook.url": "must be an http or https URL"},
    ),
    (
        {"webhook": {"url": "https://x.example", "method": "DELETE"}},
        {"steps[0].webhook.method": "must be 'POST', 'PUT', 'PATCH' or 'GET'"},
    ),
    ({"notify": {"to": "sales@example.com"}}, {"steps[0].notify": "needs a template or a text"}),
    (
        {"notify": {"to": "sales", "text": "Hi"}},
        {
            "steps[0].notify.to": "must be an email address, a phone number like "
            "+4930123456 or an https URL"
        },
    ),
    (
        {"notify": {"to": "sales@example.com", "text": "Hi", "via": "sms"}},
        {"steps[0].notify.to": "must be a phone number like +4930123456 (via sms)"},
    ),
    ({"if": {"tag": "vip"}}, {"steps[0]": "needs then, else or both"}),
    ({"if": {"colour": "red"}, "then": []}, {"steps[0].if.colour": "unknown condition"}),
    ({"if": {"tag": "vip"}, "then": {"score": 1}}, {"steps[0].then": "must be a list of steps"}),
    ({"split": {"a": 0, "b": 0}}, {"steps[0].split": "needs an arm with a weight above 0"}),
    (
        {"split": {}},
        {"steps[0].split": "must name 1 to 100 arms and their weights, like {a: 50, b: 50}"},
    ),
    ({"split": {"a": 1, "B": 1}}, {"steps[0].split.B": SLUG}),
    (
        {"split": {"a": 1, "b": 1.5}},
        {"steps[0].split.b": "must be a whole number, 0 or more (0 sends nobody down this arm)"},
    ),
    ({"split": {"a": 1}, "c": [{"score": 1}]}, {"steps[0].c": "is not an arm of this split (a)"}),
    ({"split": {"id": 1}}, {"steps[0].split.id": "is a step key: choose another arm name"}),
    (
        {"update_contact": {}},
        {
            "steps[0].update_contact": "needs a change: set, unset, add_tags, remove_tags, "
            "add_to_list, remove_from_list or move_to_list"
        },
    ),
    (
        {"update_contact": {"set": {"score": 5}}},
        {"steps[0].update_contact.set.score": "cannot be set here: use a score step"},
    ),
    (
        {"update_contact": {"add_to_list": ["ok", "Not OK"]}},
        {"steps[0].update_contact.add_to_list[1]": SLUG},
    ),
    (
        {"update_contact": {"move_to_list": {"to": "b"}}},
        {"steps[0].update_contact.move_to_list.from": "is required"},
    ),
    (
        {"score": 0},
        {"steps[0].score": "must be a whole number of points other than 0, like +10 or -5"},
    ),
    (
        {"score": "ten"},
        {"steps[0].score": "must be a whole number of points other than 0, like +10 or -5"},
    ),
    ({"exit": 3}, {"steps[0].exit": "must be true or a reason of at most 255 characters"}),
    ({"goto": "nowhere"}, {"steps[0].goto": "no step has the id 'nowhere'"}),
    (
        {"wait_until": {"event": "Order Completed", "match_key": True}},
        {"steps[0].wait_until.match_key": "needs entry.key: runs have no key to match"},
    ),
    ({"wait_until": {"opened": "s9"}}, {"steps[0].wait_until.opened": "no step has the id 's9'"}),
    (
        {"wait_until": {"opened": "s0"}},
        {"steps[0].wait_until.opened": "must be the id of a send_email or send_sms step"},
    ),
    (
        {"wait_until": {"event": "Order Completed", "timeout": "never"}},
        {"steps[0].wait_until.timeout": DURATION},
    ),
    (
        {"wait_until": {"tag": "vip"}},
        {"steps[0].wait_until": "must be an object with exactly one of: event, opened, clicked"},
    ),
]


@pytest.mark.parametrize(("step", "expected"), BAD_STEPS)
def test_bad_steps_name_their_path(step: Any, expected: dict[str, str]) -> None:
    assert problems(make_flow(steps=[step])) == expected


def test_problems_deep_in_the_tree_name_their_path() -> None:
    steps = [
        {"wait": "1d"},
        {"if": {"tag": "vip"}, "else": [{"score": 1}]},
        {"split": {"a": 1, "b": 1}, "b": [{"send_email": {}}]},
        {"if": {"tag": "x"}, "then": [
            {"score": 1},
            {"wait_until": {"clicked": "s0"}, "else": [{"send_email": {"template": "Nope"}}]},
        ]},
    ]  # fmt: skip
    assert problems(make_flow(steps=steps)) == {
        "steps[2].b[0].send_email.template": "is required",
        "steps[3].then[1].else[0].send_email.template": SLUG,
        "steps[3].then[1].wait_until.clicked": "must be the id of a send_email or send_sms step",
    }


def test_unknown_templates_are_named() -> None:
    steps = [
        {"send_email": {"template": "hello"}},
        {"send_sms": {"template": "hello"}},
        {"notify": {"to": "sales@example.com", "template": "hello"}},
    ]
    known = {("email", "hello"), ("notify", "hello")}
    found = problems(make_flow(steps=steps), known_templates=lambda c, k: (c, k) in known)
    assert found == {"steps[1].send_sms.template": "there is no sms template 'hello'"}
    asked: list[tuple[str, str]] = []

    def known_to_all(channel: str, key: str) -> bool:
        asked.append((channel, key))
        return True

    build.load(make_flow(steps=steps), known_templates=known_to_all)
    assert asked == [("email", "hello"), ("sms", "hello"), ("notify", "hello")]


def test_ids_written_and_derived() -> None:
    steps = steps_of({"id": "first", "score": 1}, {"score": 2}, {"id": "s2", "score": 3})
    assert list(steps) == ["first", "s1", "s2"]  # s2 is the id its own position gives
    assert problems(make_flow(steps=[{"id": "a", "score": 1}, {"id": "a", "score": 2}])) == {
        "steps[1].id": "is already the id of steps[0]"
    }
    assert problems(make_flow(steps=[{"score": 1}, {"id": "s0", "score": 2}])) == {
        "steps[1].id": "is the id of another position (s1 here): use a slug or leave it out"
    }
    assert problems(make_flow(steps=[{"id": "Hello there", "score": 1}])) == {"steps[0].id": SLUG}


def test_steps_after_an_exit_or_goto_are_never_reached() -> None:
    assert problems(make_flow(steps=["exit", {"score": 1}, {"score": 2}])) == {
        "steps[1]": "is never reached: the step before it ends the run (exit)"
    }
    steps = [
        {"id": "top", "wait": "1d"},
        {"if": {"tag": "a"}, "then": [{"goto": "top"}, {"score": 1}]},
    ]
    assert problems(make_flow(steps=steps)) == {
        "steps[1].then[1]": "is never reached: the step before it jumps elsewhere (goto)"
    }
    both = [{"if": {"tag": "a"}, "then": ["exit"], "else": ["exit"]}, {"score": 1}]
    assert problems(make_flow(steps=both)) == {
        "steps[1]": "is never reached: every way to it ends the run or jumps elsewhere first"
    }


def test_a_loop_must_pass_a_real_wait() -> None:
    endless = [{"id": "top", "score": 1}, {"goto": "top"}]
    message = "loops back to top without passing a wait or wait_until: the run would never stop"
    assert problems(make_flow(steps=endless)) == {"steps[1].goto": message}
    by_date = [{"id": "top", "wait": {"until_attribute": "renewal"}}, {"goto": "top"}]
    assert problems(make_flow(steps=by_date)) == {
        "steps[1].goto": message  # a date already past would not stop the run
    }
    assert problems(make_flow(steps=[{"id": "me", "goto": "me"}])) == {
        "steps[0].goto": "loops back to me without passing a wait or wait_until: "
        "the run would never stop"
    }
    waiting = [{"id": "top", "score": 1}, {"wait": "7d"}, {"goto": "top"}]
    assert list(steps_of(*waiting)) == ["top", "s1", "s2"]
    awaiting = [
        {"id": "top", "send_email": {"template": "a"}},
        {"wait_until": {"clicked": "top", "timeout": "3d"}, "else": [{"goto": "top"}]},
    ]
    assert list(steps_of(*awaiting)) == ["top", "s1", "s1.else.0"]


def test_an_awaited_message_must_be_sent_before() -> None:
    later = [
        {"wait_until": {"opened": "mail"}, "then": [{"score": 1}]},
        {"id": "mail", "send_email": {"template": "a"}},
    ]
    assert problems(make_flow(steps=later)) == {
        "steps[0].wait_until.opened": "must be a send step that comes before this one"
    }
    sideways = [
        {"if": {"tag": "a"}, "then": [{"id": "mail", "send_email": {"template": "a"}}],
         "else": [{"wait_until": {"opened": "mail"}}]},
    ]  # fmt: skip
    assert problems(make_flow(steps=sideways)) == {
        "steps[0].else[0].wait_until.opened": "must be a send step that comes before this one"
    }


def test_size_limits() -> None:
    many = [{"score": 1}] * 1001
    assert problems(make_flow(steps=many)) == {
        "steps": "must have at most 1000 steps, counting nested ones"
    }
    assert len(steps_of(*[{"score": 1}] * 1000)) == 1000
    deep: list[Any] = [{"score": 1}]
    for _ in range(31):
        deep = [{"if": {"tag": "a"}, "then": deep}]
    found = problems(make_flow(steps=deep))
    assert list(found.values()) == ["nests steps more than 30 levels deep"]


# -- normalising ------------------------------------------------------------------------


def test_normalise_writes_every_id() -> None:
    data = make_flow(
        trigger={"schedule": {"every": "7d", "starting": datetime(2026, 1, 5, 9, tzinfo=UTC)}},
        steps=[
            {"id": "check", "if": {"tag": "vip"}, "then": [{"score": 1}, "exit"]},
            {"split": {"a": 1, "b": 1}, "a": [{"wait": "1h"}]},
            "exit",
        ],
    )
    stored = build.normalise(data)
    assert stored["trigger"] == {
        "schedule": {"every": "7d", "starting": "2026-01-05T09:00:00+00:00"}
    }
    assert stored["steps"] == [
        {"id": "check", "if": {"tag": "vip"}, "then": [
            {"id": "s0.then.0", "score": 1}, {"id": "s0.then.1", "exit": True},
        ]},
        {"id": "s1", "split": {"a": 1, "b": 1}, "a": [{"id": "s1.a.0", "wait": "1h"}]},
        {"id": "s2", "exit": True},
    ]  # fmt: skip
    assert json.loads(json.dumps(stored)) == stored
    assert build.normalise(stored) == stored
    assert build.load(stored) == build.load(data)
    assert data["steps"][2] == "exit"  # the input is left as it was


def test_normalise_checks_like_load() -> None:
    with pytest.raises(errors.InvalidInput):
        build.normalise(make_flow(steps=[{"score": 0}]))


# -- files ------------------------------------------------------------------------------


def test_read_path_reads_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("key: b\nwhen: 2026-01-05\n")
    (tmp_path / "a.json").write_text('{"key": "a"}')
    (tmp_path / "c.yml").write_text("key: c\n")
    (tmp_path / "notes.txt").write_text("not a flow")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.yaml").write_text("key: d\n")
    found = build.read_path(tmp_path)
    assert [(Path(name).name, data["key"]) for name, data in found] == [
        ("a.json", "a"),
        ("b.yaml", "b"),
        ("c.yml", "c"),
    ]
    assert build.read_path(tmp_path / "c.yml") == [(str(tmp_path / "c.yml"), {"key": "c"})]
    (tmp_path / "empty").mkdir()
    assert build.read_path(tmp_path / "empty") == []


def test_read_path_names_the_file_and_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("key: a\nsteps:\n  - wait: 1h\n  wait: 2h\n")
    with pytest.raises(errors.InvalidInput) as caught:
        build.read_path(bad_yaml)
    [problem] = caught.value.fields
    assert problem.field == str(bad_yaml)
    assert problem.message.startswith("line 4, column 3: ")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"key": "a",\n "steps": [}')
    with pytest.raises(errors.InvalidInput) as caught:
        build.read_path(bad_json)
    assert caught.value.fields[0].message.startswith("line 2, column ")
    for path, message in [
        (tmp_path / "missing.yaml", "does not exist"),
        (tmp_path / "flow.txt", "must be a .yaml, .yml or .json file"),
    ]:
        path.parent.mkdir(exist_ok=True)
        if path.suffix == ".txt":
            path.write_text("key: a")
        with pytest.raises(errors.InvalidInput) as caught:
            build.read_path(path)
        assert caught.value.fields == [errors.FieldError(str(path), message)]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(errors.InvalidInput, match="cannot be read"):
        build.read_path(binary)


# -- property: any valid tree ---------------------------------------------------------------

LEAVES: list[Any] = [
    {"send_email": {"template": "hello"}},
    {"send_sms": {"template": "hello"}},
    {"score": 5},
    {"update_contact": {"add_tags": ["seen"]}},
    {"webhook": {"url": "https://crm.example/hook"}},
    {"wait_until": {"event": "Order Completed", "timeout": "1d"}},
]


@st.composite
def step_lists(draw: st.DrawFn, depth: int = 0, may_end: bool = True) -> list[Any]:
    """A valid list of steps. Only a list that `may_end` may end with exit or goto, and
    only `then` lists and arm `a` may: so no branching step ends every way, and every
    step is reachable. A goto's target is filled in later (always a wait step)."""
    size = draw(st.integers(1 if depth == 0 else 0, 4))
    items: list[Any] = []
    for _ in range(size):
        kinds = ["leaf", "wait"] + (["if", "split", "wait_until"] if depth < 3 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "leaf":
            items.append(dict(draw(st.sampled_from(LEAVES))))
        elif kind == "wait":
            items.append(
                {"wait": draw(st.sampled_from(["1h", {"duration": "2d"}, {"until": "09:00"}]))}
            )
        elif kind == "if":
            step: dict[str, Any] = {"if": {"tag": "vip"}}
            for branch in draw(st.sampled_from([["then"], ["else"], ["then", "else"]])):
                step[branch] = draw(step_lists(depth + 1, branch == "then"))
            items.append(step)
        elif kind == "split":
            step = {"split": {"a": 1, "b": draw(st.integers(0, 3))}}
            for arm in draw(st.sampled_from([[], ["a"], ["b"], ["a", "b"]])):
                step[arm] = draw(step_lists(depth + 1, arm == "a"))
            items.append(step)
        else:
            step = {"wait_until": {"event": "Email Clicked", "timeout": "2d"}}
            for branch in draw(st.sampled_from([[], ["then"], ["else"], ["then", "else"]])):
                step[branch] = draw(step_lists(depth + 1, branch == "then"))
            items.append(step)
    if may_end and draw(st.booleans()):
        items.append(draw(st.sampled_from(["exit", {"exit": "done"}, {"goto": None}])))
    return items


@st.composite
def definitions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid flow: some steps get written ids; every goto targets a wait step."""
    steps = draw(step_lists())
    waits: list[str] = []
    gotos: list[dict[str, Any]] = []
    for number, step in enumerate(_walk(steps)):
        if "wait" in step or draw(st.booleans()):
            step["id"] = f"n{number}"
        if "wait" in step:
            waits.append(step["id"])
        if "goto" in step:
            gotos.append(step)
    for step in gotos:
        if waits:
            step["goto"] = draw(st.sampled_from(waits))
        else:
            del step["goto"]
            step["exit"] = True
    return make_flow(steps=steps)


def _walk(items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(item)
            for key, value in item.items():
                if isinstance(value, list) and key not in ("add_tags",):
                    out += _walk(value)
    return out


def derived_ids(items: list[Any], prefix: str = "s") -> list[str]:
    """Every step's id as the format defines it, computed here independently."""
    out = []
    for i, item in enumerate(items):
        derived = f"{prefix}{i}"
        out.append(item.get("id", derived) if isinstance(item, dict) else derived)
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, list) and key in ("then", "else", "a", "b"):
                    out += derived_ids(value, f"{derived}.{key}.")
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions())
def test_any_valid_tree_flattens_into_a_sound_graph(data: dict[str, Any]) -> None:
    flow = build.load(data)
    assert list(flow.steps) == derived_ids(data["steps"])
    assert flow.start == next(iter(flow.steps))
    for step in flow.steps.values():
        for target in step_checks.successors(step):
            assert target in flow.steps
    assert step_checks.reachable(flow.steps, [flow.start]) == set(flow.steps)
    stored = build.normalise(data)
    assert build.normalise(stored) == stored
    assert build.load(stored) == flow
    assert build.load(copy.deepcopy(data)) == flow  # derived ids depend only on position


# -- the docs -----------------------------------------------------------------------------

DOCS = Path(__file__).parents[2] / "docs"


def test_every_example_flow_loads() -> None:
    found = build.read_path(DOCS / "examples" / "flows")
    names = [Path(name).name for name, _ in found]
    assert names == ["abandoned-cart.yaml", "birthday.yaml", "welcome-series.yaml", "win-back.yaml"]
    for name, data in found:
        flow = build.load(data)
        assert flow.key == Path(name).stem
        assert all("." not in step_id for step_id in flow.steps), "examples write every id"


def doc_blocks(kind: str) -> list[str]:
    text = (DOCS / "flow-format.md").read_text()
    return re.findall(rf"```{kind}\n(.*?)```", text, re.S)


def as_flow(block: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(block)
    return data if "key" in data else make_flow(trigger="api", steps=["exit"]) | data


@pytest.mark.parametrize("block", doc_blocks("yaml"))
def test_every_example_in_the_format_reference_loads(block: str) -> None:
    build.load(as_flow(block))


def test_the_documented_problems() -> None:
    (block,) = doc_blocks("yaml invalid")
    (listed,) = doc_blocks("text")
    found = problems(as_flow(block))
    assert [f"{path}: {message}" for path, message in found.items()] == listed.splitlines()
