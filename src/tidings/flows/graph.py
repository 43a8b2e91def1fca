"""A flow as the engine runs it: plain, frozen data compiled from the written definition
(`definition.load`). Nested step lists are flattened into one map of steps by id, each
pointing at the step that follows it (`next`; None ends the run: completed).

Nothing here touches the database; the engine (`engine.advance`) reads only this, the
run's state and the facts the worker hands it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal, TypeAlias

from tidings.conditions.nodes import Condition, Property

Channel: TypeAlias = Literal["email", "sms", "webhook", "notify"]
Reentry: TypeAlias = Literal["once", "after_exit", "always"]

# -- triggers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EventTrigger:
    """An event named `name` whose properties pass every `where`."""

    name: str
    where: tuple[Property, ...] = ()


@dataclass(frozen=True)
class SegmentTrigger:
    """The contact entered (or left) segment `key` ("Segment Entered" / "Segment Left")."""

    key: str
    entered: bool = True


@dataclass(frozen=True)
class ListJoined:
    """The contact's status on list `key` became subscribed ("List Joined")."""

    key: str


@dataclass(frozen=True)
class FormSubmitted:
    """The contact submitted form `key` ("Form Submitted")."""

    key: str


@dataclass(frozen=True)
class DateTrigger:
    """Each year on the anniversary of date `attribute` (a custom attribute, or the
    `created_at` signup date) shifted by `offset_days`, at `at` in the contact's zone."""

    attribute: str
    offset_days: int = 0
    at: time = time(9, 0)


@dataclass(frozen=True)
class InactiveTrigger:
    """No event among `events` for `days` days (contacts younger than that are not
    inactive). One run per spell of inactivity."""

    days: int
    events: tuple[str, ...] = ("Email Opened", "Email Clicked")


@dataclass(frozen=True)
class ScoreReached:
    """The contact's score reached `threshold` (>=)."""

    threshold: int


@dataclass(frozen=True)
class ApiTrigger:
    """Only `POST /v1/flows/{key}/enrol` (and `flows enrol`) start runs."""


@dataclass(frozen=True)
class ScheduleTrigger:
    """Every `every` from `starting`, every member of `segment` (everyone when None)."""

    every: timedelta
    starting: datetime
    segment: str | None = None


Trigger: TypeAlias = (
    EventTrigger
    | SegmentTrigger
    | ListJoined
    | FormSubmitted
    | DateTrigger
    | InactiveTrigger
    | ScoreReached
    | ApiTrigger
    | ScheduleTrigger
)


@dataclass(frozen=True)
class Entry:
    """Who may start a run, and how often. `key` is a dotted path into the trigger event
    (`properties.cart_id`): one run per distinct value. `filter` must hold at entry."""

    reentry: Reentry = "once"
    key: str | None = None
    filter: Condition | None = None


# -- leaving and converting -------------------------------------------------------------


@dataclass(frozen=True)
class EventMatch:
    """An event named `name` passing every `where`; with `match_key`, its value at the
    flow's entry key path must equal the run's entry key (the same cart)."""

    name: str
    where: tuple[Property, ...] = ()
    match_key: bool = False


@dataclass(frozen=True)
class ExitRule:
    """Leave the run when `event` arrives, or when `condition` holds at a step."""

    event: EventMatch | None = None
    condition: Condition | None = None
    reason: str = ""


@dataclass(frozen=True)
class Goal:
    """A conversion: `event` within `within` of entry. Its `revenue` property (a dotted
    path into properties) is credited to the flow and the last message step; with `exit`
    the run ends there."""

    event: EventMatch
    within: timedelta
    revenue: str = "revenue"
    exit: bool = True


# -- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SendWindow:
    """Messages go out only on `days` (0 = Monday) between `start` and `end` in `tz`
    ("contact": the contact's zone, else the fallback zone; or an IANA name). Runs that
    wait for the window to open are spread over its first `spread`."""

    days: frozenset[int] = frozenset(range(7))
    start: time = time(9, 0)
    end: time = time(20, 0)
    tz: str = "contact"
    spread: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class FrequencyCap:
    """At most `count` messages on the channel per `per`, across all flows; a send over
    the cap waits until it is allowed (`then: defer`), never dropped silently."""

    count: int
    per: timedelta


@dataclass(frozen=True)
class FlowSettings:
    send_window: SendWindow | None = None
    frequency_caps: Mapping[str, FrequencyCap] = field(default_factory=dict)
    active_from: datetime | None = None
    active_until: datetime | None = None


# -- steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Write a send intent (a ledger row) on `channel`. `template` names the template
    (email, sms, notify); `params` holds the rest (webhook url/method/body, notify `to`)."""

    id: str
    next: str | None
    channel: Channel
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Wait for exactly one of: `duration`; the next `until` local time of day on `days`
    (0 = Monday); the date attribute `until_attribute` shifted by `offset`, at `at` local
    time (already past: go on at once)."""

    id: str
    next: str | None
    duration: timedelta | None = None
    until: time | None = None
    days: frozenset[int] = frozenset(range(7))
    until_attribute: str | None = None
    offset: timedelta = timedelta(0)
    at: time | None = None


@dataclass(frozen=True)
class WaitUntil:
    """Wait for `event` (an event match), or for the contact to open/click the message
    sent by this run at step `message`; go to `then` when it happens, to `else_` after
    `timeout` (None: wait for ever). Either target None ends the run."""

    id: str
    then: str | None
    else_: str | None
    event: EventMatch | None = None
    message: str | None = None
    engagement: Literal["opened", "clicked"] = "opened"
    timeout: timedelta | None = None


@dataclass(frozen=True)
class Branch:
    """`if`: go to `then` when `condition` holds for the contact, else to `else_`."""

    id: str
    condition: Condition
    then: str | None
    else_: str | None


@dataclass(frozen=True)
class Split:
    """Random cohorts: `arms` are (name, weight, first step); the choice is a stable hash
    of (run id, step id), recorded in the run's state."""

    id: str
    arms: tuple[tuple[str, int, str | None], ...]


@dataclass(frozen=True)
class UpdateContact:
    """Change the profile: set/unset custom attributes (or profile fields like
    `lifecycle_stage`), add/remove tags, add to/remove from lists."""

    id: str
    next: str | None
    set: Mapping[str, Any] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    add_to_lists: tuple[str, ...] = ()
    remove_from_lists: tuple[str, ...] = ()


@dataclass(frozen=True)
class Score:
    """Add `delta` (negative: subtract) to the contact's score."""

    id: str
    next: str | None
    delta: int


@dataclass(frozen=True)
class Exit:
    """End the run here (exited)."""

    id: str
    reason: str = ""


@dataclass(frozen=True)
class Goto:
    """Continue at step `target` (a loop needs a wait in it: validation refuses others)."""

    id: str
    target: str


Step: TypeAlias = Send | Wait | WaitUntil | Branch | Split | UpdateContact | Score | Exit | Goto


@dataclass(frozen=True)
class Flow:
    """One version of a flow, ready to run."""

    key: str
    name: str
    trigger: Trigger
    start: str | None
    steps: Mapping[str, Step]
    entry: Entry = field(default_factory=Entry)
    exit_when: tuple[ExitRule, ...] = ()
    goal: Goal | None = None
    settings: FlowSettings = field(default_factory=FlowSettings)
    description: str = ""
    version: int = 1

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]
