"""Property tests of the journey engine (issue #3): random flows under random event
streams never lose, duplicate or strand a run.

`Sim` is a small in-memory worker doing what `flows/enrolment.py`, `flows/listening.py`
and `flows/runs.py` do around the pure engine: it enrols runs on trigger events, lets each
event react with the contact's live runs, advances every due run and writes send intents
to a ledger that refuses a key written twice. After every round it checks the invariants
(`Sim.check`). A second property compares the sends of flows that wait on no event with
a plain walk of the flow (`reference_walk`). The `test_bug_...` examples are engine bugs
found on the way, expected to fail until they are fixed.

`TIDINGS_PROPERTY_EXAMPLES` raises the number of examples of each property."""

from __future__ import annotations

import hashlib
import itertools
import os
import pprint
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tidings.conditions import model
from tidings.conditions.evaluate import Explanation
from tidings.conditions.nodes import Condition, Tag
from tidings.flows import engine, graph, history, matching, reactions
from tidings.flows.engine import Run
from tidings.flows.matching import EventInfo
from tidings.flows.step_checks import successors


def examples(default: int) -> int:
    """`default`, or more when `TIDINGS_PROPERTY_EXAMPLES` asks for more."""
    return max(default, int(os.environ.get("TIDINGS_PROPERTY_EXAMPLES", "0")))


TRIGGER = "Cart Updated"
WAIT_EVENTS = ("Order Completed", "Product Viewed", "Page Viewed")
ENGAGEMENT = ("Email Opened", "Email Clicked")
NOISE = "Noise"
CARTS = ("c1", "c2", "c3")
ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Asia/Kolkata",
)
#: The `exit_when` condition's tag: it holds for a contact from its `exit_at` on.
EXIT_TAG = "exit-now"
#: The one template the fake facts say does not exist (its send fails the run).
MISSING = "missing"
ENDED = ("completed", "exited", "failed")
TERMINAL = {"completed": history.COMPLETED, "exited": history.EXITED, "failed": history.FAILED}
MAX_FLOW_STEPS = 24

#: Engine bugs this file found, each shown by a `test_bug_...` example at the end of it.
#: All are fixed; a switch set to True makes the properties step around its bug again.
#: test_bug_a_daily_loop_spins_when_advanced_exactly_on_time: a wait until a time of day
#: does not count as the wait a loop needs.
BUG_LOOP_SPIN = False
#: test_bug_a_visit_that_ends_the_run_has_no_first_record
BUG_NO_FIRST_RECORD = False
#: test_bug_two_sends_in_one_advance_pass_a_cap_of_one: caps are checked against the
#: sends before each advance only.
BUG_CAP_IN_ONE_ADVANCE = False
#: test_bug_an_event_after_the_timeout_still_wakes_the_wait
BUG_WAKE_AFTER_TIMEOUT = False
#: test_bug_match_key_never_matches_a_run_of_an_always_flow
BUG_ALWAYS_MATCH_KEY = False
#: Starts a day or two before daylight-saving changes (Europe and Australia in spring,
#: Europe and the US in autumn), and one in a quiet week.
STARTS = (
    datetime(2026, 3, 27, 21, 0, tzinfo=UTC),
    datetime(2026, 10, 23, 23, 30, tzinfo=UTC),
    datetime(2026, 6, 15, 8, 0, tzinfo=UTC),
)
MINUTES = (1, 30, 60, 240, 720, 1440, 2880, 10080)
DURATIONS = st.sampled_from([timedelta(minutes=m) for m in MINUTES])
#: Reference flows wait at least an hour, so two weeks of a loop stay a few hundred rounds.
LONG_DURATIONS = st.sampled_from([timedelta(minutes=m) for m in MINUTES if m >= 60])
#: Times of day past every daylight-saving gap (so the reference can skip gap rules).
TIMES = st.builds(time, st.integers(6, 22), st.sampled_from((0, 30)))
DAYS = st.frozensets(st.integers(0, 6), min_size=1)


def answer(seed: int, run_id: int, tag: str, visit: int) -> bool:
    """The fake contact's answer to a branch: fixed per (run, branch tag, visit)."""
    digest = hashlib.blake2b(f"{seed}:{run_id}:{tag}:{visit}".encode(), digest_size=1)
    return digest.digest()[0] % 2 == 0


def zone_of(name: str | None) -> ZoneInfo:
    """The zone the engine reads a contact's time in (fallback UTC)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):
        return ZoneInfo("UTC")


# -- random flows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """A step every path to the step being built passes: a goto may jump back to it when
    a `loop_wait` (a duration wait, a wait_until with a timeout) lies between, and a
    wait_until may await its message (an email or SMS send)."""

    id: str
    loop_wait: bool = False
    message: bool = False


@dataclass
class Builder:
    """Draws a random tree of steps and flattens it, each step pointing at the next."""

    draw: st.DrawFn
    simple: bool  # reference flows: no wait_until, attribute wait or missing template
    keyed: bool
    steps: dict[str, graph.Step] = field(default_factory=dict)
    made: int = 0  # step ids handed out

    def sequence(self, depth: int, spine: list[Mark], cont: str | None) -> str | None:
        """Build a list of steps going on at `cont`; the first step's id (else `cont`)."""
        room = MAX_FLOW_STEPS - self.made
        kinds = self.draw(
            st.lists(st.sampled_from(self.kinds(depth)), min_size=2 - min(depth, 2), max_size=6)
        )[: max(room, int(depth == 0))]
        for i, kind in enumerate(kinds):
            if kind in ("exit", "goto"):  # nothing after these is reached
                kinds = kinds[: i + 1]
                break
        ids = [f"s{self.made + n}" for n in range(len(kinds))]
        self.made += len(ids)
        for i, kind in enumerate(kinds):
            after = ids[i + 1] if i + 1 < len(ids) else cont
            self.steps[ids[i]] = BUILD[kind](self, ids[i], after, depth, spine)
            spine = [*spine, self.mark(self.steps[ids[i]])]
        return ids[0] if ids else cont

    def kinds(self, depth: int) -> list[str]:
        kinds = ["send"] * 6 + ["wait"] * 4 + ["update", "score", "exit", "goto"]
        if depth < 2:
            kinds += ["branch"] * 2 + ["split"] * 2 + ([] if self.simple else ["wait_until"] * 3)
        return kinds

    def mark(self, step: graph.Step) -> Mark:
        if isinstance(step, graph.Wait):
            timed = step.duration is not None or (step.until is not None and not BUG_LOOP_SPIN)
            return Mark(step.id, loop_wait=timed)
        if isinstance(step, graph.WaitUntil):
            return Mark(step.id, loop_wait=step.timeout is not None)
        if isinstance(step, graph.Send):
            return Mark(step.id, message=step.channel in ("email", "sms"))
        return Mark(step.id)

    def nested(self, mark: Mark, depth: int, spine: list[Mark], cont: str | None) -> str | None:
        return self.sequence(depth + 1, [*spine, mark], cont)


def _send(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    channel = b.draw(st.sampled_from(("email", "email", "sms", "webhook", "notify")))
    if channel == "webhook":
        return graph.Send(id_, after, "webhook", None, {"url": "https://hooks.example/x"})
    missing = not b.simple and b.draw(st.integers(0, 24)) == 0
    params = {"to": "team@example.com"} if channel == "notify" else {}
    return graph.Send(id_, after, channel, MISSING if missing else f"t-{id_}", params)


def _wait(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    form = b.draw(st.sampled_from(("duration", "duration", "until", "attribute")))
    if form == "duration" or (form == "attribute" and b.simple):
        return graph.Wait(id_, after, duration=b.draw(LONG_DURATIONS if b.simple else DURATIONS))
    if form == "until":
        return graph.Wait(id_, after, until=b.draw(TIMES), days=b.draw(DAYS))
    offset = b.draw(st.sampled_from((timedelta(days=-3), timedelta(0), timedelta(days=1))))
    at = b.draw(st.none() | TIMES)
    return graph.Wait(id_, after, until_attribute="renewal", offset=offset, at=at)


def _wait_until(
    b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]
) -> graph.Step:
    timeout = b.draw(st.none() | DURATIONS)
    mark = Mark(id_, loop_wait=timeout is not None)
    then, else_ = (b.nested(mark, depth, spine, after) for _ in range(2))
    messages = [m.id for m in spine if m.message]
    if messages and b.draw(st.booleans()):
        message = b.draw(st.sampled_from(messages))
        engagement = b.draw(st.sampled_from(("opened", "clicked")))
        return graph.WaitUntil(id_, then, else_, None, message, engagement, timeout)
    match = b.draw(event_matches(b.keyed, WAIT_EVENTS))
    return graph.WaitUntil(id_, then, else_, match, timeout=timeout)


def _branch(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    then, else_ = (b.nested(Mark(id_), depth, spine, after) for _ in range(2))
    return graph.Branch(id_, model.parse({"tag": f"if_{id_}"}), then, else_)


def _split(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    weights = b.draw(st.lists(st.integers(0, 100), min_size=2, max_size=3))
    weights[0] = weights[0] or int(not any(weights))
    arms = tuple(
        (name, weight, b.nested(Mark(id_), depth, spine, after))
        for name, weight in zip("abc", weights, strict=False)
    )
    return graph.Split(id_, arms)


def _update(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    return graph.UpdateContact(id_, after, set={"stage": id_}, add_tags=("seen",))


def _score(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    return graph.Score(id_, after, b.draw(st.sampled_from((-5, 1, 10))))


def _exit(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    return graph.Exit(id_, b.draw(st.sampled_from(("", "done"))))


def _goto(b: Builder, id_: str, after: str | None, depth: int, spine: list[Mark]) -> graph.Step:
    """Jump back to a step every path here passes, when a wait lies between (a loop
    without one is refused by validation); else end the run."""
    targets = [m.id for i, m in enumerate(spine) if any(w.loop_wait for w in spine[i:])]
    if not targets:
        return graph.Exit(id_, "no loop")
    return graph.Goto(id_, b.draw(st.sampled_from(targets)))


BUILD: dict[str, Callable[[Builder, str, str | None, int, list[Mark]], graph.Step]] = {
    "send": _send,
    "wait": _wait,
    "wait_until": _wait_until,
    "branch": _branch,
    "split": _split,
    "update": _update,
    "score": _score,
    "exit": _exit,
    "goto": _goto,
}


def event_matches(keyed: bool, names: Sequence[str]) -> st.SearchStrategy[graph.EventMatch]:
    match_key = st.booleans() if keyed else st.just(False)
    return st.builds(graph.EventMatch, st.sampled_from(names), st.just(()), match_key)


@st.composite
def windows(draw: st.DrawFn) -> graph.SendWindow:
    start = draw(st.integers(0, 21))
    end = draw(st.integers(start + 1, 23))
    minutes = st.sampled_from((0, 30))
    spread = draw(st.sampled_from([timedelta(minutes=m) for m in (0, 30, 60, 120)]))
    return graph.SendWindow(
        days=draw(DAYS),
        start=time(start, draw(minutes)),
        end=time(end, draw(minutes)),
        tz=draw(st.sampled_from(("contact", *ZONES))),
        spread=spread,
    )


caps = st.dictionaries(
    st.sampled_from(("email", "sms", "webhook")),
    st.builds(
        graph.FrequencyCap,
        st.integers(1, 2),
        st.sampled_from([timedelta(hours=h) for h in (1, 4, 16, 24)]),
    ),
    max_size=2,
)


@st.composite
def flows(draw: st.DrawFn, simple: bool = False) -> graph.Flow:
    """A random flow; `simple` ones wait on no event and have no exits, goal, window, cap
    or missing template (what the reference walk handles)."""
    keyed = not simple and draw(st.booleans())
    builder = Builder(draw, simple, keyed)
    start = builder.sequence(0, [], None)
    reentry = draw(st.sampled_from(("once", "after_exit", "always")))
    entry = graph.Entry(reentry, "properties.cart_id" if keyed else None)
    base = graph.Flow("f", "F", graph.EventTrigger(TRIGGER), start, builder.steps, entry)
    if simple:
        return base
    names = (*WAIT_EVENTS, TRIGGER)
    rules = draw(st.lists(st.builds(graph.ExitRule, event_matches(keyed, names)), max_size=2))
    if draw(st.booleans()):
        rules.append(graph.ExitRule(condition=model.parse({"tag": EXIT_TAG}), reason="tagged"))
    within = st.sampled_from([timedelta(days=d) for d in (1, 3, 7)])
    goal = draw(st.none() | st.builds(graph.Goal, event_matches(keyed, names), within))
    goal = goal and replace(goal, exit=draw(st.booleans()))
    window = draw(st.none() | windows())
    return replace(
        base,
        exit_when=tuple(rules),
        goal=goal,
        settings=graph.FlowSettings(send_window=window, frequency_caps=draw(caps)),
    )


def mentioned(flow: graph.Flow) -> set[str]:
    """The event names the flow listens to."""
    names = {rule.event.name for rule in flow.exit_when if rule.event is not None}
    names |= {flow.goal.event.name} if flow.goal else set()
    waits = (s for s in flow.steps.values() if isinstance(s, graph.WaitUntil))
    return names | {matching.awaited_event(s) for s in waits}


# -- the contact the engine asks about --------------------------------------------------


@dataclass(frozen=True)
class Contact:
    id: int
    zone: str | None
    renewal: str | None
    exit_at: datetime | None
    other_sends: tuple[datetime, ...] = ()  # emails other flows sent


@dataclass
class FakeFacts:
    """`engine.Facts` for one run at `now`: branches answer by (run, tag, visit), the exit
    condition holds from the contact's `exit_at`, recent sends come from `sent`."""

    contact: Contact
    run_id: int
    now: datetime
    seed: int
    asked: Counter[tuple[int, str]]
    sent: Callable[[str], list[datetime]]

    def explain(self, condition: Condition) -> Explanation:
        assert isinstance(condition, Tag)
        if condition.tag == EXIT_TAG:
            exit_at = self.contact.exit_at
            holds = exit_at is not None and self.now >= exit_at
        else:
            self.asked[(self.run_id, condition.tag)] += 1
            visit = self.asked[(self.run_id, condition.tag)]
            holds = answer(self.seed, self.run_id, condition.tag, visit)
        return Explanation("", holds, None, {"fake": True})

    def recent_sends(self, channel: str, since: datetime) -> Sequence[datetime]:
        return [t for t in self.sent(channel) if since <= t <= self.now]

    def timezone(self) -> str | None:
        return self.contact.zone

    def attribute(self, name: str) -> Any:
        return self.contact.renewal if name == "renewal" else None

    def template_exists(self, channel: str, key: str) -> bool:
        return key != MISSING


# -- the in-memory worker ---------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A ledger row."""

    contact_id: int
    run_id: int
    step_id: str
    channel: str
    at: datetime


@dataclass(frozen=True)
class Planned:
    """An event to send in a round: `lag` places its timestamp between the last round and
    this one; `pick` chooses the message an open or click is about (-1: none of ours)."""

    contact: int
    name: str
    cart: str | None
    revenue: int | None
    pick: int
    lag: float


class Sim:
    """Runs, their history and the send ledger of one flow, moved round by round."""

    def __init__(self, flow: graph.Flow, contacts: Sequence[Contact], seed: int, now: datetime):
        self.flow, self.seed, self.now = flow, seed, now
        self.contacts = {c.id: c for c in contacts}
        self.runs: dict[int, Run] = {}
        self.records: dict[int, list[history.Record]] = {}
        self.ledger: dict[tuple[int, str, int], Sent] = {}
        self.asked: Counter[tuple[int, str]] = Counter()
        self.advanced: set[int] = set()
        self.event_ids = itertools.count(1)

    def facts(self, run: Run, asked: Counter[tuple[int, str]] | None = None) -> FakeFacts:
        contact = self.contacts[run.contact_id]
        return FakeFacts(
            contact,
            run.id,
            self.now,
            self.seed,
            self.asked if asked is None else asked,
            lambda channel: self.sends(contact, channel),
        )

    def sends(self, contact: Contact, channel: str) -> list[datetime]:
        ours = [
            s.at for s in self.ledger.values() if (s.contact_id, s.channel) == (contact.id, channel)
        ]
        others = [t for t in contact.other_sends if t <= self.now] if channel == "email" else []
        return ours + others

    def event(self, planned: Planned, before: datetime) -> tuple[int, EventInfo]:
        contact_id = planned.contact
        props: dict[str, Any] = {}
        if planned.cart is not None:
            props["cart_id"] = planned.cart
        if planned.revenue is not None:
            props["revenue"] = planned.revenue
        if planned.name in ENGAGEMENT:
            props |= self.message_ref(contact_id, planned.pick)
        at = before + (self.now - before) * planned.lag
        return contact_id, EventInfo(next(self.event_ids), planned.name, at, props)

    def message_ref(self, contact_id: int, pick: int) -> dict[str, Any]:
        """What an open or click names: a message this flow sent the contact (the run id
        as a number or as text), or none of ours."""
        mine = [s for s in self.ledger.values() if s.contact_id == contact_id]
        mine = [s for s in mine if s.channel in ("email", "sms")]
        if pick < 0 or not mine:
            return {"run": 999, "step": "s0"}
        sent = mine[-1 - pick % len(mine)]  # 0: the latest
        return {"run": sent.run_id if pick % 2 else str(sent.run_id), "step": sent.step_id}

    # -- one round of the worker --------------------------------------------------------

    def round(self, now: datetime, planned: Sequence[Planned] = ()) -> None:
        assert now >= self.now
        before, self.now, self.advanced = self.now, now, set()
        events = [self.event(p, before) for p in planned]
        for contact_id, event in events:
            self.enrol(contact_id, event)
        self.react(events)
        self.advance_due()
        self.check()

    def enrol(self, contact_id: int, event: EventInfo) -> None:
        """Start a run as `enrolment.enrol` does: one live run per (contact, entry key)."""
        flow = self.flow
        key = matching.entry_key(flow.entry, event)
        if not matching.triggers(flow.trigger, event, self.now) or key is None:
            return
        mine = [r for r in self.runs.values() if (r.contact_id, cart(r)) == (contact_id, key)]
        if flow.entry.reentry == "once" and mine:
            return
        if flow.entry.reentry == "after_exit" and any(r.status in engine.LIVE for r in mine):
            return
        if flow.entry.reentry == "always":
            key = f"{key}#{event.id}"  # as enrolment writes it
        trigger = {
            "source": "event",
            "event_id": event.id,
            "name": event.name,
            "at": event.timestamp.isoformat(),
            "properties": dict(event.properties),
        }
        run_id = len(self.runs) + 1
        run = Run(run_id, contact_id, "active", flow.start, self.now, self.now, key)
        run.state = {"trigger": trigger}
        self.runs[run_id] = run
        self.records[run_id] = [history.Record(None, history.ENTERED, self.now)]

    def react(self, events: Sequence[tuple[int, EventInfo]]) -> None:
        """Each live run meets its contact's events, as `listening.react` does."""
        for run_id in sorted(self.runs):
            for contact_id, event in events:
                before = self.runs[run_id]
                if contact_id != before.contact_id:
                    continue
                converts, ends = expected_reaction(self.flow, before, event)
                out = reactions.on_event(self.flow, before, event, self.now)
                if out is not None:
                    self.apply_reaction(before, event, out)
                after = self.runs[run_id]
                if converts:
                    assert after.converted_at == event.timestamp, "the goal was not reached"
                    assert after.converted_step == before.state.get("last_sent")
                if ends:
                    assert after.status == "exited", f"{event} did not end run {run_id}"

    def apply_reaction(self, before: Run, event: EventInfo, out: engine.Outcome) -> None:
        run = out.run
        if "wake" in run.state and "wake" not in before.state:
            assert (run.status, run.next_at) == ("active", self.now)
            deadline = before.state["pending"].get("until")
            if deadline is not None and not BUG_WAKE_AFTER_TIMEOUT:
                assert event.timestamp <= datetime.fromisoformat(deadline), "woke after timeout"
        elif run.status not in ENDED:
            assert (run.status, run.next_at) == (before.status, before.next_at)
        self.runs[run.id] = run
        self.records[run.id] += out.records

    def advance_due(self) -> None:
        """Advance every due run once, earliest first, as `runs.advance_batch` does."""
        due = [
            r
            for r in self.runs.values()
            if r.status in engine.LIVE and r.next_at is not None and r.next_at <= self.now
        ]
        for run in sorted(due, key=lambda r: (r.next_at, r.id)):
            out = engine.advance(self.flow, run, self.now, self.facts(run))
            intents = [e for e in out.effects if isinstance(e, engine.SendIntent)]
            if BUG_CAP_IN_ONE_ADVANCE:
                for intent in intents:
                    self.check_cap(run, intent.channel)
            for intent in intents:
                self.write(out.run, intent)
            if out.run.next_at is not None:
                assert out.run.next_at > self.now, "an advance left the run due in the past"
            self.runs[run.id] = out.run
            self.records[run.id] += out.records
            self.advanced.add(run.id)

    def write(self, run: Run, intent: engine.SendIntent) -> None:
        """A ledger row; a second intent with the same key is a bug, not a no-op."""
        key = (run.id, intent.step_id, intent.occurrence)
        assert key not in self.ledger, f"send intent {key} decided twice"
        step = self.flow.steps[intent.step_id]
        assert isinstance(step, graph.Send)
        assert (intent.channel, intent.template, intent.due_at) == (
            step.channel,
            step.template,
            self.now,
        )
        self.check_window(run, intent.channel)
        if not BUG_CAP_IN_ONE_ADVANCE:
            self.check_cap(run, intent.channel)
        contact = run.contact_id
        self.ledger[key] = Sent(contact, run.id, intent.step_id, intent.channel, self.now)

    def check_window(self, run: Run, channel: str) -> None:
        window = self.flow.settings.send_window
        if window is None or channel not in ("email", "sms"):
            return
        name = self.contacts[run.contact_id].zone if window.tz == "contact" else window.tz
        local = self.now.astimezone(zone_of(name))
        assert local.weekday() in window.days, f"sent on {local:%A} outside the window"
        assert window.start <= local.time() < window.end, f"sent at {local} outside the window"

    def check_cap(self, run: Run, channel: str) -> None:
        cap = self.flow.settings.frequency_caps.get(channel)
        if cap is None:
            return
        sent = self.sends(self.contacts[run.contact_id], channel)
        assert sum(self.now - cap.per < t <= self.now for t in sent) < cap.count, "over the cap"

    # -- invariants ---------------------------------------------------------------------

    def check(self) -> None:
        live = [(r.contact_id, r.entry_key) for r in self.runs.values() if r.status in engine.LIVE]
        assert len(live) == len(set(live)), "two live runs for one entry key"
        written = self.check_occurrences()
        for run in self.runs.values():
            self.check_state(run)
            self.check_history(run)
            self.check_visits(run, written)
            self.check_idempotent(run)

    def check_state(self, run: Run) -> None:
        """Ended, or waiting at a step that waits, with a due time in the future unless
        it waits for ever on an event."""
        if run.status in ENDED:
            assert (run.step_id, run.next_at, run.wait_event) == (None, None, None)
            assert "pending" not in run.state and "wake" not in run.state
            if run.status == "failed":  # the flows are valid: only a missing template fails
                assert f"template {MISSING!r} does not exist" in (run.end_reason or "")
            return
        assert run.status == "waiting", f"run {run.id} left {run.status} after the round"
        assert run.step_id is not None and "wake" not in run.state
        step = self.flow.steps[run.step_id]
        pending = run.state["pending"]
        assert pending["step"] == step.id
        if isinstance(step, graph.WaitUntil):
            assert run.wait_event == matching.awaited_event(step)
            assert (run.next_at is None) == (step.timeout is None)
            if step.timeout is not None:
                assert run.next_at == datetime.fromisoformat(pending["since"]) + step.timeout
        elif isinstance(step, graph.Wait):
            assert run.wait_event is None
            assert run.next_at == datetime.fromisoformat(pending["until"])
        else:
            assert isinstance(step, graph.Send), f"run {run.id} parked at {step}"
            assert run.wait_event is None and run.next_at is not None
            assert pending["occurrence"] == run.state["visits"][step.id]
        assert run.next_at is None or run.next_at > self.now

    def check_occurrences(self) -> dict[tuple[int, str], int]:
        """Per (run, send step): occurrences 1..n without gaps; returns each n."""
        found: dict[tuple[int, str], list[int]] = defaultdict(list)
        for run_id, step_id, occurrence in self.ledger:
            found[(run_id, step_id)].append(occurrence)
        for key, occurrences in found.items():
            assert sorted(occurrences) == list(range(1, len(occurrences) + 1)), key
        return {key: len(occurrences) for key, occurrences in found.items()}

    def check_visits(self, run: Run, written: dict[tuple[int, str], int]) -> None:
        """Each visit to a send step wrote its intent, except one the run is deferred at
        or ended at (failed, exited before sending)."""
        pending = run.state.get("pending") or {}
        last = self.records[run.id][-1]
        for step_id, visits in (run.state.get("visits") or {}).items():
            if not isinstance(self.flow.steps[step_id], graph.Send):
                continue
            unsent = visits - written.get((run.id, step_id), 0)
            if pending.get("step") == step_id:
                assert unsent == 1, (run.id, step_id)
            elif unsent:
                assert unsent == 1 and run.status in ENDED and last.step_id == step_id

    def check_history(self, run: Run) -> None:
        records = self.records[run.id]
        assert records[0].action == history.ENTERED
        body = records[1:]
        ends = [i for i, r in enumerate(body) if r.action in TERMINAL.values()]
        if run.status in ENDED:
            assert ends == [len(body) - 1] and body[-1].action == TERMINAL[run.status]
        else:
            assert not ends, f"live run {run.id} has an end in its history"
        self.check_walk(run, body)

    def check_walk(self, run: Run, body: list[history.Record]) -> None:
        """The visits (first records) walk the flow from its start, one first record
        each; every other record belongs to the visit before it."""
        flow, current = self.flow, None
        walk = [r.step_id for r in body if r.first]
        assert walk[:1] in ([], [flow.start]), walk
        for a, b in itertools.pairwise(walk):
            assert a is not None and b in successors(flow.steps[a]), (a, b)
        for r in body:
            if r.first:
                current = r.step_id
            elif r.action == history.COMPLETED:
                assert r.step_id is None
            elif r.action in (history.EXITED, history.FAILED):
                following = successors(flow.steps[current]) if current else [flow.start]
                unrecorded = BUG_NO_FIRST_RECORD and r.step_id in following
                assert r.step_id == current or unrecorded, (r, current)
            elif r.action != history.CONVERTED:
                assert r.step_id == current, (r, current)
        firsts = Counter(walk)
        visits = run.state.get("visits") or {}
        assert set(firsts) <= set(visits)
        for step_id, n in visits.items():
            missing = n - firsts[step_id]
            unrecorded = BUG_NO_FIRST_RECORD and step_id == body[-1].step_id
            assert missing == 0 or (missing == 1 and unrecorded), step_id

    def check_idempotent(self, run: Run) -> None:
        """Advancing again at the same instant, with no new event, changes nothing: the
        runs just advanced, and every run with a due time (not due: a stale claim)."""
        if run.id not in self.advanced and (run.status in ENDED or run.next_at is None):
            return
        out = engine.advance(self.flow, run, self.now, self.facts(run, Counter(self.asked)))
        assert (out.effects, out.records) == ([], []), f"run {run.id} moved twice"
        assert out.run == run


def cart(run: Run) -> str:
    """The run's entry key as the trigger gave it (without the `always` suffix)."""
    return run.entry_key.partition("#")[0]


def counts(run: Run, event: EventInfo) -> bool:
    """Whether `event` is one the run reacts to: after its trigger (at the same instant,
    later in the log)."""
    trigger = run.state["trigger"]
    at = datetime.fromisoformat(trigger["at"])
    return event.timestamp > at or (event.timestamp == at and event.id > trigger["event_id"])


def expected_reaction(flow: graph.Flow, run: Run, event: EventInfo) -> tuple[bool, bool]:
    """Whether `event` should convert the run, and whether it should end it (an exit
    rule, or the goal with `exit`)."""
    if run.status not in engine.LIVE or not counts(run, event):
        return False, False
    goal, converts = flow.goal, False
    if goal is not None and run.converted_at is None and matches(flow, goal.event, run, event):
        since = datetime.fromisoformat(run.state["trigger"]["at"])
        converts = event.timestamp <= since + goal.within
    exits = any(rule.event and matches(flow, rule.event, run, event) for rule in flow.exit_when)
    return converts, exits or bool(converts and goal and goal.exit)


def matches(flow: graph.Flow, m: graph.EventMatch, run: Run, event: EventInfo) -> bool:
    if m.name != event.name:
        return False
    if not m.match_key:
        return True
    if flow.entry.reentry == "always" and BUG_ALWAYS_MATCH_KEY:
        return False
    return event.properties.get("cart_id") == cart(run)


# -- the property: random flows x random event streams ----------------------------------


@dataclass(frozen=True)
class Scenario:
    flow: graph.Flow
    contacts: tuple[Contact, ...]
    rounds: tuple[tuple[int, tuple[Planned, ...]], ...]  # (minutes on, events)
    start: datetime
    catch_up: timedelta  # how far the clock jumps once the events stop
    seed: int


@st.composite
def contacts(draw: st.DrawFn, contact_id: int, start: datetime) -> Contact:
    hours = st.integers(0, 24 * 10).map(lambda h: start + timedelta(hours=h))
    renewal = st.sampled_from(("2026-04-01", "2026-10-30", "2025-01-01", "not a date"))
    return Contact(
        contact_id,
        draw(st.sampled_from((*ZONES, None, "Mars/Olympus"))),
        draw(st.none() | renewal),
        draw(st.none() | hours),
        tuple(draw(st.lists(hours, max_size=3))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    flow = draw(flows())
    start = draw(st.sampled_from(STARTS))
    people = tuple(draw(contacts(n, start)) for n in range(1, draw(st.integers(1, 3)) + 1))
    listened = sorted(mentioned(flow))
    names = listened * 3 + [TRIGGER] * max(2, len(listened)) + [NOISE, *ENGAGEMENT]
    planned = st.builds(
        Planned,
        contact=st.integers(1, len(people)),
        name=st.sampled_from(names),
        cart=st.sampled_from((*CARTS, None)),
        revenue=st.none() | st.integers(0, 500),
        pick=st.integers(-1, 5),
        lag=st.sampled_from((0.0, 0.5, 1.0)),
    )
    minutes = st.sampled_from((0, 1, 7, 30, 60, 180, 600, 1440, 2880)) | st.integers(0, 4000)
    rounds = draw(
        st.lists(st.tuples(minutes, st.lists(planned, max_size=4).map(tuple)), max_size=40)
    )
    catch_up = draw(st.sampled_from([timedelta(0), timedelta(days=1), timedelta(days=30)]))
    return Scenario(flow, people, tuple(rounds), start, catch_up, draw(st.integers(0, 2**32)))


def play(scenario: Scenario) -> Sim:
    """The rounds with their events, one far jump, then the clock moved to each next due
    time until nothing is due (loops never stop: a few dozen rounds of them)."""
    sim = Sim(scenario.flow, scenario.contacts, scenario.seed, scenario.start)
    first = [Planned(1, TRIGGER, CARTS[0], None, -1, 1.0)]  # at least one run
    sim.round(scenario.start + timedelta(minutes=1), first)
    for minutes, planned in scenario.rounds:
        sim.round(sim.now + timedelta(minutes=minutes), planned)
    sim.round(sim.now + scenario.catch_up)
    loops = any(isinstance(s, graph.Goto) for s in scenario.flow.steps.values())
    for _ in range(60 if loops else 5000):
        due = [r.next_at for r in sim.runs.values() if r.status in engine.LIVE and r.next_at]
        if not due:
            break
        sim.round(min(due))
    return sim


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_random_flows_under_random_events_keep_every_invariant(scenario: Scenario) -> None:
    note(pprint.pformat(scenario, width=100))  # hypothesis prints composites blank
    sim = play(scenario)
    if any(isinstance(s, graph.Goto) for s in scenario.flow.steps.values()):
        return
    for run in sim.runs.values():  # without loops every run ends or waits for an event
        forever = run.status == "waiting" and run.next_at is None
        assert run.status in ENDED or forever, f"run {run.id} stuck: {run}"


# -- the reference: flows that wait on no event ------------------------------------------


def reference_walk(
    flow: graph.Flow, start: datetime, until: datetime, seed: int, tz: ZoneInfo
) -> tuple[list[tuple[str, int, datetime]], str | None]:
    """The sends (step, occurrence, time) of run 1 walking the flow's steps from `start`
    until `until`, and how it ended (None: still going)."""
    now, at = start, flow.start
    visits: Counter[str] = Counter()
    sends: list[tuple[str, int, datetime]] = []
    while at is not None:
        step = flow.steps[at]
        visits[at] += 1
        if isinstance(step, graph.Exit):
            return sends, "exited"
        if isinstance(step, graph.Send):
            sends.append((at, visits[at], now))
        if isinstance(step, graph.Wait):
            now = reference_wait(step, now, tz)
            if now > until:
                return sends, None
        at = reference_next(step, visits[at], seed)
    return sends, "completed"


def reference_wait(step: graph.Wait, now: datetime, tz: ZoneInfo) -> datetime:
    """A duration on; or the first local `until` on one of `days` after `now` (arriving
    exactly at that time waits for the next one: a loop through it never spins)."""
    if step.duration is not None:
        return now + step.duration
    assert step.until is not None
    today = now.astimezone(tz).date()
    days = (today + timedelta(days=n) for n in range(8))
    starts = (datetime.combine(d, step.until, tz) for d in days if d.weekday() in step.days)
    return next(s for s in starts if s > now).astimezone(UTC)  # durations are exact hours


def reference_next(step: graph.Step, visit: int, seed: int) -> str | None:
    if isinstance(step, graph.Branch):
        assert isinstance(step.condition, Tag)
        return step.then if answer(seed, 1, step.condition.tag, visit) else step.else_
    if isinstance(step, graph.Split):
        arm = engine.choose_arm(step, 1)
        return next(target for name, _, target in step.arms if name == arm)
    if isinstance(step, graph.Goto):
        return step.target
    assert isinstance(step, graph.Send | graph.Wait | graph.UpdateContact | graph.Score)
    return step.next


@settings(max_examples=examples(250), deadline=None)
@given(
    flow=flows(simple=True),
    start=st.sampled_from(STARTS),
    zone=st.sampled_from(ZONES),
    seed=st.integers(0, 2**32),
)
def test_flows_without_event_waits_send_what_a_plain_walk_sends(
    flow: graph.Flow, start: datetime, zone: str, seed: int
) -> None:
    note(pprint.pformat(flow, width=100))
    until = start + timedelta(days=14)
    contact = Contact(1, zone, None, None)
    run = Run(1, 1, "active", flow.start, start, start)
    asked: Counter[tuple[int, str]] = Counter()
    sends: list[tuple[str, int, datetime]] = []
    for _ in range(2000):  # advanced exactly when due, as a simulation does
        if run.status not in engine.LIVE or run.next_at is None or run.next_at > until:
            break
        now = run.next_at
        facts = FakeFacts(contact, 1, now, seed, asked, lambda channel: [])
        out = engine.advance(flow, run, now, facts)
        intents = [e for e in out.effects if isinstance(e, engine.SendIntent)]
        sends += [(e.step_id, e.occurrence, now) for e in intents]
        run = out.run
    else:
        pytest.fail("still due after 2000 rounds")
    expected, end = reference_walk(flow, start, until, seed, ZoneInfo(zone))
    assert sends == expected
    assert (run.status if run.status in ENDED else None) == end


# -- bugs found (expected to fail until fixed) -------------------------------------------

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


def a_flow(*steps: graph.Step, **kw: Any) -> graph.Flow:
    return graph.Flow("f", "F", graph.ApiTrigger(), steps[0].id, {s.id: s for s in steps}, **kw)


def a_run(step_id: str, entry_key: str = "") -> Run:
    return Run(1, 1, "active", step_id, T0, T0, entry_key)


def facts_at(now: datetime) -> FakeFacts:
    return FakeFacts(Contact(1, "UTC", None, None), 1, now, 0, Counter(), lambda channel: [])


def intents(out: engine.Outcome) -> list[engine.SendIntent]:
    return [e for e in out.effects if isinstance(e, engine.SendIntent)]


def test_bug_a_daily_loop_spins_when_advanced_exactly_on_time() -> None:
    daily = a_flow(
        graph.Wait("w", "s", until=time(9, 0)),
        graph.Send("s", "g", "email", "daily"),
        graph.Goto("g", "w"),
    )
    parked = engine.advance(daily, a_run("w"), T0, facts_at(T0)).run
    assert parked.next_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    out = engine.advance(daily, parked, parked.next_at, facts_at(parked.next_at))
    assert len(intents(out)) == 1
    assert out.run.status == "waiting" and out.run.next_at == datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "step",
    [graph.Exit("x", "done"), graph.Send("x", None, "email", MISSING)],
    ids=["exit-step", "failed-send"],
)
def test_bug_a_visit_that_ends_the_run_has_no_first_record(step: graph.Step) -> None:
    out = engine.advance(a_flow(step), a_run("x"), T0, facts_at(T0))
    assert out.run.state["visits"] == {"x": 1} and out.run.status in ENDED
    assert [r.first for r in out.records if r.step_id == "x"].count(True) == 1


def test_bug_an_event_after_the_timeout_still_wakes_the_wait() -> None:
    order = graph.EventMatch("Order Completed")
    f = a_flow(
        graph.WaitUntil("w", "thanks", "nudge", event=order, timeout=timedelta(days=2)),
        graph.Send("thanks", None, "email", "thanks"),
        graph.Send("nudge", None, "email", "nudge"),
    )
    parked = engine.advance(f, a_run("w"), T0, facts_at(T0)).run
    late = T0 + timedelta(days=3)  # the worker was down over the timeout
    ordered = EventInfo(5, "Order Completed", T0 + timedelta(days=2, hours=1))
    woken = reactions.on_event(f, parked, ordered, late)
    run = woken.run if woken is not None else parked
    out = engine.advance(f, run, late, facts_at(late))
    assert [i.template for i in intents(out)] == ["nudge"]


def test_bug_match_key_never_matches_a_run_of_an_always_flow() -> None:
    entry = graph.Entry("always", "properties.cart_id")
    bought = graph.ExitRule(event=graph.EventMatch("Order Completed", match_key=True))
    f = a_flow(graph.Wait("w", None, duration=timedelta(days=1)), entry=entry, exit_when=(bought,))
    trigger = EventInfo(17, TRIGGER, T0, {"cart_id": "c1"})
    run = replace(a_run("w", "c1#17"), state={"trigger": {"event_id": 17, "at": T0.isoformat()}})
    assert matching.entry_key(entry, trigger) == "c1"  # enrolment then appends "#17"
    order = EventInfo(20, "Order Completed", T0 + timedelta(hours=1), {"cart_id": "c1"})
    out = reactions.on_event(f, run, order, T0 + timedelta(hours=1))
    assert out is not None and out.run.status == "exited"


def test_bug_two_sends_in_one_advance_pass_a_cap_of_one() -> None:
    caps = {"email": graph.FrequencyCap(1, timedelta(hours=16))}
    f = a_flow(
        graph.Send("a", "b", "email", "welcome"),
        graph.Send("b", None, "email", "tips"),
        settings=graph.FlowSettings(frequency_caps=caps),
    )
    out = engine.advance(f, a_run("a"), T0, facts_at(T0))
    assert [i.step_id for i in intents(out)] == ["a"]
    assert out.run.status == "waiting" and out.run.next_at == T0 + timedelta(hours=16)
