"""The birthday flow of docs/examples/flows, end to end: the greeting goes at 09:00 on the
birthday in each contact's own zone — the first worker round at or after that local time
sends it, none before — and once a year: again the next year, never twice in one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.flows.test_scenarios import example, make_sim, wall
from tidings.clock import FakeClock
from tidings.worker import Worker

ZONES = {"nz": "Pacific/Auckland", "de": "Europe/Berlin", "la": "America/Los_Angeles"}
QUARTER = timedelta(minutes=15)


def test_birthday_at_nine_local_in_three_zones_once_a_year(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    sim.call("POST", "/v1/segments", {"key": "vip", "name": "VIP", "rule": {"tag": "vip"}}, 201)
    key = sim.apply(example("birthday"))
    ids = {
        user: sim.person(
            user,
            email=f"{user}@example.com",
            phone="+12125550100",
            timezone=zone,
            birthday="1990-01-07",
        )
        for user, zone in ZONES.items()
    }
    quiet = sim.person("dnc", email="dnc@example.com", timezone="UTC", birthday="1985-01-07")
    sim.call("PATCH", f"/v1/contacts/{ids['la']}", {"add_tags": ["vip"]})
    sim.call("PATCH", f"/v1/contacts/{quiet}", {"add_tags": ["do-not-contact"]})
    sim.run()

    # Rounds every quarter hour, at :07, :22, :37 and :52 past, from 07:07 on 7 January in
    # Auckland (18:07 UTC on the 6th) to 10:07 that day in Los Angeles (18:07 UTC on the 7th).
    sim.clock.set(datetime(2026, 1, 6, 18, 7, tzinfo=UTC))
    sim.run()
    first_sent: dict[str, datetime] = {}
    before: dict[str, datetime] = {}
    for now in sim.step_through(datetime(2026, 1, 7, 18, 7, tzinfo=UTC), QUARTER):
        queued = {row.contact_id for row in sim.ledger()}
        for user, contact in ids.items():
            if user not in first_sent and contact in queued:
                first_sent[user] = now
            elif user not in first_sent:
                before[user] = now  # the last round that did not send
    for _ in sim.step_through(datetime(2026, 1, 8, 12, 7, tzinfo=UTC), timedelta(hours=1)):
        pass  # the rest of the day everywhere: no second greeting
    for user, zone in ZONES.items():
        assert first_sent[user] == wall(zone, 2026, 1, 7, 9, 7), user
        assert before[user] == wall(zone, 2026, 1, 7, 8, 52), user
        rows = sim.ledger(ids[user])
        expected = ["birthday-greeting", *(["birthday-vip-sms"] if user == "la" else [])]
        assert [(r.template, r.created_at) for r in rows] == [
            (template, first_sent[user]) for template in expected
        ], user
        profile = sim.contact(ids[user])
        assert profile["attributes"]["last_birthday_greeting"] == "sent"
        assert "birthday-greeted" in profile["tags"]
    assert sim.ledger(quiet) == []  # the entry filter keeps do-not-contact out
    assert [(r.contact_id, r.entry_key, r.status) for r in sim.runs(key)] == [
        (ids[user], "2026", "completed") for user in ZONES
    ]

    # The next year: again, once, at 09:00 local (hourly rounds at :07 past this time).
    sim.clock.set(datetime(2027, 1, 6, 12, 7, tzinfo=UTC))
    sim.run()
    for _ in sim.step_through(datetime(2027, 1, 8, 12, 7, tzinfo=UTC), timedelta(hours=1)):
        pass
    for user, zone in ZONES.items():
        greetings = [r for r in sim.ledger(ids[user]) if r.template == "birthday-greeting"]
        assert [r.created_at for r in greetings] == [
            wall(zone, 2026, 1, 7, 9, 7),
            wall(zone, 2027, 1, 7, 9, 7),
        ], user
    assert sorted((r.contact_id, r.entry_key) for r in sim.runs(key)) == sorted(
        (ids[user], year) for user in ZONES for year in ("2026", "2027")
    )
    stats = sim.stats(key)
    assert (stats["runs"]["entered"], stats["runs"]["completed"]) == (6, 6)
    steps = {s["step_id"]: s["entered"] for s in stats["steps"]}
    assert steps == {"greeting": 6, "vip": 6, "vip-sms": 2, "celebrated": 6}
