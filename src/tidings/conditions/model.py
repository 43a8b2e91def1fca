"""The condition language: segments, flow `if` branches, entry filters, `exit_when` and
`wait_until` all write it (docs/conditions.md is the reference).

`parse` turns plain JSON/YAML data into a tree of frozen nodes (`nodes`), checking
everything at once: unknown keys and operators, value types (typed where the attribute is
a profile column), empty groups, windows longer than 10 years. Every problem is reported
with its path (`all[2].event.where.total.gte`) and nothing is half accepted. Shorthands
(`score`, `list`, `opened`, `engagement`...) become the same few nodes, so the SQL compiler
and the Python evaluator each handle one small vocabulary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tidings.conditions import behaviour, values
from tidings.conditions.nodes import (
    All,
    AnyOf,
    Attribute,
    Condition,
    EmailDomain,
    ListMember,
    Not,
    Profile,
    Random,
    Segment,
    Tag,
)
from tidings.conditions.values import Problems, at

#: Profile columns by value type; any other attribute name is a custom (JSON) attribute.
PROFILE_COLUMNS: dict[str, str] = {
    "email": "text",
    "phone": "text",
    "first_name": "text",
    "last_name": "text",
    "locale": "text",
    "timezone": "text",
    "country": "text",
    "lifecycle_stage": "text",
    "external_id": "text",
    "score": "number",
    "created_at": "date",
    "updated_at": "date",
}
LIST_STATUSES = ("pending", "subscribed", "unsubscribed")
MAX_CHILDREN = 1000


def parse(data: Any, path: str = "") -> Condition:
    """The condition written as `data` (dicts, lists and scalars, as JSON or YAML give), or
    `InvalidInput` listing every problem by path. `path` prefixes every path (a flow passes
    `steps[3].if`)."""
    problems = Problems()
    node = _node(data, path, problems)
    problems.raise_any()
    assert node is not None  # noqa: S101 - no problems means every part parsed
    return node


def _node(data: Any, path: str, problems: Problems) -> Condition | None:
    if not isinstance(data, Mapping):
        problems.add(path, f"must be an object with one of: {', '.join(_PARSERS)}")
        return None
    kinds = [key for key in data if key in _PARSERS]
    if len(kinds) != 1:
        unknown = [key for key in data if key not in _PARSERS]
        if not kinds and len(unknown) == 1:
            problems.add(at(path, str(unknown[0])), "unknown condition")
        else:
            problems.add(path, f"must have exactly one of: {', '.join(_PARSERS)}")
        return None
    kind = kinds[0]
    return _PARSERS[kind](data, path, at(path, kind), problems)


def _group(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    kind = "all" if "all" in data else "any"
    items = data[kind]
    ok = problems.only(data, {kind}, kpath)
    if not isinstance(items, list) or not items:
        problems.add(kpath, "must be a non-empty list of conditions")
        return None
    if len(items) > MAX_CHILDREN:
        problems.add(kpath, f"must have at most {MAX_CHILDREN} conditions")
        return None
    children = [_node(item, at(kpath, i), problems) for i, item in enumerate(items)]
    parsed = tuple(child for child in children if child is not None)
    if not ok or len(parsed) != len(children):
        return None
    return All(parsed, path, data) if kind == "all" else AnyOf(parsed, path, data)


def _not(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    ok = problems.only(data, {"not"}, kpath)
    child = _node(data["not"], kpath, problems)
    return Not(child, path, data) if ok and child is not None else None


def _attribute(
    data: Mapping[str, Any], path: str, kpath: str, problems: Problems
) -> Condition | None:
    name = problems.check(values.name, data["attribute"], kpath)
    ops = {key: value for key, value in data.items() if key != "attribute"}
    if not ops:
        problems.add(kpath, "needs an operator, like eq, gte, exists or within_last")
    if name is None or not ops:
        return None
    custom = name.startswith("attributes.") or name not in PROFILE_COLUMNS
    if custom:
        name = name.removeprefix("attributes.").strip()
        if not name:
            problems.add(kpath, "needs a name after 'attributes.'")
            return None
    kind = "json" if custom else PROFILE_COLUMNS[name]
    upper = name == "country" and not custom  # stored upper case
    tests = values.tests(ops, kind, kpath, problems.check, upper=upper)
    if tests is None:
        return None
    return Attribute(name, tests, path, data) if custom else Profile(name, tests, path, data)


def _text(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    kind = kpath.rpartition(".")[2]
    ok = problems.only(data, {kind}, kpath)
    text = problems.check(values.name, data[kind], kpath)
    if not ok or text is None:
        return None
    if kind == "tag":
        return Tag(text, path, data)
    if kind == "segment":
        return Segment(text, path, data)
    domain = text.lower().removeprefix("@")
    if "@" in domain or not domain:
        problems.add(kpath, "must be a domain, like example.com")
        return None
    return EmailDomain(domain, path, data)


def _score(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    ok = problems.only(data, {"score"}, kpath)
    ops = data["score"]
    if not isinstance(ops, Mapping):
        ops = {"eq": ops}
    if not ops:
        problems.add(kpath, "needs an operator, like gte")
        return None
    tests = values.tests(ops, "number", kpath, problems.check)
    return Profile("score", tests, path, data) if ok and tests else None


def _list(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    ok = problems.only(data, {"list"}, kpath)
    spec = data["list"]
    if not isinstance(spec, Mapping):
        spec = {"key": spec}
    ok = problems.only(spec, {"key", "status"}, kpath) and ok
    key = problems.check(values.name, spec.get("key"), at(kpath, "key"))
    status = spec.get("status", "subscribed")
    if status not in LIST_STATUSES:
        problems.add(at(kpath, "status"), f"must be one of: {', '.join(LIST_STATUSES)}")
        return None
    return ListMember(key, status, path, data) if ok and key else None


def _random(data: Mapping[str, Any], path: str, kpath: str, problems: Problems) -> Condition | None:
    ok = problems.only(data, {"random"}, kpath)
    spec = data["random"]
    if not isinstance(spec, Mapping):
        problems.add(kpath, "must be an object like {percent: 10, seed: spring-test}")
        return None
    ok = problems.only(spec, {"percent", "seed"}, kpath) and ok
    percent: Any = spec.get("percent")
    seed = spec.get("seed", "")
    if not values.is_number(percent) or not 0 <= percent <= 100:
        problems.add(at(kpath, "percent"), "must be a number from 0 to 100")
        return None
    if not isinstance(seed, str) or len(seed) > values.MAX_NAME:
        problems.add(at(kpath, "seed"), f"must be text of at most {values.MAX_NAME} characters")
        return None
    threshold = round(percent * values.BUCKETS / 100)
    return Random(float(percent), threshold, seed, path, data) if ok else None


_Parser = Callable[[Mapping[str, Any], str, str, Problems], Condition | None]
_PARSERS: dict[str, _Parser] = {
    "all": _group,
    "any": _group,
    "not": _not,
    "attribute": _attribute,
    "email_domain": _text,
    "tag": _text,
    "score": _score,
    "list": _list,
    "event": behaviour.event,
    "opened": behaviour.engagement,
    "clicked": behaviour.engagement,
    "engagement": behaviour.engagement,
    "segment": _text,
    "random": _random,
}
