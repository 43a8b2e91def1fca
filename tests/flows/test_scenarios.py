"""End-to-end proofs of the journey engine under the fake clock, through the HTTP API, on
both engines: flows applied with `POST /v1/flows`, contacts made with `/v1/identify`,
events sent with `/v1/track`, the worker run round by round, and the outcome read from the
ledger, the runs, `GET /v1/contacts/{id}/journeys` and `GET /v1/flows/{key}/stats`.

This module holds the smaller scenarios and the `Sim` the other `test_scenario_*.py`
files share (welcome series, abandoned cart, win-back, birthday, segment entered)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tidings.clock import FakeClock
from tidings.db import tables
from tidings.flows import build
from tidings.worker import Worker

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flows"
DAY = timedelta(days=1)


def example(name: str) -> dict[str, Any]:
    """A flow of docs/examples/flows, as the CLI reads it."""
    ((_, data),) = build.read_path(EXAMPLES / f"{name}.yaml")
    assert isinstance(data, dict)
    return data


def local(when: datetime, zone: str) -> datetime:
    """`when` in `zone`: `.date()` and `.time()` are what the contact's clock shows."""
    return when.astimezone(ZoneInfo(zone))


def wall(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """The instant a clock in `zone` shows that day and time."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


@dataclass
class Sim:
    """The API, the worker and the fake clock of one test, driven like a shop would."""

    client: TestClient
    headers: dict[str, str]
    engine: Engine
    clock: FakeClock
    worker: Worker

    # -- acting ---------------------------------------------------------------------------

    def apply(self, definition: dict[str, Any]) -> str:
        """Create (or update) and activate a flow through the API; its key."""
        response = self.client.post(
            "/v1/flows", params={"activate": "true"}, json=definition, headers=self.headers
        )
        assert response.status_code in (200, 201), response.text
        return str(response.json()["key"])

    def person(self, user: str, **traits: Any) -> int:
        """Identify `user` with `traits`; the contact's id once the worker made it."""
        self.identify(user, **traits)
        self.run()
        c = tables.contacts
        with self.engine.connect() as conn:
            return int(conn.execute(select(c.c.id).where(c.c.external_id == user)).scalar_one())

    def identify(self, user: str, **traits: Any) -> None:
        body = {"userId": user, "traits": traits}
        response = self.client.post("/v1/identify", json=body, headers=self.headers)
        assert response.status_code == 200, response.text

    def track(self, user: str, event: str, properties: dict[str, Any] | None = None) -> None:
        body = {"userId": user, "event": event, "properties": properties or {}}
        response = self.client.post("/v1/track", json=body, headers=self.headers)
        assert response.status_code == 200, response.text

    def call(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        response = self.client.request(method, url, json=body, headers=self.headers)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    # -- time -----------------------------------------------------------------------------

    def run(self) -> int:
        """One worker round (every task until idle) at the clock's now."""
        return self.worker.run_once()

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move the clock on and run the worker there; the new now."""
        now = self.clock.advance(delta, **kwargs)
        self.run()
        return now

    def step_through(self, until: datetime, every: timedelta) -> Iterator[datetime]:
        """Move the clock `every` at a time up to `until`, a worker round at each stop;
        yields each stop after its round."""
        while self.clock.now() + every <= until:
            yield self.advance(every)

    def run_until(self, until: datetime, *, checks: bool = False) -> None:
        """Move the clock from one due run to the next up to `until` (a worker round at
        each), then to `until`: every run goes at the exact instant it is due. With
        `checks`, a scheduled trigger's next check counts as due too."""
        while True:
            due = self.next_due(checks=checks)
            if due is None or due > until:
                break
            assert due > self.clock.now(), "a due run was left behind"
            self.clock.set(due)
            self.run()
        self.clock.set(until)
        self.run()

    def next_due(self, *, checks: bool = False) -> datetime | None:
        """The earliest `next_at` of a live run of an active flow (or `next_check_at` of
        an active flow, with `checks`)."""
        r, f = tables.flow_runs, tables.flows
        query = (
            select(func.min(r.c.next_at))
            .join(f, f.c.id == r.c.flow_id)
            .where(r.c.ended_at.is_(None), f.c.status == "active")
        )
        check = select(func.min(f.c.next_check_at)).where(f.c.status == "active")
        with self.engine.connect() as conn:
            found = [conn.execute(query).scalar(), conn.execute(check).scalar() if checks else None]
        return min((when for when in found if when is not None), default=None)

    # -- reading --------------------------------------------------------------------------

    def ledger(self, contact: int | None = None) -> list[Any]:
        """The `messages` rows (send intents), oldest first."""
        m = tables.messages
        query = select(m).order_by(m.c.created_at, m.c.id)
        if contact is not None:
            query = query.where(m.c.contact_id == contact)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def sends(self, contact: int | None = None) -> list[tuple[str | None, datetime]]:
        """(template, when queued) of the contact's ledger rows, oldest first."""
        return [(row.template, row.created_at) for row in self.ledger(contact)]

    def runs(self, flow_key: str | None = None) -> list[Any]:
        r, f = tables.flow_runs, tables.flows
        query = select(r).join(f, f.c.id == r.c.flow_id).order_by(r.c.id)
        if flow_key is not None:
            query = query.where(f.c.key == flow_key)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def journeys(self, contact: int) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", f"/v1/contacts/{contact}/journeys")["data"]
        return data

    def stats(self, key: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/v1/flows/{key}/stats")
        return found

    def step_stats(self, key: str) -> dict[str, dict[str, Any]]:
        return {step["step_id"]: step for step in self.stats(key)["steps"]}

    def contact(self, contact: int) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/v1/contacts/{contact}")
        return found

    def events(self, contact: int) -> list[str]:
        page = self.call("GET", f"/v1/contacts/{contact}/events")
        return [event["name"] for event in page["data"]]


def make_sim(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> Sim:
    return Sim(client, admin, engine, clock, worker)


def actions(journey: dict[str, Any]) -> list[tuple[str | None, str]]:
    """A journey's history as (step, action) pairs."""
    return [(step["step_id"], step["action"]) for step in journey["steps"]]


def at(text: str) -> datetime:
    """An ISO instant from the API (`...Z`) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the smaller scenarios ----------------------------------------------------------------


def test_score_reached_starts_a_run_at_the_next_check(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.apply(
        {
            "key": "hot-leads",
            "name": "Hot leads",
            "trigger": {"score_reached": 50},
            "steps": [{"id": "call-me", "send_email": {"template": "book-a-call"}}],
        }
    )
    ann = sim.person("ann", email="ann@example.com")
    bob = sim.person("bob", email="bob@example.com")
    sim.advance(seconds=300)
    sim.call("PATCH", f"/v1/contacts/{ann}", {"score": 60})
    sim.call("PATCH", f"/v1/contacts/{bob}", {"score": 49})
    sim.run()
    assert sim.runs() == [], "the flow looks again only when its next check is due"
    checked = sim.advance(seconds=300)
    (run,) = sim.runs("hot-leads")
    assert (run.contact_id, run.status) == (ann, "completed")
    assert sim.sends(ann) == [("book-a-call", checked)] and sim.sends(bob) == []
    sim.call("PATCH", f"/v1/contacts/{ann}", {"score": 80})  # reentry once: not again
    sim.advance(seconds=300)
    assert len(sim.runs("hot-leads")) == 1


def revisit_flow(key: str, reentry: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": key,
        "trigger": {"event": "Viewed Pricing"},
        "entry": {"reentry": reentry, "filter": {"attribute": "country", "in": ["DE", "AT"]}},
        "steps": [{"id": "wait", "wait": "1d"}, {"id": "nudge", "send_email": {"template": key}}],
    }


def test_entry_rules_once_after_exit_always_and_the_entry_filter(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    for reentry in ("once", "after_exit", "always"):
        sim.apply(revisit_flow(reentry.replace("_", "-"), reentry))
    ann = sim.person("ann", email="ann@example.com", country="DE")
    sim.person("bob", email="bob@example.com", country="FR")  # the filter keeps him out
    t0 = clock.now()
    for hours in (0, 1, 48):  # twice while the first run waits, once after it ended
        sim.run_until(t0 + timedelta(hours=hours))
        sim.track("ann", "Viewed Pricing")
        sim.track("bob", "Viewed Pricing")
        sim.run()
    sim.run_until(t0 + 4 * DAY)
    entered = {
        key: [r.entered_at - t0 for r in sim.runs(key)] for key in ("once", "after-exit", "always")
    }
    hour = timedelta(hours=1)
    assert entered == {
        "once": [0 * hour],
        "after-exit": [0 * hour, 48 * hour],
        "always": [0 * hour, 1 * hour, 48 * hour],
    }
    assert {r.contact_id for r in sim.runs()} == {ann}
    assert sorted((t or "", when - t0) for t, when in sim.sends(ann)) == [
        ("after-exit", 24 * hour),
        ("after-exit", 72 * hour),
        ("always", 24 * hour),
        ("always", 25 * hour),
        ("always", 72 * hour),
        ("once", 24 * hour),
    ]


def test_goal_without_exit_records_the_conversion_and_the_run_goes_on(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    key = sim.apply(
        {
            "key": "trial",
            "name": "Trial",
            "trigger": {"event": "Trial Started"},
            "goal": {
                "event": "Subscribed",
                "within": "14d",
                "revenue": "plan.price",
                "exit": False,
            },
            "steps": [
                {"id": "tips", "send_email": {"template": "trial-tips"}},
                {"id": "pause", "wait": "3d"},
                {"id": "more-tips", "send_email": {"template": "trial-more-tips"}},
            ],
        }
    )
    ann = sim.person("ann", email="ann@example.com")
    t0 = clock.now()
    sim.track("ann", "Trial Started")
    sim.run()
    sim.advance(DAY)
    sim.track("ann", "Subscribed", {"plan": {"name": "pro", "price": 49}})
    sim.run()
    (run,) = sim.runs(key)
    assert (run.status, run.converted_at, run.converted_step, run.revenue) == (
        "waiting",
        t0 + DAY,
        "tips",
        49.0,
    )
    sim.advance(DAY)
    sim.track("ann", "Subscribed", {"plan": {"name": "pro", "price": 49}})  # counted once
    sim.run_until(t0 + 5 * DAY)
    assert sim.sends(ann) == [("trial-tips", t0), ("trial-more-tips", t0 + 3 * DAY)]
    (run,) = sim.runs(key)
    assert (run.status, run.revenue) == ("completed", 49.0)
    (journey,) = sim.journeys(ann)
    assert [a for _, a in actions(journey)].count("converted") == 1
    stats = sim.stats(key)
    assert (stats["runs"]["converted"], stats["runs"]["revenue"]) == (1, 49.0)
    assert sim.step_stats(key)["tips"]["revenue"] == 49.0


def test_wait_until_a_weekday_and_time_in_the_contacts_zone(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    key = sim.apply(
        {
            "key": "monday-digest",
            "name": "Monday digest",
            "trigger": {"event": "Signed Up"},
            "steps": [
                {"id": "monday", "wait": {"until": "09:00", "days": ["mon"]}},
                {"id": "digest", "send_email": {"template": "digest"}},
            ],
        }
    )
    zones = {"ann": "Asia/Tokyo", "bob": "America/New_York"}
    ids = {
        user: sim.person(user, email=f"{user}@example.com", timezone=z) for user, z in zones.items()
    }
    sim.advance(days=2)  # Wednesday 7 January, 09:00 UTC
    for user in zones:
        sim.track(user, "Signed Up")
    sim.run()
    sim.run_until(datetime(2026, 1, 20, tzinfo=UTC))
    for user, zone in zones.items():
        assert sim.sends(ids[user]) == [("digest", wall(zone, 2026, 1, 12, 9, 0))], user
    assert {r.status for r in sim.runs(key)} == {"completed"}


def capped_flow(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": key,
        "trigger": {"event": "Signed Up"},
        "settings": {"frequency_cap": {"email": 1, "per": "16h", "then": "defer"}},
        "steps": [{"id": "hello", "send_email": {"template": key}}],
    }


def test_a_frequency_cap_across_two_flows_defers_and_never_drops(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.apply(capped_flow("onboarding"))
    sim.apply(capped_flow("newsletter-intro"))
    ann = sim.person("ann", email="ann@example.com")
    t0 = clock.now()
    sim.track("ann", "Signed Up")
    sim.run()
    ((first, when),) = sim.sends(ann)
    assert when == t0
    second = "newsletter-intro" if first == "onboarding" else "onboarding"
    (waiting,) = [r for r in sim.runs() if r.status == "waiting"]
    assert waiting.next_at == t0 + timedelta(hours=16)
    sim.run_until(t0 + timedelta(hours=15, minutes=59))
    assert len(sim.sends(ann)) == 1
    sim.run_until(t0 + DAY)
    assert sim.sends(ann) == [(first, t0), (second, t0 + timedelta(hours=16))]
    journey = next(j for j in sim.journeys(ann) if j["flow_key"] == second)
    deferred = [s["detail"] for s in journey["steps"] if s["action"] == "deferred"]
    assert deferred == [{"until": (t0 + timedelta(hours=16)).isoformat(), "why": "frequency cap"}]


ACTIONS: dict[str, Any] = {
    "key": "hot-lead",
    "name": "Hot lead",
    "trigger": {"event": "Demo Requested"},
    "steps": [
        {
            "id": "profile",
            "update_contact": {
                "set": {"lifecycle_stage": "lead", "plan": "pro"},
                "unset": ["trial_ends"],
                "add_tags": ["hot"],
                "remove_tags": ["cold"],
                "add_to_list": "sales",
                "move_to_list": {"from": "prospects", "to": "customers"},
            },
        },
        {"id": "points", "score": 15},
        {
            "id": "crm",
            "webhook": {
                "url": "https://crm.example/hook",
                "method": "PUT",
                "headers": {"X-Token": "abc"},
                "body": {"event": "hot-lead"},
            },
        },
        {"id": "tell-sales", "notify": {"to": "sales@example.com", "template": "new-hot-lead"}},
        {"id": "text-sales", "notify": {"to": "+4930123456", "text": "A hot lead"}},
        {"id": "sms", "send_sms": {"template": "demo-booked"}},
    ],
}


def test_update_contact_score_webhook_notify_and_sms_steps(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    for key in ("sales", "prospects", "customers"):
        sim.call("POST", "/v1/lists", {"key": key, "name": key}, expect=201)
    sim.apply(ACTIONS)
    ann = sim.person(
        "ann", email="ann@example.com", phone="+4915112345678", trial_ends="2026-02-01"
    )
    sim.call("PATCH", f"/v1/contacts/{ann}", {"add_tags": ["cold"], "score": 5})
    sim.call("PUT", f"/v1/lists/prospects/members/{ann}", {"status": "subscribed"})
    sim.track("ann", "Demo Requested")
    sim.run()
    profile = sim.contact(ann)
    assert profile["lifecycle_stage"] == "lead" and profile["score"] == 20
    assert profile["attributes"].get("plan") == "pro" and "trial_ends" not in profile["attributes"]
    assert profile["tags"] == ["hot"]
    assert {lst["key"]: lst["status"] for lst in profile["lists"]} == {
        "sales": "subscribed",
        "customers": "subscribed",
    }
    rows = [(r.step_id, r.channel, r.template, r.payload) for r in sim.ledger(ann)]
    (run,) = sim.runs("hot-lead")
    hook = {"url": "https://crm.example/hook", "method": "PUT", "headers": {"X-Token": "abc"}}
    assert rows == [
        ("crm", "webhook", None, {**mark(run.id, "crm"), **hook, "body": {"event": "hot-lead"}}),
        (
            "tell-sales",
            "notify",
            "new-hot-lead",
            {**mark(run.id, "tell-sales"), "to": "sales@example.com", "via": "email"},
        ),
        (
            "text-sales",
            "notify",
            None,
            {**mark(run.id, "text-sales"), "to": "+4930123456", "via": "sms", "text": "A hot lead"},
        ),
        ("sms", "sms", "demo-booked", mark(run.id, "sms")),
    ]
    assert {row.status for row in sim.ledger(ann)} == {"queued"}
    assert run.status == "completed"
    assert [a for _, a in actions(sim.journeys(ann)[0])] == [
        "entered",
        "updated",
        "scored",
        "sent",
        "sent",
        "sent",
        "sent",
        "completed",
    ]


def mark(run_id: int, step: str) -> dict[str, Any]:
    """What every ledger row of a flow carries: the flow, the run and the step."""
    return {"flow": "hot-lead", "run": run_id, "step": step}


CHECKOUT: dict[str, Any] = {
    "key": "checkout-nudge",
    "name": "Checkout nudge",
    "trigger": {"event": "Cart Updated"},
    "entry": {"reentry": "after_exit", "key": "properties.cart_id"},
    "steps": [
        {
            "id": "checkout",
            "wait_until": {"event": "Checkout Started", "match_key": True, "timeout": "1d"},
            "then": [{"id": "thanks", "send_email": {"template": "checkout-help"}}],
            "else": [{"id": "nudge", "send_email": {"template": "cart-nudge"}}],
        }
    ],
}


def test_wait_until_an_event_for_the_same_key(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    key = sim.apply(CHECKOUT)
    ann = sim.person("ann", email="ann@example.com")
    t0 = clock.now()
    for cart in ("c1", "c2"):
        sim.track("ann", "Cart Updated", {"cart_id": cart})
    sim.run()
    sim.advance(hours=2)
    sim.track("ann", "Checkout Started", {"cart_id": "c2"})  # wakes the run of cart 2 only
    sim.run()
    assert sim.sends(ann) == [("checkout-help", t0 + timedelta(hours=2))]
    sim.run_until(t0 + 2 * DAY)
    assert sim.sends(ann) == [("checkout-help", t0 + timedelta(hours=2)), ("cart-nudge", t0 + DAY)]
    by_key = {r.entry_key: r for r in sim.runs(key)}
    assert [row.run_id for row in sim.ledger(ann)] == [by_key["c2"].id, by_key["c1"].id]


def test_signup_anniversary_and_a_date_trigger_a_week_ahead(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.apply(
        {
            "key": "anniversary",
            "name": "Signup anniversary",
            "trigger": {"date_attribute": "created_at", "at": "10:00"},
            "entry": {"reentry": "always"},  # still once per year: the year is the entry
            "steps": [{"id": "cake", "send_email": {"template": "one-year"}}],
        }
    )
    sim.apply(
        {
            "key": "renewal",
            "name": "Renewal reminder",
            "trigger": {"date_attribute": "renews_on", "offset": "-7d", "at": "08:00"},
            "entry": {"reentry": "after_exit"},
            "steps": [{"id": "remind", "send_email": {"template": "renews-soon"}}],
        }
    )
    ann = sim.person(
        "ann", email="ann@example.com", timezone="Europe/Berlin", renews_on="2026-01-12"
    )
    # The plan renews each 12 January, first in 2027: a date's own day (the signup day,
    # the day the plan was bought) is no anniversary.
    for _ in sim.step_through(datetime(2026, 1, 14, tzinfo=UTC), timedelta(hours=12)):
        pass
    assert sim.sends(ann) == [] and sim.runs() == []
    sim.clock.set(datetime(2027, 1, 4, 18, 0, tzinfo=UTC))
    for _ in sim.step_through(datetime(2027, 1, 5, 12, 0, tzinfo=UTC), timedelta(hours=1)):
        pass
    sim.advance(DAY)
    berlin = "Europe/Berlin"
    assert sim.sends(ann) == [
        ("renews-soon", wall(berlin, 2027, 1, 5, 8, 0)),  # a week before 12 January
        ("one-year", wall(berlin, 2027, 1, 5, 10, 0)),  # signed up on 5 January 2026
    ]
