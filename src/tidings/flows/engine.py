"""The flow engine: `advance(flow, run, now, facts)` takes a run as far as it can go now and
returns what to write — the run's new state, its effects (send intents, profile changes)
and the history records saying why. `on_event` decides what one event does to a live run
(wake a `wait_until`, exit, convert).

Both are pure: no database, no clock. What they need to know about the contact comes from
`facts` (conditions, recent sends, zone, attributes), which the worker loads and tests fake.
The worker persists a run's state and effects in one transaction, so a crash replays the
whole advance or none of it, and the ledger's unique (run, step, occurrence) key makes a
replayed send intent a no-op."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from tidings.conditions.evaluate import Explanation
from tidings.conditions.nodes import Condition
from tidings.flows import graph, history, local_time
from tidings.flows import matching as match
from tidings.flows.history import Record

#: Steps one advance may take before it must wait; validation refuses loops without a
#: wait, so reaching this means a flow too long to run in one go, not a bug.
MAX_STEPS = 200

LIVE = ("active", "waiting")


class Facts(Protocol):
    """What the engine may ask about the run's contact."""

    def explain(self, condition: Condition) -> Explanation:
        """The condition evaluated for the contact now, with the values seen."""
        ...

    def recent_sends(self, channel: str, since: datetime) -> Sequence[datetime]:
        """When the contact's messages on `channel` were queued, from `since` on."""
        ...

    def timezone(self) -> str | None: ...

    def attribute(self, name: str) -> Any: ...

    def template_exists(self, channel: str, key: str) -> bool: ...


@dataclass
class Run:
    """A run as the engine sees it. `state` holds: `visits` (step -> times entered),
    `cohorts` (split step -> arm), `pending` (what the run is parked on at its step),
    `wake` (the event that ended a wait_until), `trigger` (the event that started it),
    `last_sent` (the last message step, for goal attribution)."""

    id: int
    contact_id: int
    status: str
    step_id: str | None
    next_at: datetime | None
    entered_at: datetime
    entry_key: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    wait_event: str | None = None
    end_reason: str | None = None
    converted_at: datetime | None = None
    converted_step: str | None = None
    revenue: float | None = None


@dataclass(frozen=True)
class SendIntent:
    """One ledger row to write: unique by (run, step, occurrence)."""

    step_id: str
    occurrence: int
    channel: str
    template: str | None
    params: Mapping[str, Any]
    due_at: datetime


@dataclass(frozen=True)
class ContactUpdate:
    """A profile change from an update_contact step."""

    step_id: str
    change: graph.UpdateContact


@dataclass(frozen=True)
class ScoreChange:
    step_id: str
    delta: int


Effect = SendIntent | ContactUpdate | ScoreChange


@dataclass
class Outcome:
    """What to write for one run: its new state, the effects and the history records."""

    run: Run
    effects: list[Effect] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """Operator settings the engine needs."""

    fallback_timezone: str = "UTC"
    max_steps: int = MAX_STEPS


def advance(
    flow: graph.Flow, run: Run, now: datetime, facts: Facts, options: Options = Options()
) -> Outcome:
    """Take `run` through every step it can do at `now`, up to the next wait."""
    out = Outcome(replace(run, state=_copy_state(run.state)))
    stepper = _Stepper(flow, out, now, facts, options)
    try:
        stepper.run()
    except _Failure as failure:
        stepper.end("failed", str(failure), history.FAILED)
    return out


class _Failure(Exception):
    """A step cannot be carried out (missing template, broken data): the run fails."""


class _Stepper:
    def __init__(
        self, flow: graph.Flow, out: Outcome, now: datetime, facts: Facts, options: Options
    ) -> None:
        self.flow, self.out, self.now, self.facts, self.options = flow, out, now, facts, options
        self.r = out.run
        #: A step visited in this advance whose first record is not written yet.
        self.unrecorded: str | None = None
        #: Send intents per channel decided in this advance (caps count them too).
        self.sent_now: dict[str, int] = {}

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        if self.r.status not in LIVE:
            return
        if self.r.next_at is not None and self.r.next_at > self.now and "wake" not in self.r.state:
            return  # not due (a stale claim); nothing to do
        if self._exit_condition_holds():
            return
        self.r.status, self.r.next_at, self.r.wait_event = "active", None, None
        for _ in range(self.options.max_steps):
            if self.r.step_id is None:
                self.end("completed", None, history.COMPLETED)
                return
            if self.r.step_id not in self.flow.steps:
                raise _Failure(f"step {self.r.step_id!r} is not in version {self.flow.version}")
            if not self.step(self.flow.steps[self.r.step_id]):
                return  # parked or ended
        raise _Failure(f"more than {self.options.max_steps} steps without a wait")

    def step(self, step: graph.Step) -> bool:
        """Carry out `step`; True when the run moved on to another step."""
        if isinstance(step, graph.Send):
            return self.send(step)
        if isinstance(step, graph.Wait):
            return self.wait(step)
        if isinstance(step, graph.WaitUntil):
            return self.wait_until(step)
        if isinstance(step, graph.Branch):
            return self.branch(step)
        if isinstance(step, graph.Split):
            return self.split(step)
        if isinstance(step, graph.UpdateContact):
            self.visit(step.id)
            self.out.effects.append(ContactUpdate(step.id, step))
            self.record(step.id, history.UPDATED, True, {})
            return self.go(step.next)
        if isinstance(step, graph.Score):
            self.visit(step.id)
            self.out.effects.append(ScoreChange(step.id, step.delta))
            self.record(step.id, history.SCORED, True, {"delta": step.delta})
            return self.go(step.next)
        if isinstance(step, graph.Goto):
            self.visit(step.id)
            self.record(step.id, history.JUMPED, True, {"to": step.target})
            return self.go(step.target)
        self.visit(step.id)
        self.end("exited", step.reason or "exit step", history.EXITED)
        return False

    # -- bookkeeping --------------------------------------------------------------------

    def record(self, step_id: str | None, action: str, first: bool, detail: dict[str, Any]) -> None:
        if first:
            self.unrecorded = None
        self.out.records.append(Record(step_id, action, self.now, first, detail))

    def visit(self, step_id: str) -> int:
        """Count a fresh visit to the step; its number is the ledger occurrence."""
        visits = self.r.state.setdefault("visits", {})
        visits[step_id] = int(visits.get(step_id, 0)) + 1
        self.unrecorded = step_id  # its first record is still to come
        return int(visits[step_id])

    def go(self, step_id: str | None) -> bool:
        self.r.state.pop("pending", None)
        self.r.state.pop("wake", None)
        self.r.step_id = step_id
        return True

    def park(self, until: datetime | None, pending: dict[str, Any]) -> bool:
        self.r.state["pending"] = pending
        self.r.status, self.r.next_at = "waiting", until
        return False

    def end(
        self, status: str, reason: str | None, action: str, detail: dict[str, Any] | None = None
    ) -> None:
        detail = {**({"reason": reason} if reason else {}), **(detail or {})}
        first = self.unrecorded is not None and self.unrecorded == self.r.step_id
        pending = self.r.state.get("pending")
        parked_here = isinstance(pending, dict) and pending.get("step") == self.r.step_id
        # a run that never entered its step (an exit condition held before) ends at none
        self.record(self.r.step_id if first or parked_here else None, action, first, detail)
        self.r.status, self.r.end_reason = status, reason
        self.r.step_id, self.r.next_at, self.r.wait_event = None, None, None
        self.r.state.pop("pending", None)
        self.r.state.pop("wake", None)

    def _pending(self, step_id: str, kind: str) -> dict[str, Any] | None:
        """What the run is parked on at this step, if it is parked here on this kind of
        step (a run moved to a version where the id names another kind starts it afresh)."""
        pending = self.r.state.get("pending")
        if isinstance(pending, dict) and pending.get("step") == step_id:
            if pending.get("kind", kind) == kind:
                return pending
        return None

    # -- steps --------------------------------------------------------------------------

    def send(self, step: graph.Send) -> bool:
        pending = self._pending(step.id, "send")
        occurrence = int(pending["occurrence"]) if pending else self.visit(step.id)
        first = pending is None
        if step.template and not self.facts.template_exists(step.channel, step.template):
            raise _Failure(f"{step.channel} template {step.template!r} does not exist")
        held = self._held_until(step)
        if held is not None:
            until, why = held
            self.record(step.id, history.DEFERRED, first, {"until": until.isoformat(), "why": why})
            return self.park(until, {"step": step.id, "kind": "send", "occurrence": occurrence})
        if self._exit_condition_holds():
            return False
        intent = SendIntent(step.id, occurrence, step.channel, step.template, step.params, self.now)
        self.out.effects.append(intent)
        self.sent_now[step.channel] = self.sent_now.get(step.channel, 0) + 1
        self.r.state["last_sent"] = step.id
        detail: dict[str, Any] = {"channel": step.channel, "occurrence": occurrence}
        if step.template:
            detail["template"] = step.template
        self.record(step.id, history.SENT, first, detail)
        return self.go(step.next)

    def _held_until(self, step: graph.Send) -> tuple[datetime, str] | None:
        """When the send window or a frequency cap lets this message go, if not now."""
        settings = self.flow.settings
        if step.channel in ("email", "sms") and settings.send_window is not None:
            window = settings.send_window
            fallback = self.options.fallback_timezone
            tz = local_time.window_zone(window, self.facts.timezone(), fallback)
            when = local_time.send_time(self.now, window, tz, self.r.id)
            if when > self.now:
                return when, "send window"
        cap = settings.frequency_caps.get(step.channel)
        if cap is not None:
            sent = list(self.facts.recent_sends(step.channel, self.now - cap.per))
            sent += [self.now] * self.sent_now.get(step.channel, 0)
            release = local_time.cap_release(sent, cap, self.now)
            if release is not None:
                return release, "frequency cap"
        return None

    def wait(self, step: graph.Wait) -> bool:
        pending = self._pending(step.id, "wait")
        if pending is None:
            self.visit(step.id)
            until = self._wait_end(step)
            if until <= self.now:
                self.record(step.id, history.WAITED, True, {"until": until.isoformat()})
                return self.go(step.next)
            self.record(step.id, history.WAITING, True, {"until": until.isoformat()})
            return self.park(until, {"step": step.id, "kind": "wait", "until": until.isoformat()})
        until = datetime.fromisoformat(pending["until"])
        if until > self.now:
            return self.park(until, pending)
        self.record(step.id, history.WAITED, False, {})
        return self.go(step.next)

    def _wait_end(self, step: graph.Wait) -> datetime:
        tz = local_time.zone(self.facts.timezone(), self.options.fallback_timezone)
        if step.duration is not None:
            return self.now + step.duration
        if step.until is not None:  # the next such time after arriving: a loop never spins
            after = self.now + timedelta(seconds=1)
            return local_time.next_local_time(after, step.until, step.days, tz)
        assert step.until_attribute is not None  # noqa: S101 - validation requires one kind
        value = self.facts.attribute(step.until_attribute)
        return local_time.wait_until_attribute(self.now, value, step.offset, step.at, tz)

    def wait_until(self, step: graph.WaitUntil) -> bool:
        pending = self._pending(step.id, "wait_until")
        if pending is None:
            self.visit(step.id)
            deadline = self.now + step.timeout if step.timeout is not None else None
            pending = {"step": step.id, "kind": "wait_until", "since": self.now.isoformat()}
            if deadline is not None:
                pending["until"] = deadline.isoformat()
            detail = {"until": deadline.isoformat()} if deadline else {}
            self.record(step.id, history.WAITING, True, detail)
            return self._park_waiting(step, deadline, pending)
        wake = self.r.state.get("wake")
        if isinstance(wake, dict):
            self.record(step.id, history.WOKE, False, dict(wake))
            return self.go(step.then)
        deadline = datetime.fromisoformat(pending["until"]) if "until" in pending else None
        if deadline is not None and deadline <= self.now:
            self.record(step.id, history.TIMED_OUT, False, {})
            return self.go(step.else_)
        return self._park_waiting(step, deadline, pending)

    def _park_waiting(
        self, step: graph.WaitUntil, deadline: datetime | None, pending: dict[str, Any]
    ) -> bool:
        self.park(deadline, pending)
        self.r.wait_event = match.awaited_event(step)
        return False

    def branch(self, step: graph.Branch) -> bool:
        self.visit(step.id)
        explanation = self.facts.explain(match.scoped(step.condition, self.flow, self.r.id))
        taken = "then" if explanation.holds else "else"
        detail = {"branch": taken, "explanation": explanation.as_dict()}
        self.record(step.id, history.BRANCHED, True, detail)
        return self.go(step.then if explanation.holds else step.else_)

    def split(self, step: graph.Split) -> bool:
        self.visit(step.id)
        cohorts = self.r.state.setdefault("cohorts", {})
        arm = cohorts.get(step.id) or choose_arm(step, self.r.id)
        cohorts[step.id] = arm
        self.record(step.id, history.SPLIT, True, {"arm": arm})
        return self.go(next(target for name, _, target in step.arms if name == arm))

    def _exit_condition_holds(self) -> bool:
        """Check the `exit_when` conditions (event exits are `on_event`'s); end if one holds."""
        for rule in self.flow.exit_when:
            if rule.condition is None:
                continue
            explanation = self.facts.explain(match.scoped(rule.condition, self.flow, self.r.id))
            if explanation.holds:
                reason = rule.reason or "exit condition"
                self.end("exited", reason, history.EXITED, {"explanation": explanation.as_dict()})
                return True
        return False


def choose_arm(step: graph.Split, run_id: int) -> str:
    """The split arm for a run: a stable hash of (run, step) over the arms' weights."""
    digest = hashlib.blake2b(f"{run_id}:{step.id}".encode(), digest_size=8).digest()
    total = sum(weight for _, weight, _ in step.arms)
    point = int.from_bytes(digest, "big") % total
    for name, weight, _ in step.arms:
        if point < weight:
            return name
        point -= weight
    return step.arms[-1][0]


def _copy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for key in ("visits", "cohorts", "pending", "wake"):
        if isinstance(out.get(key), dict):
            out[key] = dict(out[key])
    return out
