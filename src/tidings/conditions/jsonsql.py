"""SQL for tests on one JSON value (a custom attribute or an event property), written so
SQLite and PostgreSQL give exactly what `evaluate` gives in Python.

The rules (docs/conditions.md, "Values"): JSON null and a missing key are the same,
"missing"; numbers compare numerically (1 == 1.0), strings by code point, and a test
never matches a value of another type (`true` is not `1`; `"5"` is not `5`). Every
expression here is two-valued (never SQL NULL), so `not` and `ne` stay exact negations.

SQLite reads types with `json_type` (booleans come back from `json_extract` as 0/1, so
they are told apart by type only); PostgreSQL with `jsonb_typeof`, comparing numbers as
JSONB (exact numeric) and text under the "C" collation (code point order)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from tidings.conditions import dates, values
from tidings.conditions.values import Test

_SQLITE_KINDS = {
    "string": ("text",),
    "number": ("integer", "real"),
    "true": ("true",),
    "false": ("false",),
    "array": ("array",),
    "null": ("null",),
}
_COMPARE = ("eq", "gt", "gte", "lt", "lte")


class JsonValue:
    """`doc` at `keys` (nested object keys), as SQL for one dialect."""

    def __init__(self, dialect: str, doc: ColumnElement[Any], keys: tuple[str, ...]) -> None:
        self.pg = dialect == "postgresql"
        if self.pg:
            parent: ColumnElement[Any] = type_coerce(doc, JSONB)
            for key in keys[:-1]:
                parent = parent[key]
            self.value = parent[keys[-1]]
            self.text: ColumnElement[Any] = self.value.astext
            self.kind = func.coalesce(func.jsonb_typeof(self.value), "null")
        else:
            self._doc = doc
            self._path = bindparam(None, "$" + "".join(f'."{key}"' for key in keys), String())
            self.value = func.json_extract(doc, self._path)
            self.text = type_coerce(self.value, String())
            self.kind = func.coalesce(func.json_type(doc, self._path), "null")

    def test(self, test: Test, now: datetime) -> ColumnElement[bool]:
        """SQL that is true exactly when `evaluate.json_test` is."""
        op, x = test.op, test.value
        if op in ("ne", "not_in"):
            return not_(self.test(Test("eq" if op == "ne" else "in", x, test.path), now))
        if op == "exists":
            return self.kind != "null" if x else self.kind == "null"
        if op in _COMPARE:
            return self._compare(op, x)
        if op == "in":
            return or_(*(self._compare("eq", item) for item in x))
        if op == "contains":
            has = self._has_element(x)
            if isinstance(x, str):
                return or_(and_(self.is_("string"), self._instr(x)), has)
            return has
        if op in ("starts_with", "ends_with"):
            return and_(self.is_("string"), self._affix(op, x))
        return and_(self.is_("string"), self._date_like(), self._date(op, x, now))

    def is_(self, kind: str) -> ColumnElement[bool]:
        """The value is of JSON type `kind` (string, number, true, false, array, null)."""
        if not self.pg:
            names = _SQLITE_KINDS[kind]
            return self.kind == names[0] if len(names) == 1 else self.kind.in_(names)
        if kind in ("true", "false"):
            return and_(self.kind == "boolean", self.value == _jsonb(kind == "true"))
        return self.kind == kind

    def _compare(self, op: str, x: Any) -> ColumnElement[bool]:
        compare = values.COMPARATORS[op]
        if isinstance(x, bool):  # only eq takes booleans
            return self.is_("true" if x else "false")
        if isinstance(x, str):
            text = self.text.collate("C") if self.pg and op != "eq" else self.text
            return and_(self.is_("string"), compare(text, x))
        compared = _jsonb(x) if self.pg else x
        result: ColumnElement[bool] = compare(self.value, compared)
        return and_(self.is_("number"), result)

    def _has_element(self, x: Any) -> ColumnElement[bool]:
        """The value is an array with an element equal to `x` (same type)."""
        if self.pg:
            return and_(self.is_("array"), self.value.op("@>")(_jsonb([x])))
        items = func.json_each(self._doc, self._path).table_valued("type", "atom")
        if isinstance(x, bool):
            match = items.c.type == ("true" if x else "false")
        elif isinstance(x, str):
            match = and_(items.c.type == "text", items.c.atom == x)
        else:
            match = and_(items.c.type.in_(_SQLITE_KINDS["number"]), items.c.atom == x)
        return and_(self.is_("array"), exists(select(literal(1)).select_from(items).where(match)))

    def _instr(self, x: str) -> ColumnElement[bool]:
        position = func.strpos(self.text, x) if self.pg else func.instr(self.text, x)
        return position > 0

    def _affix(self, op: str, x: str) -> ColumnElement[bool]:
        return affix(self.text, op, x, self.pg)

    def _date_like(self) -> ColumnElement[bool]:
        if self.pg:
            return self.text.op("~")(dates.DATE_REGEX)
        return self.text.op("GLOB")(dates.DATE_GLOB)

    def _date(self, op: str, x: Any, now: datetime) -> ColumnElement[bool]:
        if op == "anniversary":
            return func.substr(self.text, 6, 5).in_(dates.anniversary_days(now, x))
        key: ColumnElement[Any] = func.replace(
            func.substr(type_coerce(self.text, String()).concat(dates.MIDNIGHT), 1, 19), " ", "T"
        )
        if self.pg:
            key = key.collate("C")
        return and_(*dates.comparisons(op, key, x, now, dates.instant_key))


def affix(text: ColumnElement[Any], op: str, x: str, pg: bool) -> ColumnElement[bool]:
    """`text` starts or ends with `x` (by characters, on both engines)."""
    if op == "starts_with":
        return func.substr(text, 1, len(x)) == x
    if pg:
        return func.right(text, len(x)) == x
    return func.substr(text, -len(x)) == x


def _jsonb(value: Any) -> ColumnElement[Any]:
    return bindparam(None, value, type_=JSONB)
