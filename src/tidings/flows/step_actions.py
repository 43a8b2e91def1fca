"""Each step's action as written (`send_email: {template: welcome}`, `wait: 1h`, `if:`...)
read into its `graph` step, with the ids `step_tree` worked out. Problems are named by
path (`steps[3].then[0].send_email.template`); references to other steps are checked
afterwards, in `step_checks`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tidings import errors
from tidings.conditions import durations, model, values
from tidings.conditions.values import Problems, at
from tidings.flows import graph, step_models, written_parts, written_rules, written_timing
from tidings.flows.step_tree import Placed

KnownTemplates = Callable[[str, str], bool]
MAX_POINTS = 1_000_000
MAX_WEIGHT = 1_000_000
MAX_ARMS = 100
MAX_URL = 2048
MAX_REASON = 255
#: Attributes a flow may not `set`: Tidings keeps them (the score has its own step).
KEPT = {
    "score": "use a score step",
    "created_at": "is kept by Tidings",
    "updated_at": "is kept by Tidings",
}
_POINTS = re.compile(r"[+-]?[0-9]{1,7}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+[1-9][0-9]{6,15}")
ENGAGEMENT = {"Email Opened": "opened", "Email Clicked": "clicked"}


@dataclass(frozen=True)
class Context:
    """What reading a step needs besides the step: where problems go, whether runs have
    an entry key (for `match_key`), and which templates exist (None: do not check)."""

    problems: Problems
    keyed: bool = False
    known_templates: KnownTemplates | None = None


def build(node: Placed, context: Context) -> graph.Step | None:
    """The graph step for `node`, or None once its problems are recorded."""
    if node.action is None:
        return None
    return _BUILDERS[node.action](node, at(node.path, node.action), context)


def _template(channel: str, value: Any, path: str, context: Context) -> str | None:
    key: str | None = context.problems.check(written_parts.slug, value, path)
    known = context.known_templates
    if key is not None and known is not None and not known(channel, key):
        context.problems.add(path, f"there is no {channel} template {key!r}")
        return None
    return key


# -- sending ----------------------------------------------------------------------------


def _send(node: Placed, path: str, context: Context) -> graph.Step | None:
    channel: graph.Channel = "email" if node.action == "send_email" else "sms"
    body = node.data[f"send_{channel}"]
    part = written_parts.check(step_models.SendTemplate, body, path, context.problems)
    template = part and _template(channel, part.template, at(path, "template"), context)
    return graph.Send(node.id, node.next, channel, template) if template else None


def _webhook(node: Placed, path: str, context: Context) -> graph.Step | None:
    part = written_parts.check(step_models.Webhook, node.data["webhook"], path, context.problems)
    if part is None:
        return None
    url = context.problems.check(web_url, part.url, at(path, "url"), ("http", "https"))
    params: dict[str, Any] = {"url": url, "method": part.method}
    if part.headers:
        params["headers"] = dict(part.headers)
    if part.body is not None:
        params["body"] = written_parts.plain(part.body)
    return graph.Send(node.id, node.next, "webhook", None, params) if url else None


def web_url(value: Any, field: str, schemes: tuple[str, ...] = ("https",)) -> str:
    """An absolute URL with one of `schemes` and a host."""
    parts = urlsplit(value) if isinstance(value, str) and len(value) <= MAX_URL else None
    if parts is None or parts.scheme not in schemes or not parts.hostname:
        raise errors.InvalidInput.field(field, f"must be an {' or '.join(schemes)} URL")
    return str(value)


def _notify(node: Placed, path: str, context: Context) -> graph.Step | None:
    part = written_parts.check(step_models.Notify, node.data["notify"], path, context.problems)
    if part is None:
        return None
    to = context.problems.check(recipient, part.to, part.via, at(path, "to"))
    template = None
    if part.template is not None:
        template = _template("notify", part.template, at(path, "template"), context)
    if part.template is None and not part.text:
        context.problems.add(path, "needs a template or a text")
    if (
        to is None
        or (part.template is not None and template is None)
        or not (template or part.text)
    ):
        return None
    params = {"to": to[0], "via": to[1], **({"text": part.text} if part.text else {})}
    return graph.Send(node.id, node.next, "notify", template, params)


def recipient(value: Any, via: str | None, field: str) -> tuple[str, str]:
    """Who a notification goes to, and how: an email address (email), a +phone number
    (sms) or a Slack incoming-webhook URL (slack)."""
    text = value.strip() if isinstance(value, str) else ""
    if via is None:
        fits = [v for v in ("email", "sms", "slack") if _fits(text, v)]
        if not fits:
            raise errors.InvalidInput.field(
                field, "must be an email address, a phone number like +4930123456 or an https URL"
            )
        return text, fits[0]
    if not _fits(text, via):
        what = {"email": "an email address", "sms": "a phone number like +4930123456"}
        raise errors.InvalidInput.field(
            field, f"must be {what.get(via, 'an https URL')} (via {via})"
        )
    return text, via


def _fits(text: str, via: str) -> bool:
    if via == "slack":
        parts = urlsplit(text)
        return parts.scheme == "https" and bool(parts.hostname) and len(text) <= MAX_URL
    return (_EMAIL if via == "email" else _PHONE).fullmatch(text) is not None


# -- waiting ----------------------------------------------------------------------------


def _wait(node: Placed, path: str, context: Context) -> graph.Step | None:
    body, problems = node.data["wait"], context.problems
    if not isinstance(body, Mapping):
        span = problems.check(durations.parse, body, path)
        return graph.Wait(node.id, node.next, duration=span) if span else None
    found = written_rules.one_of(body, step_models.WAITS, path, problems)
    if found is None:
        return None
    kind, part = found
    if isinstance(part, step_models.WaitFor):
        span = problems.check(durations.parse, part.duration, at(path, kind))
        return graph.Wait(node.id, node.next, duration=span) if span else None
    if isinstance(part, step_models.WaitUntilTime):
        until = problems.check(written_timing.time_of_day, part.until, at(path, kind))
        days = problems.check(written_timing.weekdays, part.days, at(path, "days"))
        ok = until is not None and days is not None
        return graph.Wait(node.id, node.next, until=until, days=days) if ok else None
    return _wait_for_date(node, part, path, problems)


def _wait_for_date(node: Placed, part: Any, path: str, problems: Problems) -> graph.Step | None:
    name = written_rules.date_attribute(part.until_attribute, at(path, "until_attribute"), problems)
    shift = problems.check(written_timing.offset, part.offset, at(path, "offset"))
    when = None
    if part.at is not None:
        when = problems.check(written_timing.time_of_day, part.at, at(path, "at"))
    if name is None or shift is None or (part.at is not None and when is None):
        return None
    return graph.Wait(node.id, node.next, until_attribute=name, offset=shift, at=when)


def _wait_until(node: Placed, path: str, context: Context) -> graph.Step | None:
    problems = context.problems
    found = written_rules.one_of(node.data["wait_until"], step_models.WAIT_UNTILS, path, problems)
    if found is None:
        return None
    kind, part = found
    timeout = None
    if part.timeout is not None:
        timeout = problems.check(durations.parse, part.timeout, at(path, "timeout"))
        if timeout is None:
            return None
    then, else_ = node.branches.get("then"), node.branches.get("else")
    if kind in ENGAGEMENT.values() or getattr(part, "message", None) is not None:
        message, engagement = _message(kind, part, path, problems)
        if message is None:
            return None
        return graph.WaitUntil(node.id, then, else_, None, message, engagement, timeout)
    match = written_rules.event_match(part, context.keyed, path, problems)
    return graph.WaitUntil(node.id, then, else_, match, timeout=timeout) if match else None


def _message(kind: str, part: Any, path: str, problems: Problems) -> tuple[str | None, Any]:
    """The send step whose message is awaited, and whether it is to be opened or clicked:
    `{opened: STEP}`, `{clicked: STEP}` or `{event: "Email Opened", message: STEP}`."""
    if kind != "event":
        return problems.check(_step_ref, getattr(part, kind), at(path, kind)), kind
    engagement = ENGAGEMENT.get(part.event)
    if engagement is None:
        problems.add(
            at(path, "message"), "goes only with the events Email Opened and Email Clicked"
        )
    for key in ("where", "match_key"):
        if getattr(part, key):
            problems.add(at(path, key), "cannot be used with message")
            engagement = None
    message = problems.check(_step_ref, part.message, at(path, "message"))
    return (message if engagement else None), engagement


def _step_ref(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput.field(field, "must be the id of a step of this flow")
    return value


# -- deciding ---------------------------------------------------------------------------


def _if(node: Placed, path: str, context: Context) -> graph.Step | None:
    condition = context.problems.check(model.parse, node.data["if"], path)
    if condition is None:
        return None
    return graph.Branch(node.id, condition, node.branches.get("then"), node.branches.get("else"))


def _split(node: Placed, path: str, context: Context) -> graph.Step | None:
    weights, problems = node.data["split"], context.problems
    if not isinstance(weights, Mapping) or not weights or len(weights) > MAX_ARMS:
        problems.add(
            path, f"must name 1 to {MAX_ARMS} arms and their weights, like {{a: 50, b: 50}}"
        )
        return None
    found = [
        _arm(name, weight, node, at(path, str(name)), problems) for name, weight in weights.items()
    ]
    arms = tuple(arm for arm in found if arm is not None)
    if len(arms) != len(found):
        return None
    if not any(weight for _, weight, _ in arms):
        problems.add(path, "needs an arm with a weight above 0")
        return None
    return graph.Split(node.id, arms)


def _arm(
    name: Any, weight: Any, node: Placed, path: str, problems: Problems
) -> tuple[str, int, str | None] | None:
    arm = problems.check(written_parts.slug, name, path)
    if arm in ("id", "split"):
        problems.add(path, "is a step key: choose another arm name")
        return None
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        problems.add(path, "must be a whole number, 0 or more (0 sends nobody down this arm)")
        return None
    return (arm, weight, node.branches.get(arm)) if arm else None


# -- changing the contact, leaving, jumping ---------------------------------------------------


def _update_contact(node: Placed, path: str, context: Context) -> graph.Step | None:
    problems = context.problems
    before = len(problems.fields)
    part = written_parts.check(
        step_models.UpdateContact, node.data["update_contact"], path, problems
    )
    if part is None:
        return None
    add_lists = _keys(part.add_to_list, at(path, "add_to_list"), problems)
    remove_lists = _keys(part.remove_from_list, at(path, "remove_from_list"), problems)
    if part.move_to_list is not None:
        move = at(path, "move_to_list")
        remove_lists += _keys(part.move_to_list.from_, at(move, "from"), problems)
        add_lists += _keys(part.move_to_list.to, at(move, "to"), problems)
    step = graph.UpdateContact(
        node.id,
        node.next,
        _attributes(part.set or {}, at(path, "set"), problems),
        _names(part.unset, at(path, "unset"), problems),
        _names(part.add_tags, at(path, "add_tags"), problems),
        _names(part.remove_tags, at(path, "remove_tags"), problems),
        add_lists,
        remove_lists,
    )
    if step == graph.UpdateContact(node.id, node.next) and len(problems.fields) == before:
        problems.add(
            path,
            "needs a change: set, unset, add_tags, remove_tags, add_to_list, "
            "remove_from_list or move_to_list",
        )
    return step


def _attributes(values_: Mapping[str, Any], path: str, problems: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values_.items():
        name = problems.check(values.name, key, at(path, str(key)))
        if name in KEPT:
            problems.add(at(path, str(key)), f"cannot be set here: {KEPT[name]}")
        elif name is not None:
            out[name] = written_parts.plain(value)
    return out


def _names(items: list[Any] | None, path: str, problems: Problems) -> tuple[str, ...]:
    names = [problems.check(values.name, item, at(path, i)) for i, item in enumerate(items or ())]
    return tuple(name for name in names if name is not None)


def _keys(value: Any, path: str, problems: Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        key = problems.check(written_parts.slug, value, path)
        return (key,) if key else ()
    if not value:
        problems.add(path, "must name at least one list")
    keys = [problems.check(written_parts.slug, item, at(path, i)) for i, item in enumerate(value)]
    return tuple(key for key in keys if key is not None)


def _score(node: Placed, path: str, context: Context) -> graph.Step | None:
    value = node.data["score"]
    points = None
    if isinstance(value, int) and not isinstance(value, bool):
        points = value
    elif isinstance(value, str) and _POINTS.fullmatch(value.strip()):
        points = int(value)
    if not points or abs(points) > MAX_POINTS:
        context.problems.add(path, "must be a whole number of points other than 0, like +10 or -5")
        return None
    return graph.Score(node.id, node.next, points)


def _exit(node: Placed, path: str, context: Context) -> graph.Step | None:
    value = node.data["exit"]
    if value is True or value is None:
        return graph.Exit(node.id)
    if not isinstance(value, str) or len(value) > MAX_REASON:
        context.problems.add(path, f"must be true or a reason of at most {MAX_REASON} characters")
        return None
    return graph.Exit(node.id, value.strip())


def _goto(node: Placed, path: str, context: Context) -> graph.Step | None:
    target = context.problems.check(_step_ref, node.data["goto"], path)
    return graph.Goto(node.id, target) if target else None


_BUILDERS: dict[str, Callable[[Placed, str, Context], graph.Step | None]] = {
    "send_email": _send,
    "send_sms": _send,
    "webhook": _webhook,
    "notify": _notify,
    "wait": _wait,
    "wait_until": _wait_until,
    "if": _if,
    "split": _split,
    "update_contact": _update_contact,
    "score": _score,
    "exit": _exit,
    "goto": _goto,
}
