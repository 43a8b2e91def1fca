"""The welcome series of docs/examples/flows, end to end: three emails over seven days
after joining the newsletter, a different second email for those who did not open the
first, and an unsubscribe that ends a run."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.flows.test_scenarios import actions, example, make_sim
from tidings.clock import FakeClock
from tidings.worker import Worker

DAY = timedelta(days=1)


def test_welcome_series_opened_and_not_opened(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.call("POST", "/v1/lists", {"key": "newsletter", "name": "Newsletter"}, expect=201)
    key = sim.apply(example("welcome-series"))
    berlin = {"timezone": "Europe/Berlin"}
    ann = sim.person("ann", email="ann@example.com", **berlin)  # opens the first email
    bob = sim.person("bob", email="bob@example.com", **berlin)  # never opens
    cy = sim.person("cy", email="cy@example.com", **berlin)  # unsubscribes on day 1
    t0 = clock.now()  # Monday 10:00 in Berlin: inside the 08:00-20:00 window
    sim.run()
    assert sim.runs(key) == [], "nobody joined the list yet"

    for contact in (ann, bob, cy):
        sim.call("PUT", f"/v1/lists/newsletter/members/{contact}", {"status": "subscribed"})
    sim.run()
    assert [(r.contact_id, r.status, r.step_id) for r in sim.runs(key)] == [
        (ann, "waiting", "opened-welcome"),
        (bob, "waiting", "opened-welcome"),
        (cy, "waiting", "opened-welcome"),
    ]
    for contact in (ann, bob, cy):
        assert sim.sends(contact) == [("welcome-1", t0)]

    # Day 1: ann opens her first email (the open carries its run and step), cy leaves.
    sim.advance(DAY)
    run_of = {r.contact_id: r.id for r in sim.runs(key)}
    sim.track("ann", "Email Opened", {"run": run_of[ann], "step": "welcome"})
    sim.track("cy", "Unsubscribed")
    sim.run()
    assert sim.sends(ann) == [("welcome-1", t0), ("welcome-2-getting-started", t0 + DAY)]
    assert sim.sends(bob) == [("welcome-1", t0)]
    assert [(r.contact_id, r.status, r.end_reason) for r in sim.runs(key)][2] == (
        cy,
        "exited",
        "unsubscribed",
    )

    for _ in range(7):  # days 2..8, a round a day
        sim.advance(DAY)
    assert sim.sends(ann) == [
        ("welcome-1", t0),
        ("welcome-2-getting-started", t0 + DAY),
        ("welcome-3-best-of", t0 + 5 * DAY),
    ]
    assert sim.sends(bob) == [
        ("welcome-1", t0),
        ("welcome-2-did-you-see", t0 + 3 * DAY),
        ("welcome-3-best-of", t0 + 7 * DAY),
    ]
    assert sim.sends(cy) == [("welcome-1", t0)]
    assert [(r.contact_id, r.status) for r in sim.runs(key)] == [
        (ann, "completed"),
        (bob, "completed"),
        (cy, "exited"),
    ]
    assert "welcomed" in sim.contact(ann)["tags"] and "welcomed" not in sim.contact(cy)["tags"]

    (journey,) = sim.journeys(ann)
    assert actions(journey) == [
        (None, "entered"),
        ("welcome", "sent"),
        ("opened-welcome", "waiting"),
        ("opened-welcome", "woke"),  # the open, not the 3-day timeout
        ("getting-started", "sent"),
        ("pause", "waiting"),
        ("pause", "waited"),
        ("best-of", "sent"),
        ("welcomed", "updated"),
        (None, "completed"),
    ]
    assert journey["steps"][0]["detail"]["name"] == "List Joined"
    assert journey["steps"][3]["detail"]["event"] == "Email Opened"
    (bob_journey,) = sim.journeys(bob)
    assert ("opened-welcome", "timed_out") in actions(bob_journey)
    (cy_journey,) = sim.journeys(cy)
    assert actions(cy_journey)[-1] == ("opened-welcome", "exited")
    assert cy_journey["end_reason"] == "unsubscribed"

    stats = sim.stats(key)
    assert {k: stats["runs"][k] for k in ("entered", "live", "completed", "exited")} == {
        "entered": 3,
        "live": 0,
        "completed": 2,
        "exited": 1,
    }
    figures = {s["step_id"]: (s["entered"], s["completed"], s["exited"]) for s in stats["steps"]}
    assert figures == {
        "welcome": (3, 3, 0),
        "opened-welcome": (3, 2, 1),
        "getting-started": (1, 1, 0),
        "did-you-see": (1, 1, 0),
        "pause": (2, 2, 0),
        "best-of": (2, 2, 0),
        "welcomed": (2, 2, 0),
    }

    # reentry: once. Leaving the list and joining again starts no second series.
    sim.call("PUT", f"/v1/lists/newsletter/members/{ann}", {"status": "unsubscribed"})
    sim.advance(DAY)
    sim.call("PUT", f"/v1/lists/newsletter/members/{ann}", {"status": "subscribed"})
    sim.advance(DAY)
    assert sim.events(ann).count("List Joined") == 2
    assert len(sim.runs(key)) == 3 and len(sim.sends(ann)) == 3
