"""Segments that refer to other segments (`{segment: KEY}`): which they refer to, the
order to build them in (dependencies first), and the cycles that are refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import Connection, select

from tidings import errors
from tidings.conditions import model
from tidings.conditions.nodes import Condition, Segment, walk
from tidings.conditions.values import at
from tidings.db import tables

#: Each segment key and the (key, path) of every segment its rule refers to.
Graph = Mapping[str, Sequence[tuple[str, str]]]


def references(condition: Condition) -> list[tuple[str, str]]:
    """The segment keys `condition` refers to, each with the path of its `segment` field."""
    return [(n.key, at(n.path, "segment")) for n in walk(condition) if isinstance(n, Segment)]


def load(conn: Connection) -> dict[str, list[tuple[str, str]]]:
    """Every stored segment's key and the segments its rule refers to."""
    s = tables.segments
    rows = conn.execute(select(s.c.key, s.c.rule)).all()
    return {r.key: references(model.parse(r.rule, "rule")) for r in rows}


def check(key: str, refs: Sequence[tuple[str, str]], graph: Graph) -> None:
    """Refuse (`InvalidInput` at the reference's path) a rule for segment `key` that refers
    to an unknown segment, or to one that leads back to `key`."""
    for ref, path in refs:
        if ref != key and ref not in graph:
            raise errors.InvalidInput.field(path, f"there is no segment {ref!r}")
        loop = _path_back(ref, key, graph, [key])
        if loop is not None:
            chain = " -> ".join(loop)
            raise errors.InvalidInput.field(path, f"refers back to this segment: {chain}")


def _path_back(start: str, target: str, graph: Graph, trail: list[str]) -> list[str] | None:
    """The chain from `start` back to `target` through the graph, if any (depth first)."""
    if start == target:
        return [*trail, start]
    if start in trail:
        return None  # an older cycle that does not pass through target
    for ref, _ in graph.get(start, ()):
        found = _path_back(ref, target, graph, [*trail, start])
        if found is not None:
            return found
    return None


def order(keys: Iterable[str], graph: Graph) -> list[str]:
    """`keys` and everything they depend on, each once, dependencies before dependents."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for ref, _ in graph.get(key, ()):
            visit(ref)
        out.append(key)

    for key in keys:
        visit(key)
    return out


def affected(key: str, graph: Graph) -> list[str]:
    """`key` and every segment that refers to it, directly or through others."""
    out = [key]
    for user in dependents(key, graph):
        out += [k for k in affected(user, graph) if k not in out]
    return out


def dependents(key: str, graph: Graph) -> list[str]:
    """The segments whose rules refer to `key` directly."""
    return sorted(k for k, refs in graph.items() if any(ref == key for ref, _ in refs))
