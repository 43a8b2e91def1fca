"""Compiling a condition to one SQLAlchemy Core boolean over `tables.contacts`, for
`SELECT id FROM contacts WHERE <it>` on SQLite and PostgreSQL alike.

Shapes the planners handle well: tags, lists and "performed at least once / never" are
correlated EXISTS / NOT EXISTS on indexed keys; other counts and `first` are one uncorrelated
`GROUP BY contact_id HAVING ...` subquery under `IN` (or `NOT IN` when zero events pass);
`last` is an EXISTS with an anti-join for "no later such event". Every user value is a
bound parameter; every relative window is computed from the `now` given, never the
database's clock. Every expression is two-valued (never NULL), so `not` is exact."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.sql.expression import FromClause

from tidings import errors
from tidings.conditions import dates, values
from tidings.conditions.jsonsql import JsonValue, affix
from tidings.conditions.nodes import (
    All,
    AnyOf,
    Attribute,
    Condition,
    EmailDomain,
    Event,
    ListMember,
    Not,
    Profile,
    Property,
    Random,
    Segment,
    Tag,
)
from tidings.conditions.values import Test
from tidings.db import tables

#: What a segment key resolves to: a boolean over `tables.contacts`, a SELECT of contact
#: ids (never NULL), or the ids themselves.
SegmentSql: TypeAlias = ColumnElement[bool] | Select[Any] | Collection[int]
SegmentResolver = Callable[[str], SegmentSql]

_AT_LEAST_ONCE = {("gte", 1), ("gt", 0), ("ne", 0)}
_NEVER = {("eq", 0), ("lt", 1), ("lte", 0)}


def compile(  # noqa: A001 - read as `conditions.sql.compile`
    condition: Condition,
    *,
    now: datetime,
    dialect: str,
    segments: SegmentResolver | None = None,
) -> ColumnElement[bool]:
    """`condition` as a WHERE clause over `tables.contacts` for `dialect` ("sqlite" or
    "postgresql"), with windows relative to `now`. `segments` resolves `{segment: KEY}`;
    without it such a rule is `InvalidInput` naming its path."""
    return _Compiler(now, dialect, segments).node(condition)


class _Compiler:
    def __init__(self, now: datetime, dialect: str, segments: SegmentResolver | None) -> None:
        self.now = now
        self.dialect = dialect
        self.pg = dialect == "postgresql"
        self.segments = segments

    def node(self, node: Condition) -> ColumnElement[bool]:
        if isinstance(node, All):
            return and_(*(self.node(child) for child in node.children))
        if isinstance(node, AnyOf):
            return or_(*(self.node(child) for child in node.children))
        if isinstance(node, Not):
            return not_(self.node(node.child))
        if isinstance(node, Profile):
            return and_(*(self.column(node.column, test) for test in node.tests))
        if isinstance(node, Attribute):
            json = JsonValue(self.dialect, tables.contacts.c.attributes, (node.name,))
            return and_(*(json.test(test, self.now) for test in node.tests))
        if isinstance(node, Event):
            return self.event(node)
        return self.membership(node)

    # -- profile ------------------------------------------------------------------------

    def column(self, name: str, test: Test) -> ColumnElement[bool]:
        """A test on a typed profile column; NULL is "missing" (only `exists: false`, `ne`
        and `not_in` hold for it)."""
        col = tables.contacts.c[name]
        op, x = test.op, test.value
        if op in ("ne", "not_in"):
            return not_(self.column(name, Test("eq" if op == "ne" else "in", x, test.path)))
        if op == "exists":
            return col.is_not(None) if x else col.is_(None)
        result = self._column_test(col, op, x)
        return and_(col.is_not(None), result) if col.nullable else result

    def _column_test(self, col: Any, op: str, x: Any) -> ColumnElement[bool]:
        if op == "eq":
            return col == x  # type: ignore[no-any-return]
        if op == "in":
            return col.in_(x)  # type: ignore[no-any-return]
        if op in ("gt", "gte", "lt", "lte"):
            text = col.collate("C") if self.pg and isinstance(x, str) else col  # code point order
            return values.COMPARATORS[op](text, x)  # type: ignore[no-any-return]
        if op == "contains":
            return (func.strpos(col, x) if self.pg else func.instr(col, x)) > 0
        if op in ("starts_with", "ends_with"):
            return affix(col, op, x, self.pg)
        if op == "anniversary":
            return self._month_day(col).in_(dates.anniversary_days(self.now, x))
        return and_(*dates.comparisons(op, col, x, self.now))

    def _month_day(self, col: Any) -> ColumnElement[str]:
        if self.pg:
            return func.to_char(func.timezone("UTC", col), "MM-DD")
        return func.strftime("%m-%d", col)

    # -- tags, lists, segments, random --------------------------------------------------

    def membership(self, node: Condition) -> ColumnElement[bool]:
        contact_id = tables.contacts.c.id
        if isinstance(node, Tag):
            t = tables.contact_tags
            return exists().where(t.c.contact_id == contact_id, t.c.tag == node.tag)
        if isinstance(node, ListMember):
            m, lst = tables.list_memberships, tables.lists
            return exists().where(
                m.c.contact_id == contact_id,
                m.c.list_id == lst.c.id,
                lst.c.key == node.key,
                m.c.status == node.status,
            )
        if isinstance(node, EmailDomain):
            email = tables.contacts.c.email
            return and_(email.is_not(None), affix(email, "ends_with", "@" + node.domain, self.pg))
        if isinstance(node, Random):
            return self.random(node)
        assert isinstance(node, Segment)  # noqa: S101 - the last kind of node
        return self.segment(node)

    def random(self, node: Random) -> ColumnElement[bool]:
        """`values.bucket` in SQL: the same integer arithmetic, below 2**63 throughout."""
        a, b, c = (bindparam(None, n, BigInteger()) for n in values.seed_numbers(node.seed))
        prime = bindparam(None, values.PRIME, BigInteger())
        h = ((tables.contacts.c.id % prime) * a + b) % prime
        bucket = ((h * h + c) % prime) % values.BUCKETS
        return bucket < node.threshold

    def segment(self, node: Segment) -> ColumnElement[bool]:
        if self.segments is None:
            raise errors.InvalidInput.field(
                node.path or "segment", "segments are not available here"
            )
        found = self.segments(node.key)
        if isinstance(found, ColumnElement):
            return found
        if isinstance(found, Select):
            return tables.contacts.c.id.in_(found)
        return tables.contacts.c.id.in_(sorted(found))

    # -- events -------------------------------------------------------------------------

    def event(self, node: Event) -> ColumnElement[bool]:
        if node.last is not None:
            return self._last(node, node.last)
        e = tables.events.alias()
        if node.first is None:
            counts = {(t.op, t.value) for t in node.count}
            if len(node.count) == 1 and counts <= _AT_LEAST_ONCE:
                return exists().where(e.c.contact_id == tables.contacts.c.id, *self.match(node, e))
            if len(node.count) == 1 and counts <= _NEVER:
                return ~exists().where(e.c.contact_id == tables.contacts.c.id, *self.match(node, e))
        per_contact = (
            select(e.c.contact_id)
            .where(e.c.contact_id.is_not(None), *self.match(node, e))
            .group_by(e.c.contact_id)
        )
        if node.first is not None:
            first = func.min(e.c.timestamp)
            test = dates.comparisons(node.first.op, first, node.first.value, self.now)
            return tables.contacts.c.id.in_(per_contact.having(and_(*test)))
        count = func.count()
        passes = and_(*(values.COMPARATORS[t.op](count, t.value) for t in node.count))
        if all(values.COMPARATORS[t.op](0, t.value) for t in node.count):
            # contacts without any such event pass too: select those that fail instead
            return tables.contacts.c.id.not_in(per_contact.having(not_(passes)))
        return tables.contacts.c.id.in_(per_contact.having(passes))

    def _last(self, node: Event, last: Property) -> ColumnElement[bool]:
        e, later = tables.events.alias(), tables.events.alias()
        newer = exists().where(
            later.c.contact_id == e.c.contact_id,
            *self.match(node, later),
            or_(
                later.c.timestamp > e.c.timestamp,
                and_(later.c.timestamp == e.c.timestamp, later.c.id > e.c.id),
            ),
        )
        json = JsonValue(self.dialect, e.c.properties, last.keys)
        return exists().where(
            e.c.contact_id == tables.contacts.c.id,
            *self.match(node, e),
            ~newer,
            *(json.test(test, self.now) for test in last.tests),
        )

    def match(self, node: Event, e: FromClause) -> list[ColumnElement[bool]]:
        """Which rows of `e` (an alias of events) the node looks at."""
        out = [e.c.name == node.name, e.c.timestamp <= self.now]
        if node.within is not None:
            out.append(e.c.timestamp >= self.now - node.within)
        if node.between is not None:
            out += [e.c.timestamp >= node.between[0], e.c.timestamp < node.between[1]]
        out += [self._property(e, prop) for prop in node.where]
        if node.where_any:
            out.append(or_(*(self._property(e, prop) for prop in node.where_any)))
        return out

    def _property(self, e: FromClause, prop: Property) -> ColumnElement[bool]:
        json = JsonValue(self.dialect, e.c.properties, prop.keys)
        return and_(*(json.test(test, self.now) for test in prop.tests))
