"""From the written flow format (YAML or JSON; docs/flow-format.md) to a `graph.Flow` the
engine runs, checking everything at once: `load` names every problem by its path
(`steps[3].then[0].send_email.template`) and accepts nothing half right. `normalise` gives
the definition as it is stored, every step id written out; `read_path` reads flow files.

The parts are read by `written_rules` (trigger, entry, exit_when, goal), `written_timing`
(settings), `step_tree` (nesting, ids, where each step goes), `step_actions` (each step)
and `step_checks` (references, reachability, endless loops)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tidings import errors
from tidings.conditions.values import Problems
from tidings.flows import (
    definition,
    graph,
    step_actions,
    step_checks,
    step_tree,
    written_parts,
    written_rules,
    written_timing,
)
from tidings.flows.step_actions import KnownTemplates

SUFFIXES = (".yaml", ".yml", ".json")
MAX_NAME = 255
MAX_DESCRIPTION = 10_000


def load(data: Any, *, known_templates: KnownTemplates | None = None) -> graph.Flow:
    """The flow `data` (parsed YAML or JSON) defines, or `InvalidInput` listing every
    problem by path. `known_templates(channel, key)` says whether a template exists
    (channel email, sms or notify); None does not check."""
    problems = Problems()
    flow = _flow(data, known_templates, problems)
    problems.raise_any()
    if flow is None:  # pragma: no cover - a flow is None only with problems
        raise errors.InvalidInput()
    return flow


def normalise(data: Any) -> dict[str, Any]:
    """The definition as stored: plain JSON data (YAML dates become ISO text) with every
    step's `id` written out (`exit` as `{id, exit: true}`). Checked like `load`;
    `load(normalise(d)) == load(d)`, and normalising again changes nothing."""
    load(data)
    out: dict[str, Any] = written_parts.plain(data)
    out["steps"] = _with_ids(out["steps"], "s")
    return out


def _with_ids(items: list[Any], prefix: str) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(items):
        step = dict(step_tree.step_data(item))
        step = {"id": step_tree.step_id(step, f"{prefix}{i}"), **step}
        for name in step_tree.branch_names(step):
            if isinstance(step.get(name), list):
                step[name] = _with_ids(step[name], f"{prefix}{i}.{name}.")
        out.append(step)
    return out


def _flow(data: Any, known: KnownTemplates | None, problems: Problems) -> graph.Flow | None:
    if not isinstance(data, Mapping):
        problems.add("flow", "must be an object with key, name, trigger and steps")
        return None
    fields = written_parts.fields(definition.FlowDefinition)
    problems.only(data, set(fields), "")
    for missing in [field for field, required in fields.items() if required and field not in data]:
        problems.add(missing, "is required")
    key = problems.check(written_parts.slug, data.get("key"), "key") if "key" in data else None
    name = problems.check(_text, data.get("name"), "name", MAX_NAME) if "name" in data else None
    description = problems.check(_text, data.get("description", ""), "description", MAX_DESCRIPTION)
    trigger = (
        written_rules.trigger(data["trigger"], "trigger", problems) if "trigger" in data else None
    )
    entry = written_rules.entry(data.get("entry"), trigger, "entry", problems)
    keyed = entry.key is not None
    exits = written_rules.exits(data.get("exit_when"), keyed, "exit_when", problems)
    goal = written_rules.goal(data.get("goal"), keyed, "goal", problems)
    settings = graph.FlowSettings()
    if data.get("settings") is not None:
        settings = written_timing.settings(data["settings"], "settings", problems)
    context = step_actions.Context(problems, keyed, known)
    start, steps = _steps(data.get("steps"), context) if "steps" in data else (None, {})
    if problems.fields or key is None or name is None or trigger is None:
        return None
    return graph.Flow(
        key, name, trigger, start, steps, entry, exits, goal, settings, description or ""
    )


def _text(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str) or len(value) > longest:
        raise errors.InvalidInput.field(field, f"must be text of at most {longest} characters")
    if longest == MAX_NAME and not value.strip():
        raise errors.InvalidInput.field(field, "must not be empty")
    return value.strip()


def _steps(data: Any, context: step_actions.Context) -> tuple[str | None, dict[str, graph.Step]]:
    """The first step's id and every step by id, parents before their branches."""
    placed = step_tree.place(data, context.problems)
    steps = {}
    for node in placed:
        step = step_actions.build(node, context)
        if step is not None:
            steps[node.id] = step
    complete = len(steps) == len(placed)
    step_checks.check(placed, steps if complete else None, context.problems)
    return (placed[0].id if placed else None), steps


# -- files ------------------------------------------------------------------------------


def read_path(path: Path) -> list[tuple[str, Any]]:
    """(file name, parsed content) for a .yaml, .yml or .json file, or for each such file
    in a directory (sorted by name, not recursive). `InvalidInput` names a file that
    cannot be read or parsed (and the line, for YAML and JSON)."""
    if path.is_dir():
        files = sorted(
            child
            for child in path.iterdir()
            if child.suffix.lower() in SUFFIXES
            and child.is_file()
            and not child.name.startswith(".")
        )
        return [(str(file), read_file(file)) for file in files]
    if not path.exists():
        raise errors.InvalidInput.field(str(path), "does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise errors.InvalidInput.field(str(path), "must be a .yaml, .yml or .json file")
    return [(str(path), read_file(path))]


def read_file(path: Path) -> Any:
    """One flow file, parsed (YAML with `safe_load`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise errors.InvalidInput.field(str(path), f"cannot be read: {reason}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise errors.InvalidInput.field(str(path), f"{where}: {exc.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise errors.InvalidInput.field(str(path), f"{where}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise errors.InvalidInput.field(str(path), f"is not valid YAML: {exc}") from None
