"""The win-back of docs/examples/flows, end to end: 90 days without an open, click or order
start a run — checked on the flow's timer (`next_check_at`, every `flow_check_seconds`),
not by an event — and each spell of inactivity starts one run: activity, then 90 more
quiet days, start the next."""

from __future__ import annotations

from datetime import date, time, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.flows.test_scenarios import actions, at, example, local, make_sim
from tidings.clock import FakeClock
from tidings.worker import Worker

DAY = timedelta(days=1)
PARIS = "Europe/Paris"


def test_win_back_after_90_quiet_days_once_per_spell(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    for key in ("newsletter", "dormant"):
        sim.call("POST", "/v1/lists", {"key": key, "name": key.title()}, expect=201)
    flow = sim.apply(example("win-back"))
    ann = sim.person("ann", email="ann@example.com", timezone=PARIS)
    bob = sim.person("bob", email="bob@example.com", timezone=PARIS)
    for contact in (ann, bob):
        sim.call("PUT", f"/v1/lists/newsletter/members/{contact}", {"status": "subscribed"})
    t0 = clock.now()
    sim.track("ann", "Email Opened")
    sim.track("bob", "Email Opened")
    sim.run()

    sim.advance(days=80)
    sim.track("bob", "Email Opened")  # bob is active again on day 80
    sim.run()
    sim.advance(timedelta(days=10) - timedelta(minutes=1))  # a check, a minute short of 90 days
    assert sim.runs(flow) == []
    sim.advance(minutes=1)  # ann's 90 days are up, but the next check is 4 minutes away
    assert sim.runs(flow) == []
    sim.advance(seconds=300)
    (run,) = sim.runs(flow)  # ann: 90 days since her open; bob opened 10 days ago
    opened = sim.call("GET", f"/v1/contacts/{ann}/events")["data"]
    first_open = next(e["id"] for e in opened if e["name"] == "Email Opened")
    assert (run.contact_id, run.entry_key) == (ann, f"after:{first_open}")
    # Day 90 is a Sunday: the offer waits for Monday 10:00 in Paris (spread over an hour).
    assert sim.sends(ann) == [] and run.step_id == "offer"
    monday = local(run.next_at, PARIS)
    assert monday.date() == date(2026, 4, 6) and time(10) <= monday.time() < time(11)
    sim.run_until(t0 + 91 * DAY)
    assert sim.sends(ann) == [("win-back-offer", run.next_at)]

    # Tuesday: ann clicks the offer; the run thanks her (+10) and ends. A new spell begins.
    sim.advance(DAY)
    sim.track("ann", "Email Clicked", {"run": run.id, "step": "offer"})
    sim.run()
    (run,) = sim.runs(flow)
    assert (run.status, run.end_reason) == ("exited", "re-engaged")
    assert sim.contact(ann)["score"] == 10
    clicked = sim.call("GET", f"/v1/contacts/{ann}/events")["data"]
    click = next(e for e in clicked if e["name"] == "Email Clicked")
    click_at = at(click["timestamp"])

    sim.advance(days=79)  # day 171: bob's 90 quiet days (since day 80) are up
    assert [(r.contact_id, r.status) for r in sim.runs(flow)] == [(ann, "exited"), (bob, "waiting")]
    sim.clock.set(click_at + 90 * DAY - timedelta(hours=1))
    sim.run()
    assert len(sim.runs(flow)) == 2, "ann's second spell is not over yet"
    sim.advance(hours=1, minutes=5)
    runs = sim.runs(flow)
    assert [(r.contact_id, r.entry_key) for r in runs] == [
        (ann, f"after:{first_open}"),
        (bob, runs[1].entry_key),
        (ann, f"after:{click['id']}"),
    ]

    # The second run goes the whole way: offer, last chance, sunset (moved to dormant).
    for _ in range(25):
        sim.advance(DAY)
    ann_runs = [r for r in sim.runs(flow) if r.contact_id == ann]
    assert [r.status for r in ann_runs] == ["exited", "completed"]
    assert [t for t, _ in sim.sends(ann)] == [
        "win-back-offer",
        "win-back-offer",
        "win-back-last-chance",
    ]
    profile = sim.contact(ann)
    assert "dormant" in profile["tags"] and profile["score"] == 10 - 20
    assert {lst["key"]: lst["status"] for lst in profile["lists"]}["dormant"] == "subscribed"
    (latest, _) = sim.journeys(ann)
    assert actions(latest)[-3:] == [
        ("sunset", "updated"),
        ("lower-score", "scored"),
        (None, "completed"),
    ]

    # Back on the newsletter, but still in the same quiet spell: no second run for it.
    sim.call("PUT", f"/v1/lists/newsletter/members/{ann}", {"status": "subscribed"})
    for _ in range(3):
        sim.advance(DAY)
    assert len([r for r in sim.runs(flow) if r.contact_id == ann]) == 2
    assert len(sim.sends(ann)) == 3
