"""The abandoned cart of docs/examples/flows, end to end: one run per cart, the order for
one cart ends only its run (a conversion with revenue), and every reminder waits for the
send window in the contact's own zone (spread over its first half hour) and for the
frequency cap — deferred, never dropped."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.flows.test_scenarios import actions, example, local, make_sim, wall
from tidings.clock import FakeClock
from tidings.worker import Worker

DAY = timedelta(days=1)
TOKYO, NEW_YORK = "Asia/Tokyo", "America/New_York"


def in_spread(when: datetime, zone: str) -> bool:
    """Between 09:00 and 09:30 on the contact's clock: the window's opening plus the spread."""
    return time(9, 0) <= local(when, zone).time() < time(9, 30)


def test_abandoned_cart_one_run_per_cart_quiet_hours_and_caps(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    key = sim.apply(example("abandoned-cart"))
    ann = sim.person("ann", email="ann@example.com", timezone=TOKYO)
    bob = sim.person("bob", email="bob@example.com", phone="+12125550100", timezone=NEW_YORK)
    t0 = clock.now()  # Monday 2026-01-05 09:00 UTC

    # 02:00 in Tokyo: cart 1 (and an empty cart, which the trigger's `where` ignores)
    sim.run_until(t0 + timedelta(hours=8))
    assert clock.now() == wall(TOKYO, 2026, 1, 6, 2, 0)
    sim.track("ann", "Cart Updated", {"cart_id": "c1", "item_count": 2})
    sim.track("ann", "Cart Updated", {"cart_id": "c0", "item_count": 0})
    sim.run()
    (run1,) = sim.runs(key)
    assert (run1.entry_key, run1.step_id) == ("c1", "pause")

    # The reminder falls due at 03:00 in Tokyo: it waits for 09:00 there, then goes.
    sim.run_until(t0 + timedelta(hours=16))  # 10:00 in Tokyo
    ((template, first_reminder),) = sim.sends(ann)
    assert template == "cart-reminder" and in_spread(first_reminder, TOKYO)
    assert local(first_reminder, TOKYO).date() == date(2026, 1, 6)

    # 10:00 in Tokyo: cart 2. Its reminder is due at 11:00, inside the window, but ann had
    # an email less than 16 h ago: it waits for the cap, then (01:00 at night) for the window.
    sim.track("ann", "Cart Updated", {"cart_id": "c2", "item_count": 1})
    sim.run()
    run1, run2 = sim.runs(key)
    assert [run1.entry_key, run2.entry_key] == ["c1", "c2"]

    # 12:00 in Tokyo: the order for cart 1 ends run 1 only, crediting its reminder.
    sim.run_until(t0 + timedelta(hours=18))
    sim.track("ann", "Order Completed", {"cart_id": "c1", "total": 80.0})
    sim.run()
    run1, run2 = sim.runs(key)
    assert (run1.status, run1.end_reason, run1.revenue, run1.converted_step) == (
        "exited",
        "goal reached",
        80.0,
        "reminder",
    )
    assert run2.status == "waiting" and run2.step_id == "reminder"

    # 02:00 in New York: bob's cart; his reminder is due at 03:00 there.
    sim.run_until(t0 + timedelta(hours=22))
    assert clock.now() == wall(NEW_YORK, 2026, 1, 6, 2, 0)
    sim.track("bob", "Cart Updated", {"cart_id": "b1", "item_count": 3})
    sim.run()

    sim.run_until(t0 + 7 * DAY)
    ann_sends, bob_sends = sim.sends(ann), sim.sends(bob)
    assert [t for t, _ in ann_sends] == [
        "cart-reminder",  # cart 1, Tuesday
        "cart-reminder",  # cart 2, Wednesday (capped, then outside the window)
        "cart-sms",  # cart 2: not opened within a day, not VIP
        "cart-last-call",
    ]
    assert [t for t, _ in bob_sends] == ["cart-reminder", "cart-sms", "cart-last-call"]
    for zone, sends in ((TOKYO, ann_sends), (NEW_YORK, bob_sends)):
        assert all(in_spread(when, zone) for _, when in sends), sends
    second = ann_sends[1][1]
    assert local(second, TOKYO).date() == date(2026, 1, 7)
    assert second >= first_reminder + timedelta(hours=16)
    assert [when for _, when in ann_sends[1:]] == [second, second + DAY, second + 3 * DAY]
    bob_first = bob_sends[0][1]
    assert local(bob_first, NEW_YORK).date() == date(2026, 1, 6)
    assert [when for _, when in bob_sends] == [bob_first, bob_first + DAY, bob_first + 3 * DAY]
    # every ledger row belongs to the run of its cart; nothing was dropped
    by_run = {r.id: r.entry_key for r in sim.runs(key)}
    assert sorted((by_run[row.run_id], row.step_id) for row in sim.ledger()) == [
        ("b1", "last-call"),
        ("b1", "reminder"),
        ("b1", "sms-reminder"),
        ("c1", "reminder"),
        ("c2", "last-call"),
        ("c2", "reminder"),
        ("c2", "sms-reminder"),
    ]
    assert [(r.entry_key, r.status) for r in sim.runs(key)] == [
        ("c1", "exited"),
        ("c2", "completed"),
        ("b1", "completed"),
    ]
    assert "cart-abandoner" in sim.contact(bob)["tags"]

    journeys = {j["entry_key"]: j for j in sim.journeys(ann)}
    deferred = [s["detail"] for s in journeys["c2"]["steps"] if s["action"] == "deferred"]
    assert [d["why"] for d in deferred] == ["frequency cap", "send window"]
    assert deferred[1]["until"] == second.isoformat()
    assert journeys["c1"]["revenue"] == 80.0
    assert [a for _, a in actions(journeys["c1"])][-2:] == ["converted", "exited"]

    stats = sim.stats(key)
    runs = stats["runs"]
    assert (runs["entered"], runs["completed"], runs["exited"]) == (3, 2, 1)
    assert (runs["converted"], runs["revenue"]) == (1, 80.0)
    steps = {s["step_id"]: s for s in stats["steps"]}
    assert (steps["reminder"]["converted"], steps["reminder"]["revenue"]) == (1, 80.0)
    assert (steps["reminder"]["entered"], steps["last-call"]["entered"]) == (3, 2)
    assert steps["opened-reminder"]["exited"] == 1  # run 1 ended there, by its order


def test_an_order_logged_just_before_a_new_cart_does_not_end_its_run(
    client: TestClient, admin: dict[str, str], engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    sim = make_sim(client, admin, engine, clock, worker)
    key = sim.apply(example("abandoned-cart"))
    sim.person("ann", email="ann@example.com", timezone="Europe/Berlin")
    # The same instant (one batch from the shop): the order for the old cart c1 is logged
    # first, then c1 is filled again. The order came before the run; it ends nothing.
    sim.track("ann", "Order Completed", {"cart_id": "c1", "total": 30})
    sim.track("ann", "Cart Updated", {"cart_id": "c1", "item_count": 1})
    sim.run()
    (run,) = sim.runs(key)
    assert (run.status, run.converted_at, run.step_id) == ("waiting", None, "pause")
    sim.advance(minutes=5)
    sim.track("ann", "Order Completed", {"cart_id": "c1", "total": 45})
    sim.run()
    (run,) = sim.runs(key)
    assert (run.status, run.end_reason, run.revenue) == ("exited", "goal reached", 45.0)
