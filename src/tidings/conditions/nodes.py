"""The typed nodes of a parsed condition (`model.parse` builds them). Each keeps its
`path` (for errors and explanations) and the `rule` it was read from (not compared)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from tidings.conditions.values import Test


@dataclass(frozen=True)
class All:
    """Every child holds."""

    children: tuple[Condition, ...]
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AnyOf:
    """At least one child holds."""

    children: tuple[Condition, ...]
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: Condition
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Profile:
    """Tests on a typed profile column (`country`, `score`, `created_at`...)."""

    column: str
    tests: tuple[Test, ...]
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Attribute:
    """Tests on a custom attribute: an untyped JSON value (see `values`)."""

    name: str
    tests: tuple[Test, ...]
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EmailDomain:
    """The email address is at exactly this (lower-case) domain."""

    domain: str
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Tag:
    """The contact has this tag."""

    tag: str
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ListMember:
    """The contact is on the list `key` with `status`."""

    key: str
    status: str
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Property:
    """Tests on one event property; `keys` reach into nested objects (`cart.total`)."""

    keys: tuple[str, ...]
    tests: tuple[Test, ...]
    path: str


@dataclass(frozen=True)
class Event:
    """Events named `name` at or before `now`, matching every `where` and (when given) at
    least one of `where_any`, inside `within` (a span back from now) or `between`
    (inclusive start, exclusive end). Then exactly one of: their `count` passes every
    count test; the `first` one's timestamp passes `first`; the `last` one's properties
    pass `last`."""

    name: str
    path: str
    where: tuple[Property, ...] = ()
    where_any: tuple[Property, ...] = ()
    within: timedelta | None = None
    between: tuple[datetime, datetime] | None = None
    count: tuple[Test, ...] = ()
    first: Test | None = None
    last: Property | None = None
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Segment:
    """Membership of another segment, resolved by the caller."""

    key: str
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Random:
    """A stable random bucket: `values.bucket(contact id, seed) < threshold` (of 10,000)."""

    percent: float
    threshold: int
    seed: str
    path: str
    rule: Any = field(default=None, compare=False, repr=False)


Condition: TypeAlias = (
    All | AnyOf | Not | Profile | Attribute | EmailDomain | Tag | ListMember | Event | Segment
) | Random


def walk(node: Condition) -> Iterator[Condition]:
    """`node` and every node under it, parents first."""
    yield node
    if isinstance(node, All | AnyOf):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)
