"""The engine alone: hand-built flows, a fake contact, a moving `now`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from tidings.conditions import model
from tidings.conditions.evaluate import Explanation
from tidings.conditions.nodes import Condition
from tidings.flows import engine, graph, history
from tidings.flows.engine import Run

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


@dataclass
class FakeFacts:
    holds: bool = True
    zone: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    sends: list[datetime] = field(default_factory=list)
    templates: set[str] | None = None
    asked: list[Condition] = field(default_factory=list)

    def explain(self, condition: Condition) -> Explanation:
        self.asked.append(condition)
        return Explanation("if", self.holds, None, {"fake": True})

    def recent_sends(self, channel: str, since: datetime) -> Sequence[datetime]:
        return [t for t in self.sends if t >= since]

    def timezone(self) -> str | None:
        return self.zone

    def attribute(self, name: str) -> Any:
        return self.attributes.get(name)

    def template_exists(self, channel: str, key: str) -> bool:
        return self.templates is None or key in self.templates


def flow(*steps: graph.Step, **kw: Any) -> graph.Flow:
    return graph.Flow(
        key="f",
        name="F",
        trigger=graph.ApiTrigger(),
        start=steps[0].id if steps else None,
        steps={s.id: s for s in steps},
        **kw,
    )


def new_run(start: str | None, run_id: int = 1) -> Run:
    return Run(id=run_id, contact_id=7, status="active", step_id=start, next_at=T0, entered_at=T0)


def actions(out: engine.Outcome) -> list[tuple[str | None, str]]:
    return [(r.step_id, r.action) for r in out.records]


def test_send_then_wait_then_send_completes_over_time() -> None:
    f = flow(
        graph.Send("a", "w", "email", "welcome"),
        graph.Wait("w", "b", duration=timedelta(days=2)),
        graph.Send("b", None, "email", "tips"),
    )
    out = engine.advance(f, new_run("a"), T0, FakeFacts())
    assert [e.template for e in out.effects if isinstance(e, engine.SendIntent)] == ["welcome"]
    assert out.run.status == "waiting" and out.run.step_id == "w"
    assert out.run.next_at == T0 + timedelta(days=2)
    assert actions(out) == [("a", history.SENT), ("w", history.WAITING)]

    early = engine.advance(f, out.run, T0 + timedelta(days=1), FakeFacts())
    assert early.effects == [] and early.run == out.run  # not due: nothing happens

    later = engine.advance(f, out.run, T0 + timedelta(days=2), FakeFacts())
    assert [e.template for e in later.effects if isinstance(e, engine.SendIntent)] == ["tips"]
    assert later.run.status == "completed" and later.run.step_id is None
    assert actions(later)[-1] == (None, history.COMPLETED)


def test_each_visit_to_a_send_step_is_a_new_occurrence() -> None:
    f = flow(
        graph.Send("a", "w", "email", "nudge"),
        graph.Wait("w", "loop", duration=timedelta(days=1)),
        graph.Goto("loop", "a"),
    )
    run = new_run("a")
    occurrences = []
    now = T0
    for _ in range(3):
        out = engine.advance(f, run, now, FakeFacts())
        occurrences += [e.occurrence for e in out.effects if isinstance(e, engine.SendIntent)]
        run, now = out.run, now + timedelta(days=1)
    assert occurrences == [1, 2, 3]


def test_branch_records_the_explanation_and_goes_the_right_way() -> None:
    cond = model.parse({"tag": "vip"})
    f = flow(
        graph.Branch("if", cond, "yes", "no"),
        graph.Send("yes", None, "email", "vip"),
        graph.Send("no", None, "sms", "regular"),
    )
    for holds, channel in ((True, "email"), (False, "sms")):
        out = engine.advance(f, new_run("if"), T0, FakeFacts(holds=holds))
        sends = [e for e in out.effects if isinstance(e, engine.SendIntent)]
        assert [s.channel for s in sends] == [channel]
        branched = out.records[0]
        assert branched.action == history.BRANCHED and branched.first
        assert branched.detail["branch"] == ("then" if holds else "else")
        assert branched.detail["explanation"]["seen"] == {"fake": True}


def test_send_window_defers_to_the_opening_in_the_contacts_zone() -> None:
    window = graph.SendWindow(start=time(9), end=time(20), tz="contact", spread=timedelta(hours=1))
    f = flow(graph.Send("a", None, "email", "x"), settings=graph.FlowSettings(send_window=window))
    night_in_tokyo = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 00:00 in Tokyo
    out = engine.advance(f, new_run("a"), night_in_tokyo, FakeFacts(zone="Asia/Tokyo"))
    assert out.effects == [] and out.run.status == "waiting"
    opening = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert out.run.next_at is not None
    assert opening <= out.run.next_at < opening + timedelta(hours=1)
    assert actions(out) == [("a", history.DEFERRED)] and out.records[0].first

    sent = engine.advance(f, out.run, out.run.next_at, FakeFacts(zone="Asia/Tokyo"))
    intents = [e for e in sent.effects if isinstance(e, engine.SendIntent)]
    assert len(intents) == 1 and intents[0].occurrence == 1
    assert sent.records[0].action == history.SENT and not sent.records[0].first


def test_frequency_cap_defers_and_never_drops() -> None:
    caps = {"email": graph.FrequencyCap(1, timedelta(hours=16))}
    f = flow(graph.Send("a", None, "email", "x"), settings=graph.FlowSettings(frequency_caps=caps))
    facts = FakeFacts(sends=[T0 - timedelta(hours=4)])
    out = engine.advance(f, new_run("a"), T0, facts)
    assert out.effects == [] and out.run.next_at == T0 + timedelta(hours=12)
    assert out.records[0].detail["why"] == "frequency cap"
    done = engine.advance(f, out.run, T0 + timedelta(hours=12), facts)
    assert len(done.effects) == 1 and done.run.status == "completed"


def test_wait_until_wakes_on_its_event_or_times_out() -> None:
    match = graph.EventMatch("Order Completed")
    f = flow(
        graph.WaitUntil("w", "thanks", "nudge", event=match, timeout=timedelta(days=2)),
        graph.Send("thanks", None, "email", "thanks"),
        graph.Send("nudge", None, "email", "nudge"),
    )
    parked = engine.advance(f, new_run("w"), T0, FakeFacts())
    assert parked.run.wait_event == "Order Completed"
    assert parked.run.next_at == T0 + timedelta(days=2)

    wake = {"event_id": 9, "event": "Order Completed"}
    woken = replace(parked.run, state={**parked.run.state, "wake": wake})
    woken.status, woken.next_at = "active", T0 + timedelta(hours=1)
    out = engine.advance(f, woken, T0 + timedelta(hours=1), FakeFacts())
    assert [e.template for e in out.effects if isinstance(e, engine.SendIntent)] == ["thanks"]
    assert ("w", history.WOKE) in actions(out)

    timed = engine.advance(f, parked.run, T0 + timedelta(days=2), FakeFacts())
    assert [e.template for e in timed.effects if isinstance(e, engine.SendIntent)] == ["nudge"]


def test_split_is_stable_per_run_and_roughly_weighted() -> None:
    step = graph.Split("s", (("a", 80, None), ("b", 20, None)))
    arms = [engine.choose_arm(step, run_id) for run_id in range(1, 5001)]
    assert arms == [engine.choose_arm(step, run_id) for run_id in range(1, 5001)]
    assert 0.76 < arms.count("a") / len(arms) < 0.84


def test_missing_template_fails_the_run_with_the_reason() -> None:
    f = flow(graph.Send("a", None, "email", "gone"))
    out = engine.advance(f, new_run("a"), T0, FakeFacts(templates=set()))
    assert out.run.status == "failed" and out.effects == []
    assert "gone" in (out.run.end_reason or "")
    assert out.records[-1].action == history.FAILED


def test_a_loop_without_a_wait_fails_instead_of_spinning() -> None:
    f = flow(graph.Score("a", "b", 1), graph.Goto("b", "a"))
    out = engine.advance(f, new_run("a"), T0, FakeFacts(), engine.Options(max_steps=50))
    assert out.run.status == "failed" and "without a wait" in (out.run.end_reason or "")


def test_exit_condition_ends_the_run_before_a_send() -> None:
    rule = graph.ExitRule(condition=model.parse({"tag": "customer"}), reason="bought")
    f = flow(graph.Send("a", None, "email", "x"), exit_when=(rule,))
    out = engine.advance(f, new_run("a"), T0, FakeFacts(holds=True))
    assert out.effects == [] and out.run.status == "exited" and out.run.end_reason == "bought"


def test_exit_step_and_profile_effects() -> None:
    change = graph.UpdateContact("u", "sc", set={"stage": "lead"}, add_tags=("cart",))
    f = flow(change, graph.Score("sc", "x", -5), graph.Exit("x", "done"))
    out = engine.advance(f, new_run("u"), T0, FakeFacts())
    assert out.effects == [engine.ContactUpdate("u", change), engine.ScoreChange("sc", -5)]
    assert out.run.status == "exited" and out.run.end_reason == "done"


def test_wait_until_a_local_time_of_day() -> None:
    f = flow(graph.Wait("w", None, until=time(9, 0)))
    out = engine.advance(f, new_run("w"), T0, FakeFacts(zone="America/New_York"))
    assert out.run.next_at == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 09:00 EST
