"""Checks on the steps as a whole, once each is read: references to other steps
(`goto`, the message a `wait_until` awaits) name existing ones of the right kind; every
step can be reached; and no loop can run for ever (each `goto` cycle passes a step that
really waits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tidings.conditions.values import Problems, at
from tidings.flows import graph
from tidings.flows.step_tree import Placed

SENDS = ("send_email", "send_sms")


def check(placed: list[Placed], steps: Mapping[str, graph.Step] | None, problems: Problems) -> None:
    """Record every problem with how the steps fit together. `steps` (by id) is None when
    some step could not be read: then only references are checked."""
    by_id = {node.id: node for node in placed}
    for node in placed:
        for path, target, awaited in references(node):
            if target not in by_id:
                problems.add(path, f"no step has the id {target!r}")
            elif awaited and by_id[target].action not in SENDS:
                problems.add(path, "must be the id of a send_email or send_sms step")
    if steps is None or not placed:
        return
    reached = reachable(steps, [placed[0].id])
    _unreached(placed, steps, reached, problems)
    _endless_loops(placed, steps, problems)
    _awaited_before(placed, steps, by_id, problems)


def references(node: Placed) -> Iterator[tuple[str, str, bool]]:
    """(path, step id, whether it names an awaited message) for each step `node` names."""
    if node.action == "goto" and isinstance(node.data["goto"], str):
        yield at(node.path, "goto"), node.data["goto"], False
    body: Any = node.data.get("wait_until") if node.action == "wait_until" else None
    if isinstance(body, Mapping):
        for key in ("opened", "clicked", "message"):
            if isinstance(body.get(key), str):
                yield at(at(node.path, "wait_until"), key), body[key], True


def successors(step: graph.Step) -> list[str]:
    """The steps `step` may go to."""
    if isinstance(step, graph.Exit):
        return []
    if isinstance(step, graph.Goto):
        return [step.target]
    if isinstance(step, graph.Split):
        targets = [target for _, _, target in step.arms]
    elif isinstance(step, graph.Branch | graph.WaitUntil):
        targets = [step.then, step.else_]
    else:
        targets = [step.next]
    return [target for target in targets if target is not None]


def reachable(
    steps: Mapping[str, graph.Step],
    starts: list[str],
    through: Callable[[graph.Step], bool] = lambda step: True,
) -> set[str]:
    """The ids reachable from `starts` (included), going on only from steps `through`."""
    seen: set[str] = set()
    todo = [start for start in starts if start in steps]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if through(steps[current]):
            todo += [n for n in successors(steps[current]) if n in steps and n not in seen]
    return seen


def _unreached(
    placed: list[Placed], steps: Mapping[str, graph.Step], reached: set[str], problems: Problems
) -> None:
    """Name the first unreached step of each run of them (the ones after it, and those
    nested in it, are unreached for the same reason)."""
    for node in placed:
        if node.id in reached or node.parent not in (None, *reached):
            continue
        if node.previous is not None and node.previous not in reached:
            continue
        before = steps.get(node.previous) if node.previous else None
        if isinstance(before, graph.Exit):
            why = "the step before it ends the run (exit)"
        elif isinstance(before, graph.Goto):
            why = "the step before it jumps elsewhere (goto)"
        else:
            why = "every way to it ends the run or jumps elsewhere first"
        problems.add(node.path, f"is never reached: {why}")


def waits(step: graph.Step) -> bool:
    """Whether a run really stops at `step` (a wait until a date attribute already past
    goes on at once, so it does not count)."""
    if isinstance(step, graph.WaitUntil):
        return True
    return isinstance(step, graph.Wait) and step.until_attribute is None


def _endless_loops(
    placed: list[Placed], steps: Mapping[str, graph.Step], problems: Problems
) -> None:
    for node in placed:
        step = steps[node.id]
        if not isinstance(step, graph.Goto) or step.target not in steps:
            continue
        if waits(steps[step.target]):
            continue
        if node.id in reachable(steps, [step.target], through=lambda s: not waits(s)):
            problems.add(
                at(node.path, "goto"),
                f"loops back to {step.target} without passing a wait or wait_until: "
                "the run would never stop",
            )


def _awaited_before(
    placed: list[Placed],
    steps: Mapping[str, graph.Step],
    by_id: Mapping[str, Placed],
    problems: Problems,
) -> None:
    for node in placed:
        for path, target, awaited in references(node):
            if not awaited or target not in by_id or by_id[target].action not in SENDS:
                continue
            if node.id not in reachable(steps, successors(steps[target])):
                problems.add(path, "must be a send step that comes before this one")
