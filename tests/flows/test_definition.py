"""The flow format's models: the JSON Schema they publish, and problems they find named
by path in the format's own style."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from tidings import docgen
from tidings.conditions.values import Problems
from tidings.flows import definition, step_models, written_parts


def schema_def(name: str) -> dict[str, Any]:
    found: dict[str, Any] = definition.schema()["$defs"][name]
    return found


def test_the_schema_describes_the_whole_format() -> None:
    schema = definition.schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Tidings flow"
    assert schema["required"] == ["key", "name", "trigger", "steps"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "key", "name", "description", "trigger", "entry", "exit_when", "goal", "settings", "steps",
    }  # fmt: skip
    step_refs = [
        item.get("$ref", "").rpartition("/")[2]
        for item in schema["properties"]["steps"]["items"]["anyOf"]
    ]
    assert step_refs[:-1] == [model.__name__ for model in step_models.STEPS.values()]
    assert schema["properties"]["steps"]["items"]["anyOf"][-1] == {
        "const": "exit",
        "type": "string",
    }
    json.dumps(schema)  # plain JSON


@pytest.mark.parametrize("key", sorted(definition.TRIGGERS))
def test_every_trigger_form_is_in_the_schema(key: str) -> None:
    model = definition.TRIGGERS[key]
    assert key in schema_def(model.__name__)["properties"]
    assert schema_def(model.__name__)["description"]


@pytest.mark.parametrize("action", sorted(step_models.STEPS))
def test_every_step_is_in_the_schema(action: str) -> None:
    model = step_models.STEPS[action]
    found = schema_def(model.__name__)
    assert action in found["required"]
    assert "id" in found["properties"]
    assert found["description"]


def test_branches_and_split_arms_hold_steps() -> None:
    for name in ("IfStep", "WaitUntilStep"):
        properties = schema_def(name)["properties"]
        assert {"then", "else"} <= set(properties)
    split = schema_def("SplitStep")
    assert split["additionalProperties"]["type"] == "array"  # each arm's steps
    assert "if" in schema_def("IfStep")["required"]


def test_leaves_carry_their_own_schema() -> None:
    window = schema_def("SendWindow")["properties"]
    assert window["from"]["pattern"] == window["to"]["pattern"]
    assert "from_" not in window
    assert schema_def("Goal")["properties"]["within"]["pattern"] == "^[0-9]{1,7}[smhdw]$"
    condition = schema_def("Entry")["properties"]["filter"]
    assert "docs/conditions.md" in condition["description"]


def test_the_published_schema_is_current() -> None:
    committed = (docgen.REFERENCE / "flow-schema.json").read_text()
    assert json.loads(committed) == definition.schema()


def test_check_names_problems_by_path() -> None:
    problems = Problems()
    data = {"days": ["mon"], "from": "09:00", "colour": "red", "spread": "1h"}
    part = written_parts.check(definition.SendWindow, data, "settings.send_window", problems)
    assert [(f.field, f.message) for f in problems.fields] == [
        ("settings.send_window.colour", "unknown key")
    ]
    # The rest is still read, so its meaning can be checked too.
    assert part is not None and part.from_ == "09:00"

    problems = Problems()
    cap = {"email": True, "sms": 0, "per": "1d", "then": "drop"}
    assert written_parts.check(definition.FrequencyCap, cap, "cap", problems) is not None
    assert {f.field: f.message for f in problems.fields} == {
        "cap.email": "must be a whole number",
        "cap.sms": "must be at least 1",
        "cap.then": "must be 'defer'",
    }

    problems = Problems()
    assert written_parts.check(definition.Goal, ["x"], "goal", problems) is None
    assert [(f.field, f.message) for f in problems.fields] == [("goal", "must be an object")]

    problems = Problems()
    hook = {"url": "https://x.example", "headers": {"X-A": 1}}
    assert written_parts.check(step_models.Webhook, hook, "steps[2].webhook", problems)
    assert [(f.field, f.message) for f in problems.fields] == [
        ("steps[2].webhook.headers.X-A", "must be text")
    ]


def test_slug_and_plain() -> None:
    assert written_parts.slug("cart-reminder_2", "x") == "cart-reminder_2"
    for bad in ("Cart", "-cart", "cart\n", "a" * 101, 3):
        with pytest.raises(Exception, match="lower-case slug"):
            written_parts.slug(bad, "x")
    assert written_parts.plain(
        {"a": (date(2026, 1, 5), datetime(2026, 1, 5, 9, tzinfo=UTC)), 1: "x"}
    ) == {
        "a": ["2026-01-05", "2026-01-05T09:00:00+00:00"],
        "1": "x",
    }
