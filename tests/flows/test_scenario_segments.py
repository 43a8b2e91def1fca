"""Segments driving flows, end to end (closing the gap the segments issue left): a
segment made through `/v1/segments` is recomputed by the worker as events arrive, its
"Segment Entered" / "Segment Left" events start and end runs; and a recurring schedule
over a segment starts one run per member at each occurrence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.flows.test_scenarios import actions, make_sim
from tidings.clock import FakeClock
from tidings.worker import Worker

DAY = timedelta(days=1)

REPEAT_BUYERS: dict[str, Any] = {
    "key": "repeat-buyers",
    "name": "Repeat buyers",
    "rule": {"event": "Order Completed", "count": {"gte": 2}, "within": "30d"},
}
THANK_REPEAT: dict[str, Any] = {
    "key": "thank-repeat",
    "name": "Thank repeat buyers",
    "trigger": {"segment_entered": "repeat-buyers"},
    "exit_when": [{"segment_left": "repeat-buyers", "reason": "lapsed"}],
    "steps": [
        {"id": "thanks", "send_email": {"template": "repeat-thanks"}},
        {"id": "later", "wait": "60d"},
        {"id": "loyalty", "send_email": {"template": "loyalty-offer"}},
    ],
}
LAPSED: dict[str, Any] = {
    "key": "lapsed",
    "name": "Lapsed repeat buyers",
    "trigger": {"segment_left": "repeat-buyers"},
    "steps": [{"id": "miss-you", "send_email": {"template": "we-miss-you"}}],
}


def test_segment_entered_starts_a_run_and_segment_left_ends_it(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.call("POST", "/v1/segments", REPEAT_BUYERS, expect=201)
    sim.apply(THANK_REPEAT)
    sim.apply(LAPSED)
    ann = sim.person("ann", email="ann@example.com")
    bob = sim.person("bob", email="bob@example.com")
    t0 = clock.now()
    sim.track("ann", "Order Completed", {"total": 20})
    sim.track("bob", "Order Completed", {"total": 30})
    sim.run()
    assert sim.runs() == [] and sim.call("GET", "/v1/segments/repeat-buyers")["member_count"] == 0

    sim.advance(hours=1)
    sim.track("ann", "Order Completed", {"total": 25})  # her second: she enters the segment
    sim.run()
    members = sim.call("GET", "/v1/segments/repeat-buyers/members")["data"]
    assert [m["contact_id"] for m in members] == [ann]
    assert "Segment Entered" in sim.events(ann) and "Segment Entered" not in sim.events(bob)
    (run,) = sim.runs("thank-repeat")
    assert (run.contact_id, run.status, run.step_id) == (ann, "waiting", "later")
    assert sim.sends(ann) == [("repeat-thanks", t0 + timedelta(hours=1))]
    (journey,) = sim.journeys(ann)
    entered = journey["steps"][0]
    assert entered["action"] == "entered" and entered["detail"]["name"] == "Segment Entered"
    assert entered["detail"]["properties"]["segment"] == "repeat-buyers"

    # 30 days after her first order the window moves past it: she leaves (a rebuild, no
    # event of hers), which ends the thank-you run and starts the lapsed one.
    sim.run_until(t0 + 30 * DAY - timedelta(minutes=10))
    assert sim.runs("lapsed") == []
    for _ in range(3):
        sim.advance(minutes=10)
    assert "Segment Left" in sim.events(ann)
    (run,) = sim.runs("thank-repeat")
    assert (run.status, run.end_reason) == ("exited", "lapsed")
    assert actions(sim.journeys(ann)[-1])[-1] == ("later", "exited")
    (lapsed,) = sim.runs("lapsed")
    assert (lapsed.contact_id, lapsed.status) == (ann, "completed")
    assert [t for t, _ in sim.sends(ann)] == ["repeat-thanks", "we-miss-you"]
    assert sim.sends(bob) == []


WEEKLY_VIP: dict[str, Any] = {
    "key": "weekly-vip",
    "name": "Weekly VIP picks",
    "trigger": {"schedule": {"every": "7d", "starting": "2026-01-06T10:00:00Z", "segment": "vip"}},
    "steps": [{"id": "picks", "send_email": {"template": "vip-picks"}}],
}


def test_schedule_over_a_segment_one_run_per_member_per_occurrence(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.call("POST", "/v1/segments", {"key": "vip", "name": "VIP", "rule": {"tag": "vip"}}, 201)
    ann = sim.person("ann", email="ann@example.com")
    bob = sim.person("bob", email="bob@example.com")
    sim.call("PATCH", f"/v1/contacts/{ann}", {"add_tags": ["vip"]})
    sim.apply(WEEKLY_VIP)
    sim.run()
    assert sim.runs() == [], "before the first occurrence"
    first = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)

    sim.run_until(first + 8 * DAY, checks=True)  # bob becomes VIP after the second week's
    sim.call("PATCH", f"/v1/contacts/{bob}", {"add_tags": ["vip"]})
    sim.run_until(first + 15 * DAY, checks=True)
    for _ in range(4):  # more checks between occurrences start nothing
        sim.advance(hours=6)
    weeks = [first, first + 7 * DAY, first + 14 * DAY]
    assert sim.sends(ann) == [("vip-picks", when) for when in weeks]
    assert sim.sends(bob) == [("vip-picks", weeks[2])]
    assert sorted((r.contact_id, r.entry_key) for r in sim.runs("weekly-vip")) == sorted(
        [(ann, when.isoformat()) for when in weeks] + [(bob, weeks[2].isoformat())]
    )
    assert {r.status for r in sim.runs("weekly-vip")} == {"completed"}
