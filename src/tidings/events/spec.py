"""The Segment spec: what each call (identify, track, page, screen, group, alias, batch) may
carry, and how one call becomes one row of the event log.

The pydantic models document the payloads (they are the OpenAPI schemas of `/v1/*`); the
request path checks the parsed JSON with the plain functions below instead, which follow
the same rules at a fraction of the cost per event (see docs/benchmarks.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings import errors
from tidings.contacts import fields

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_ID_CHARS = 255

# -- payload models (documentation) -------------------------------------------------------


class _Call(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str | int | None = Field(None, description="Your id for the user (numbers too).")
    anonymousId: str | int | None = Field(
        None, description="A device or cookie id; needed when there is no `userId`."
    )
    messageId: str | None = Field(
        None, description="Unique id of this call; a repeated one is stored once."
    )
    timestamp: datetime | None = Field(
        None, description="When it happened; wins over `originalTimestamp`."
    )
    originalTimestamp: datetime | None = Field(
        None, description="When it happened by the client's clock (corrected with `sentAt`)."
    )
    sentAt: datetime | None = Field(None, description="When the client sent it.")
    context: dict[str, Any] = Field(default_factory=dict, description="Ip, library, page...")
    integrations: dict[str, Any] | None = Field(None, description="Accepted and ignored.")


class Identify(_Call):
    """Who the user is: traits (email, phone, name, custom ones) land on the contact."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class Track(_Call):
    """Something the user did."""

    type: Literal["track"] = "track"
    event: str = Field(description="The event name, e.g. `Order Completed`.")
    properties: dict[str, Any] = Field(default_factory=dict)


class Page(_Call):
    """A page view on a website."""

    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = Field(None, description="Stored as `properties.category`.")
    properties: dict[str, Any] = Field(default_factory=dict)


class Screen(_Call):
    """A screen view in a mobile app."""

    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = Field(None, description="Stored as `properties.category`.")
    properties: dict[str, Any] = Field(default_factory=dict)


class Group(_Call):
    """The user belongs to a group (company, team, account)."""

    type: Literal["group"] = "group"
    groupId: str | int = Field(description="Your id for the group.")
    traits: dict[str, Any] = Field(default_factory=dict)


class Alias(_Call):
    """`previousId` and `userId` are the same person (merged by the worker)."""

    type: Literal["alias"] = "alias"
    previousId: str | int = Field(description="The id the user had before.")


AnyCall = Annotated[Identify | Track | Page | Screen | Group | Alias, Field(discriminator="type")]


class Batch(BaseModel):
    """Many calls at once, stored all or nothing. `sentAt` and `context` apply to every call
    that has none of its own (the call's own context keys win)."""

    batch: list[AnyCall]
    sentAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] | None = None


class Accepted(BaseModel):
    """The answer to an accepted call, as Segment gives it."""

    success: bool = True


MODELS: dict[str, type[BaseModel]] = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
    "batch": Batch,
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with every `$ref` replaced by its definition, so it can sit
    in an OpenAPI operation on its own (the models are not recursive)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# -- the fast path: parsed JSON -> event-log row -------------------------------------------

Row = dict[str, Any]
Problems = list[errors.FieldError]


class Envelope:
    """What one request gives every call in it: when it arrived, the key that sent it, and
    (for a batch) the batch-level `sentAt` and `context`."""

    __slots__ = ("received_at", "source", "sent_at", "context")

    def __init__(
        self,
        received_at: datetime,
        source: str,
        sent_at: datetime | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.received_at = received_at
        self.source = source
        self.sent_at = sent_at
        self.context = context or None


def to_row(call: Any, kind: str, where: str, env: Envelope, problems: Problems) -> Row | None:
    """The event-log row for one call of type `kind`, or None after adding its problems
    (each named `where` + field, e.g. `batch[3].userId`) to `problems`."""
    if not isinstance(call, dict):
        problems.append(errors.FieldError(where.rstrip(".") or "body", "must be a JSON object"))
        return None
    before = len(problems)
    user_id = _id(call.get("userId"), where, "userId", problems)
    anonymous_id = _id(call.get("anonymousId"), where, "anonymousId", problems)
    if user_id is None and anonymous_id is None and len(problems) == before:
        problems.append(errors.FieldError(where + "userId", "userId or anonymousId is required"))
    name, properties = _BODIES[kind](call, where, problems)
    context = _object(call.get("context"), where, "context", problems)
    if env.context:
        context = {**env.context, **context}
    timestamp, sent_at = _times(call, where, env, problems)
    message_id = _id(call.get("messageId"), where, "messageId", problems) or str(uuid.uuid4())
    if len(problems) > before:
        return None
    return {
        "message_id": message_id,
        "type": kind,
        "name": name,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "properties": properties,
        "context": context,
        "timestamp": timestamp,
        "received_at": env.received_at,
        "sent_at": sent_at,
        "source": env.source,
    }


def parse_time(value: Any, where: str, problems: Problems) -> datetime | None:
    """An ISO 8601 date-time as aware UTC (no offset means UTC), or None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
            if when.tzinfo is None:
                return when.replace(tzinfo=UTC)
            return when.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    problems.append(errors.FieldError(where, "must be an ISO 8601 date-time"))
    return None


def event_time(
    received_at: datetime,
    timestamp: datetime | None,
    original: datetime | None,
    sent_at: datetime | None,
) -> datetime:
    """When it happened, by Segment's rules: an explicit `timestamp`; else the client's
    `originalTimestamp` moved by the client's clock skew (`receivedAt - sentAt`); else
    when it arrived."""
    if timestamp is not None:
        return timestamp
    if original is not None and sent_at is not None:
        return received_at - (sent_at - original)
    return received_at


def _times(
    call: dict[str, Any], where: str, env: Envelope, problems: Problems
) -> tuple[datetime, datetime | None]:
    timestamp = original = sent_at = None
    if (value := call.get("timestamp")) is not None:
        timestamp = parse_time(value, where + "timestamp", problems)
    if (value := call.get("originalTimestamp")) is not None:
        original = parse_time(value, where + "originalTimestamp", problems)
    if (value := call.get("sentAt")) is not None:
        sent_at = parse_time(value, where + "sentAt", problems)
    sent_at = sent_at or env.sent_at
    try:
        return event_time(env.received_at, timestamp, original, sent_at), sent_at
    except OverflowError:
        problems.append(errors.FieldError(where + "originalTimestamp", "is out of range"))
        return env.received_at, sent_at


def _id(value: Any, where: str, key: str, problems: Problems) -> str | None:
    if value.__class__ is str and 0 < len(value) <= MAX_ID_CHARS:  # the usual case, first
        return value
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        problems.append(errors.FieldError(where + key, "must be a string or a number"))
        return None
    if len(text) > MAX_ID_CHARS:
        problems.append(errors.FieldError(where + key, f"longer than {MAX_ID_CHARS} characters"))
        return None
    return text


def _required_id(call: dict[str, Any], key: str, where: str, problems: Problems) -> str | None:
    if call.get(key) in (None, ""):
        problems.append(errors.FieldError(where + key, "is required"))
        return None
    return _id(call[key], where, key, problems)


def _object(value: Any, where: str, key: str, problems: Problems) -> dict[str, Any]:
    if value.__class__ is dict:
        return value
    if value is None:
        return {}
    problems.append(errors.FieldError(where + key, "must be a JSON object"))
    return {}


def _name(value: Any, where: str, key: str, problems: Problems, required: bool) -> str | None:
    if value.__class__ is str and 0 < len(value) <= MAX_ID_CHARS:
        return value
    if value is None or value == "":
        if required:
            problems.append(errors.FieldError(where + key, "is required"))
        return None
    if not isinstance(value, str):
        problems.append(errors.FieldError(where + key, "must be a string"))
        return None
    problems.append(errors.FieldError(where + key, f"longer than {MAX_ID_CHARS} characters"))
    return None


# Each body reader returns (name, properties) for its call type.
Body = tuple[str | None, dict[str, Any]]


def _track(call: dict[str, Any], where: str, problems: Problems) -> Body:
    name = _name(call.get("event"), where, "event", problems, required=True)
    return name, _object(call.get("properties"), where, "properties", problems)


def _page(call: dict[str, Any], where: str, problems: Problems) -> Body:
    name = _name(call.get("name"), where, "name", problems, required=False)
    properties = _object(call.get("properties"), where, "properties", problems)
    category = _name(call.get("category"), where, "category", problems, required=False)
    if category is not None:
        properties["category"] = category
    return name, properties


def _identify(call: dict[str, Any], where: str, problems: Problems) -> Body:
    traits = _object(call.get("traits"), where, "traits", problems)
    if traits:
        try:
            fields.from_traits(traits, where=where + "traits.")  # stored as sent; checked now
        except errors.InvalidInput as exc:
            problems.extend(exc.fields)
    return None, traits


def _group(call: dict[str, Any], where: str, problems: Problems) -> Body:
    group_id = _required_id(call, "groupId", where, problems)
    traits = _object(call.get("traits"), where, "traits", problems)
    return None, {"groupId": group_id, "traits": traits}


def _alias(call: dict[str, Any], where: str, problems: Problems) -> Body:
    previous_id = _required_id(call, "previousId", where, problems)
    if call.get("userId") in (None, "") and call.get("anonymousId") not in (None, ""):
        problems.append(errors.FieldError(where + "userId", "is required for alias"))
    return None, {"previousId": previous_id}


_BODIES: dict[str, Callable[[dict[str, Any], str, Problems], Body]] = {
    "identify": _identify,
    "track": _track,
    "page": _page,
    "screen": _page,
    "group": _group,
    "alias": _alias,
}
