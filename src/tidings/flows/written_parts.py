"""The pieces the written flow format is made of: the leaves (keys, names, durations,
times, conditions...) as JSON Schema, the `Part` base of its models, and `check`, which
validates data against a model and names each problem by path in the format's own style
(`steps[3].send_email.template`, not Pydantic's location tuples).

Leaves with a meaning of their own are typed `Any` with their JSON Schema attached: the
builders (`written_rules`, `written_timing`, `step_actions`) read them and explain what
is wrong better than a pattern would."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails

from tidings import errors
from tidings.conditions.values import Problems, at

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
#: Ids derived from a step's position (`s3`, `s3.then.0`, `s3.a.1`; see `step_tree`).
DERIVED_ID_PATTERN = r"^s[0-9]+(\.[a-z0-9][a-z0-9_-]*\.[0-9]+)*$"
_KEY = re.compile(KEY_PATTERN)
SLUG_RULE = "must be a lower-case slug: a-z, 0-9, '-' and '_', at most 100 characters"


def slug(value: Any, field: str) -> str:
    """A key (flow, template, segment, list, form, step id, split arm): a lower-case slug."""
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise errors.InvalidInput.field(field, SLUG_RULE)
    return value


def plain(value: Any) -> Any:
    """`value` as JSON data: YAML's dates and date-times become ISO text, tuples lists,
    keys text."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    return value


def leaf(description: str, **schema: Any) -> Any:
    """The JSON Schema of a leaf read by hand (`Annotated[Any, leaf(...)]`)."""
    return WithJsonSchema({**schema, "description": description})


DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DURATION_PATTERN = "^[0-9]{1,7}[smhdw]$"
Key = Annotated[Any, leaf("A key: a lower-case slug.", type="string", pattern=KEY_PATTERN)]
Name = Annotated[Any, leaf("A name of 1 to 255 characters.", type="string", maxLength=255)]
Duration = Annotated[
    Any,
    leaf(
        "A duration: a whole number and s, m, h, d or w (90m, 12h, 30d, 2w).",
        type="string",
        pattern=DURATION_PATTERN,
    ),
]
SignedDuration = Annotated[
    Any,
    leaf(
        "A duration that may be negative (-7d, 3d), or 0.",
        anyOf=[{"type": "string", "pattern": "^[+-]?[0-9]{1,7}[smhdw]$"}, {"const": 0}],
    ),
]
TimeOfDay = Annotated[
    Any,
    leaf(
        'A local time of day, "HH:MM" (quote it in YAML).',
        type="string",
        pattern="^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
    ),
]
Instant = Annotated[Any, leaf("An ISO-8601 date or date-time.", type="string", format="date-time")]
Days = Annotated[
    Any,
    leaf(
        "Weekdays: a range like mon-fri, one day, or a list like [mon, wed].",
        anyOf=[{"type": "string"}, {"type": "array", "items": {"enum": DAY_NAMES}, "minItems": 1}],
    ),
]
Condition = Annotated[
    Any, leaf("A condition in the condition language (docs/conditions.md).", type="object")
]
Where = Annotated[
    Any,
    leaf(
        "Event property filters, as `where` in the condition language "
        "(docs/conditions.md): {currency: EUR, total: {gte: 100}}.",
        type="object",
    ),
]
StepId = Annotated[Any, leaf("The id of a step of this flow.", type="string")]
Reentry = Literal["once", "after_exit", "always"]


class Part(BaseModel):
    """A part of the format: unknown keys refused, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


def fields(model: type[BaseModel]) -> dict[str, bool]:
    """The keys `model` takes (by alias) and whether each is required."""
    return {f.alias or name: f.is_required() for name, f in model.model_fields.items()}


# -- checking a part --------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


def check(model: type[Model], data: Any, path: str, problems: Problems) -> Model | None:
    """`data` validated as `model`; with problems, each is recorded under `path` and the
    rest is validated without the keys at fault (None when that fails too)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            where = path
            for part in error["loc"]:
                where = at(where, part)
            problems.add(where, _message(error))
        bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
    # Read the rest too, so that the meaning of its leaves is checked as well.
    if not isinstance(data, Mapping) or not bad:
        return None
    try:
        return model.model_validate({key: value for key, value in data.items() if key not in bad})
    except ValidationError:
        return None


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "literal_error":
        return f"must be {ctx['expected'].replace('True', 'true')}"
    if kind in ("greater_than_equal", "less_than_equal"):
        word, bound = ("least", ctx["ge"]) if kind == "greater_than_equal" else ("most", ctx["le"])
        return f"must be at {word} {bound}"
    return str(error["msg"])


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}
