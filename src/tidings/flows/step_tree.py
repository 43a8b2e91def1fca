"""Steps are written as nested lists; the engine runs one flat map. `place` walks the
lists in order (a step, then its branches, then the step after it) and works out for each
step its id, where it goes next and where each of its branches starts.

Ids: a written `id` is a lower-case slug, unique in the flow. A step without one gets an
id from its position alone: `s3` for `steps[3]`, `s3.then.0` for `steps[3].then[0]`,
`s3.a.1` for the second step of split arm `a`. Positions are unique, and a written id in
that shape must be the one its own position gives (normalising writes them so), so the
two kinds never collide.

Where steps go: each list is a chain; its last step goes on with the step after the
step that holds the list (its parent), and the last top-level step ends the run (None).
A branch that is left out, or empty, goes on after its parent too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.conditions.values import Problems, at
from tidings.flows import step_models, written_parts

MAX_STEPS = 1000
MAX_DEPTH = 30
ACTIONS = tuple(step_models.STEPS)
_DERIVED = re.compile(written_parts.DERIVED_ID_PATTERN)
_KEY = re.compile(written_parts.KEY_PATTERN)


@dataclass
class Placed:
    """One written step at its place: `data` is its mapping (`{"exit": True}` for the word
    `exit`), `action` its action key (None when it has not exactly one), `next` the step
    after it, `branches` the first step of each branch (then, else, split arms)."""

    path: str
    id: str
    action: str | None
    data: Mapping[str, Any]
    next: str | None
    parent: str | None = None
    previous: str | None = None
    branches: dict[str, str | None] = field(default_factory=dict)


class _TooMany(Exception):
    pass


def place(steps: Any, problems: Problems) -> list[Placed]:
    """Every step of the tree `steps` (the flow's `steps` list), parents first."""
    if not isinstance(steps, list) or not steps:
        problems.add("steps", "must be a non-empty list of steps")
        return []
    walker = _Walker(problems)
    try:
        walker.walk(steps, "steps", "s", None, None, 0)
    except _TooMany:
        problems.add("steps", f"must have at most {MAX_STEPS} steps, counting nested ones")
    return walker.out


def step_data(item: Any) -> Any:
    """The step as a mapping: the word `exit` is `{"exit": True}`."""
    return {"exit": True} if item == "exit" else item


def branch_names(step: Mapping[str, Any]) -> list[str]:
    """The keys of `step` that hold step lists: then/else of an `if` or `wait_until`, the
    arms named in a `split`."""
    if "split" in step:
        arms = step["split"]
        return [a for a in arms if isinstance(a, str)] if isinstance(arms, Mapping) else []
    return ["then", "else"] if "if" in step or "wait_until" in step else []


def step_id(item: Any, derived: str) -> str:
    """The step's written id when it is a valid one, else `derived`."""
    written = item.get("id") if isinstance(item, Mapping) else None
    if written == derived or (_is_slug(written) and not _DERIVED.fullmatch(str(written))):
        return str(written)
    return derived


def _is_slug(value: Any) -> bool:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


class _Walker:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.out: list[Placed] = []
        self.seen: dict[str, str] = {}

    def walk(
        self,
        items: list[Any],
        path: str,
        prefix: str,
        after: str | None,
        parent: str | None,
        depth: int,
    ) -> None:
        """Place `items` (at `path`, derived ids `prefix` + index); the last goes on to
        `after`."""
        ids = [step_id(item, f"{prefix}{i}") for i, item in enumerate(items)]
        for i, item in enumerate(items):
            following = ids[i + 1] if i + 1 < len(ids) else after
            node = self._step(item, at(path, i), ids[i], f"{prefix}{i}", following)
            node.parent, node.previous = parent, ids[i - 1] if i else None
            self._branches(node, f"{prefix}{i}", depth)

    def _step(self, item: Any, path: str, sid: str, derived: str, following: str | None) -> Placed:
        if len(self.out) >= MAX_STEPS:
            raise _TooMany
        data = step_data(item)
        action = None
        if isinstance(data, Mapping):
            action = self._action(data, path)
        else:
            self.problems.add(path, "must be an object with one action, or the word exit")
            data = {}
        node = Placed(path, sid, action, data, following)
        self._check_id(data, derived, path)
        self.out.append(node)
        return node

    def _action(self, data: Mapping[str, Any], path: str) -> str | None:
        actions = [key for key in data if key in ACTIONS]
        others = [key for key in data if key not in ACTIONS and key != "id"]
        if len(actions) == 1:
            self._only_known_keys(data, actions[0], path)
            return actions[0]
        if len(actions) > 1:
            self.problems.add(
                path, f"has more than one action ({', '.join(actions)}): give each its own step"
            )
        elif len(others) == 1 and others[0] not in ("then", "else"):
            self.problems.add(at(path, str(others[0])), "unknown action")
        else:
            self.problems.add(path, f"must have exactly one action: {', '.join(ACTIONS)}")
        return None

    def _only_known_keys(self, data: Mapping[str, Any], action: str, path: str) -> None:
        allowed = written_parts.fields(step_models.STEPS[action])
        arms = branch_names(data) if action == "split" else []
        for key in data:
            if key in allowed or key in arms:
                continue
            if action == "split":
                declared = ", ".join(arms) or "none"
                self.problems.add(at(path, str(key)), f"is not an arm of this split ({declared})")
            else:
                self.problems.add(at(path, str(key)), "unknown key")

    def _check_id(self, data: Mapping[str, Any], derived: str, path: str) -> None:
        if "id" not in data:
            return
        written, where = data["id"], at(path, "id")
        if written == derived:
            return
        if isinstance(written, str) and _DERIVED.fullmatch(written):
            self.problems.add(
                where, f"is the id of another position ({derived} here): use a slug or leave it out"
            )
        elif not _is_slug(written):
            self.problems.add(where, written_parts.SLUG_RULE)
        elif written in self.seen:
            self.problems.add(where, f"is already the id of {self.seen[written]}")
        else:
            self.seen[written] = path

    def _branches(self, node: Placed, derived: str, depth: int) -> None:
        names = branch_names(node.data)
        if node.action == "if" and not {"then", "else"} & set(node.data):
            self.problems.add(node.path, "needs then, else or both")
        for name in names:
            items = node.data.get(name)
            where = at(node.path, name)
            if items is not None and not isinstance(items, list):
                self.problems.add(where, "must be a list of steps")
                items = None
            if not items:
                node.branches[name] = node.next
                continue
            prefix = f"{derived}.{name}."
            node.branches[name] = step_id(items[0], f"{prefix}0")
            if depth >= MAX_DEPTH:
                self.problems.add(where, f"nests steps more than {MAX_DEPTH} levels deep")
                continue
            self.walk(items, where, prefix, node.next, node.id, depth + 1)
