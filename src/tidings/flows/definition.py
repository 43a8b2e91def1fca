"""The written flow format (DESIGN.md §4; docs/flow-format.md is the reference) as Pydantic
models: the one statement of its structure. `schema()` publishes them as JSON Schema
(`GET /v1/flows/schema`, docs/reference/flow-schema.json); the builders check each part
against its model (`written_parts.check`). The steps' models are in `step_models`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import Field

from tidings.flows import step_models
from tidings.flows.written_parts import (
    DURATION_PATTERN,
    Condition,
    Days,
    Duration,
    Instant,
    Key,
    Name,
    Part,
    Reentry,
    SignedDuration,
    TimeOfDay,
    Where,
    leaf,
)

# -- triggers ---------------------------------------------------------------------------


class EventTrigger(Part):
    """Start when an event named `event` arrives whose properties pass `where`."""

    event: Name
    where: Where = None


class SegmentEntered(Part):
    """Start when the contact enters segment `segment_entered`."""

    segment_entered: Key


class SegmentLeft(Part):
    """Start when the contact leaves segment `segment_left`."""

    segment_left: Key


class ListJoined(Part):
    """Start when the contact becomes subscribed to list `list_joined`."""

    list_joined: Key


class FormSubmitted(Part):
    """Start when the contact submits form `form_submitted`."""

    form_submitted: Key


class DateAttribute(Part):
    """Start each year on the date in attribute `date_attribute` (a custom attribute or
    `created_at`), shifted by `offset` whole days, at `at` in the contact's zone."""

    date_attribute: Name
    offset: SignedDuration = 0
    at: TimeOfDay = "09:00"


class Inactive(Part):
    """Start when the contact has had none of `events` for `inactive` (whole days)."""

    inactive: Duration
    events: list[Name] | None = None


class ScoreReached(Part):
    """Start when the contact's score reaches `score_reached`."""

    score_reached: int


class Api(Part):
    """Start only through `POST /v1/flows/{key}/enrol` (also written as the word `api`)."""

    api: Literal[True]


class ScheduleSpec(Part):
    """Every `every` from `starting` (with its zone), for each member of `segment`
    (everyone when left out)."""

    every: Duration
    starting: Annotated[
        Any, leaf("An ISO-8601 date-time with a zone.", type="string", format="date-time")
    ]
    segment: Key = None


class Schedule(Part):
    """Start runs on a schedule."""

    schedule: ScheduleSpec


#: The trigger forms by their key.
TRIGGERS: dict[str, type[Part]] = {
    "event": EventTrigger,
    "segment_entered": SegmentEntered,
    "segment_left": SegmentLeft,
    "list_joined": ListJoined,
    "form_submitted": FormSubmitted,
    "date_attribute": DateAttribute,
    "inactive": Inactive,
    "score_reached": ScoreReached,
    "api": Api,
    "schedule": Schedule,
}
Trigger: TypeAlias = Union[  # noqa: UP007 - a runtime union of models for the schema
    EventTrigger,
    SegmentEntered,
    SegmentLeft,
    ListJoined,
    FormSubmitted,
    DateAttribute,
    Inactive,
    ScoreReached,
    Api,
    Schedule,
    Literal["api"],
]


# -- entry, leaving, converting ----------------------------------------------------------


class Entry(Part):
    """Who may start a run and how often: `reentry` once (default), after_exit (again once
    the last run ended) or always; `key` (`properties.cart_id`) allows one run per distinct
    value of that path in the trigger event; `filter` must hold at entry."""

    reentry: Reentry = "once"
    key: Annotated[
        Any, leaf("A path into the trigger event: properties.X or context.X.", type="string")
    ] = None
    filter: Condition = None


class ExitOnEvent(Part):
    """Leave when event `event` arrives (passing `where`; with `match_key`, for the same
    entry key)."""

    event: Name
    where: Where = None
    match_key: bool = False
    reason: str = ""


class ExitOnUnsubscribe(Part):
    """Leave when the contact unsubscribes."""

    unsubscribed: Literal[True]
    reason: str = ""


class ExitOnSegmentLeft(Part):
    """Leave when the contact leaves segment `segment_left`."""

    segment_left: Key
    reason: str = ""


class ExitOnCondition(Part):
    """Leave when `condition` holds at a step."""

    condition: Condition
    reason: str = ""


EXITS: dict[str, type[Part]] = {
    "event": ExitOnEvent,
    "unsubscribed": ExitOnUnsubscribe,
    "segment_left": ExitOnSegmentLeft,
    "condition": ExitOnCondition,
}
ExitRule: TypeAlias = ExitOnEvent | ExitOnUnsubscribe | ExitOnSegmentLeft | ExitOnCondition


class Goal(Part):
    """The conversion: `event` within `within` of entry. Property `revenue` (a dotted path
    in its properties) is credited; with `exit` (default) the run ends there."""

    event: Name
    where: Where = None
    match_key: bool = False
    within: Duration
    revenue: Annotated[Any, leaf("A dotted path into the event's properties.", type="string")] = (
        "revenue"
    )
    exit: bool = True


# -- settings ---------------------------------------------------------------------------


class SendWindow(Part):
    """Send only on `days` between `from` and `to` in `tz` (`contact`: the contact's zone;
    or an IANA zone name); runs waiting for the window are spread over its first `spread`."""

    days: Days = "mon-sun"
    from_: TimeOfDay = Field("09:00", alias="from")
    to: TimeOfDay = "20:00"
    tz: Annotated[Any, leaf("contact, or an IANA zone name.", type="string")] = "contact"
    spread: Annotated[
        Any,
        leaf(
            "A duration, or 0.",
            anyOf=[{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
        ),
    ] = "1h"


class FrequencyCap(Part):
    """At most `email` emails / `sms` text messages per `per`, across all flows; a send
    over the cap waits (`then: defer`)."""

    email: Annotated[int, Field(ge=1, le=1000)] | None = None
    sms: Annotated[int, Field(ge=1, le=1000)] | None = None
    per: Duration
    then: Literal["defer"] = "defer"


class Active(Part):
    """The flow starts runs only from `from` until `until`."""

    from_: Instant = Field(None, alias="from")
    until: Instant = None


class Settings(Part):
    """How the flow sends."""

    send_window: SendWindow | None = None
    frequency_cap: FrequencyCap | None = None
    active: Active | None = None


class FlowDefinition(Part):
    """A flow: what starts it, who may enter, when runs leave or convert, how it sends,
    and its steps."""

    key: Key
    name: Name
    description: str = ""
    trigger: Trigger
    entry: Entry | None = None
    exit_when: list[ExitRule] | None = None
    goal: Goal | None = None
    settings: Settings | None = None
    steps: Annotated[list[step_models.Step], Field(min_length=1, max_length=1000)]


FlowDefinition.model_rebuild()


def schema() -> dict[str, Any]:
    """The JSON Schema of the written flow format (served at `GET /v1/flows/schema`)."""
    out = FlowDefinition.model_json_schema(by_alias=True)
    out["title"] = "Tidings flow"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **out}
