"""The steps of the written flow format as Pydantic models: each action's body (checked
against its model by `step_actions`), and each kind of step with its id and branches —
these only describe steps for the JSON Schema, since `step_tree` dispatches steps by hand
on their action key (it names problems better than a union of models would)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import ConfigDict, Field

from tidings.flows.written_parts import (
    DERIVED_ID_PATTERN,
    KEY_PATTERN,
    Condition,
    Days,
    Duration,
    Key,
    Name,
    Part,
    SignedDuration,
    StepId,
    TimeOfDay,
    Where,
    leaf,
)

# -- action bodies ----------------------------------------------------------------------


class SendTemplate(Part):
    """Send template `template`."""

    template: Key


class Webhook(Part):
    """Call `url` (http or https) with `method`, `headers` and a JSON `body`."""

    url: Annotated[Any, leaf("An http(s) URL.", type="string", format="uri")]
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    headers: dict[str, str] | None = None
    body: Any = None


class Notify(Part):
    """Tell someone on the team: `to` an email address, a phone number (+E.164) or a
    Slack webhook URL, with template `template` and/or the plain `text`."""

    to: Annotated[Any, leaf("An email address, +phone number or https URL.", type="string")]
    template: Key = None
    text: str | None = None
    via: Literal["email", "sms", "slack"] | None = None


class WaitFor(Part):
    """Wait `duration`."""

    duration: Duration


class WaitUntilTime(Part):
    """Wait until the next `until` local time on one of `days`."""

    until: TimeOfDay
    days: Days = "mon-sun"


class WaitUntilDate(Part):
    """Wait until the date in attribute `until_attribute`, shifted by `offset`, at `at`
    local time (a date already past: go on at once)."""

    until_attribute: Name
    offset: SignedDuration = 0
    at: TimeOfDay = None


WAITS: dict[str, type[Part]] = {
    "duration": WaitFor,
    "until": WaitUntilTime,
    "until_attribute": WaitUntilDate,
}


class Awaiting(Part):
    """What every wait_until form may have: a timeout."""

    timeout: Annotated[
        Duration, Field(description="How long to wait at most (for ever when left out).")
    ] = None


class WaitForEvent(Awaiting):
    """Wait for event `event` (passing `where`; with `match_key`, for the same entry key).
    `message` with "Email Opened"/"Email Clicked" is the same as `opened`/`clicked`."""

    event: Name
    where: Where = None
    match_key: bool = False
    message: StepId = None


class WaitForOpen(Awaiting):
    """Wait until the message sent at step `opened` is opened."""

    opened: StepId


class WaitForClick(Awaiting):
    """Wait until a link in the message sent at step `clicked` is clicked."""

    clicked: StepId


WAIT_UNTILS: dict[str, type[Awaiting]] = {
    "event": WaitForEvent,
    "opened": WaitForOpen,
    "clicked": WaitForClick,
}


class MoveToList(Part):
    """Remove from list `from`, add to list `to`."""

    from_: Key = Field(alias="from")
    to: Key


class UpdateContact(Part):
    """Change the profile: `set`/`unset` attributes, tags, lists."""

    set: dict[str, Any] | None = None
    unset: list[Name] | None = None
    add_tags: list[Name] | None = None
    remove_tags: list[Name] | None = None
    add_to_list: Key | list[Key] = None
    remove_from_list: Key | list[Key] = None
    move_to_list: MoveToList | None = None


# -- steps (described here; `step_tree` and `step_actions` read them) ---------------------


class StepBase(Part):
    """What every step may have: its id."""

    id: Annotated[
        Any,
        leaf(
            "The step's stable id, a lower-case slug; derived from its position when "
            "left out (s3, s3.then.0: written back as such by normalising).",
            type="string",
            pattern=f"{KEY_PATTERN}|{DERIVED_ID_PATTERN}",
        ),
    ] = None


class SendEmailStep(StepBase):
    """Send an email."""

    send_email: SendTemplate


class SendSmsStep(StepBase):
    """Send a text message."""

    send_sms: SendTemplate


class WebhookStep(StepBase):
    """Call a URL (a send intent on the webhook channel)."""

    webhook: Webhook


class NotifyStep(StepBase):
    """Tell someone on the team."""

    notify: Notify


class WaitStep(StepBase):
    """Wait a duration (`wait: 1h`), until a time of day, or until a date attribute."""

    wait: Duration | WaitFor | WaitUntilTime | WaitUntilDate


Branch = Annotated[
    list["Step"] | None, Field(description="The steps for this branch; left out: go on after it.")
]


class WaitUntilStep(StepBase):
    """Go to `then` when it happens, to `else` on timeout."""

    wait_until: WaitForEvent | WaitForOpen | WaitForClick
    then: Branch = None
    else_: Branch = Field(None, alias="else")


class IfStep(StepBase):
    """Go to `then` when the condition holds, else to `else` (at least one of them)."""

    if_: Condition = Field(alias="if")
    then: Branch = None
    else_: Branch = Field(None, alias="else")


class SplitStep(StepBase):
    """Random cohorts by weight; each arm's steps under the arm's name."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[Step]]

    split: Annotated[
        dict[str, int], Field(description="Arm names (slugs) and their weights (whole numbers).")
    ]


class UpdateContactStep(StepBase):
    """Change the contact's profile, tags and lists."""

    update_contact: UpdateContact


class ScoreStep(StepBase):
    """Add points to (or take them from) the contact's score."""

    score: Annotated[
        Any,
        leaf(
            'Points to add (negative: subtract), not 0: 10, -5 or "+10".',
            anyOf=[{"type": "integer"}, {"type": "string", "pattern": "^[+-]?[0-9]+$"}],
        ),
    ]


class ExitStep(StepBase):
    """End the run here (also written as the word `exit`)."""

    exit: Annotated[
        Any, leaf("true, or the reason (text).", anyOf=[{"const": True}, {"type": "string"}])
    ]


class GotoStep(StepBase):
    """Go on at another step (a loop must pass a wait or wait_until)."""

    goto: StepId


#: Each step model by its action key.
STEPS: dict[str, type[StepBase]] = {
    "send_email": SendEmailStep,
    "send_sms": SendSmsStep,
    "webhook": WebhookStep,
    "notify": NotifyStep,
    "wait": WaitStep,
    "wait_until": WaitUntilStep,
    "if": IfStep,
    "split": SplitStep,
    "update_contact": UpdateContactStep,
    "score": ScoreStep,
    "exit": ExitStep,
    "goto": GotoStep,
}
Step: TypeAlias = Union[  # noqa: UP007 - a runtime union of models for the schema
    SendEmailStep,
    SendSmsStep,
    WebhookStep,
    NotifyStep,
    WaitStep,
    WaitUntilStep,
    IfStep,
    SplitStep,
    UpdateContactStep,
    ScoreStep,
    ExitStep,
    GotoStep,
    Literal["exit"],
]


for _model in (WaitUntilStep, IfStep, SplitStep):
    _model.model_rebuild()
