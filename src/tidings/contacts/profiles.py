"""Contact profiles: create, read, change, delete and search, always as one JSON shape.

Input is checked with `contacts.fields` (the same rules as ingest and import) before
anything is written, and every problem is reported at once, naming its field. A contact is
rendered with its tags, list statuses and anonymous ids, fetched for a whole page at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tidings import errors
from tidings.clock import Clock
from tidings.contacts import consent, fields, lists
from tidings.db import tables

T = TypeVar("T")
MAX_TAG = 100
_UNIQUE = ("email", "external_id")
_CREATE_KEYS = frozenset({*fields.PROFILE_FIELDS, "attributes", "tags", "lists", "score"})
_PATCH_KEYS = _CREATE_KEYS | {"add_tags", "remove_tags"}


class Problems:
    """Collects field errors from several checks so one response names them all."""

    def __init__(self) -> None:
        self.fields: list[errors.FieldError] = []

    def check(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except errors.InvalidInput as exc:
            self.fields.extend(exc.fields or [errors.FieldError("body", exc.message)])
            return None

    def raise_any(self) -> None:
        if self.fields:
            summary = "; ".join(f"{p.field}: {p.message}" for p in self.fields)
            raise errors.InvalidInput(summary, fields=self.fields)


# -- checking input ---------------------------------------------------------------------


def normalise_tags(tags: Any, where: str = "tags") -> list[str]:
    """Stripped, de-duplicated, sorted tags of 1 to 100 characters."""
    if not isinstance(tags, list | tuple):
        raise errors.InvalidInput.field(where, "must be a list of strings")
    out: set[str] = set()
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not 0 < len(tag.strip()) <= MAX_TAG:
            raise errors.InvalidInput.field(f"{where}[{i}]", f"must be 1 to {MAX_TAG} characters")
        out.add(tag.strip())
    return sorted(out)


def _attributes(value: Any, where: str = "attributes") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise errors.InvalidInput.field(where, "must be an object")
    for key in value:
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise errors.InvalidInput.field(where, "keys must be 1 to 255 characters")
    return dict(value)


def _score(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**31 - 1:
        raise errors.InvalidInput.field("score", "must be a 32-bit integer")
    return value


@dataclass(frozen=True)
class ListChange:
    """One `{key, status, confirmed}` item of a contact's `lists` input."""

    key: str
    status: str
    confirmed: bool = False


def _list_changes(conn: Connection, items: Any) -> list[ListChange]:
    if not isinstance(items, list | tuple):
        raise errors.InvalidInput.field("lists", "must be a list of {key, status}")
    problems, out = Problems(), []
    for i, item in enumerate(items):
        item = item if isinstance(item, Mapping) else {}
        key = problems.check(lists.check_key, item.get("key"), f"lists[{i}].key")
        status = problems.check(
            lists.check_status, item.get("status", "subscribed"), f"lists[{i}].status"
        )
        if key and status:
            out.append(ListChange(key, status, bool(item.get("confirmed", False))))
    known = set(
        conn.execute(
            select(tables.lists.c.key).where(tables.lists.c.key.in_([c.key for c in out]))
        ).scalars()
    )
    for i, change in enumerate(out):
        if change.key not in known:
            problems.fields.append(errors.FieldError(f"lists[{i}].key", "no such list"))
    problems.raise_any()
    return out


def _reject_unknown(values: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise errors.InvalidInput(
            f"unknown fields: {', '.join(unknown)}",
            fields=[errors.FieldError(name, "is not a contact field") for name in unknown],
        )


def _check_unique(conn: Connection, profile: Mapping[str, Any], contact_id: int | None) -> None:
    c = tables.contacts
    wanted = {name: profile[name] for name in _UNIQUE if profile.get(name) is not None}
    if not wanted:
        return
    query = select(c.c.id, c.c.email, c.c.external_id).where(
        or_(*(c.c[name] == value for name, value in wanted.items()))
    )
    if contact_id is not None:
        query = query.where(c.c.id != contact_id)
    taken = [
        errors.FieldError(name, f"already belongs to contact {row.id}")
        for row in conn.execute(query)
        for name, value in wanted.items()
        if row._mapping[name] == value
    ]
    if taken:
        raise errors.Conflict("; ".join(f"{p.field}: {p.message}" for p in taken), fields=taken)


def _conflict(exc: IntegrityError) -> errors.Conflict:
    """The unique index a concurrent writer beat us to, as a 409 naming the field."""
    text = str(exc.orig)
    for name in _UNIQUE:
        if f"contacts_{name}" in text or f"contacts.{name}" in text:
            return errors.Conflict(
                f"{name}: already belongs to another contact",
                fields=[errors.FieldError(name, "already belongs to another contact")],
            )
    raise exc


# -- create, read, change, delete --------------------------------------------------------


def create(
    conn: Connection, clock: Clock, values: Mapping[str, Any], proof: consent.Proof
) -> dict[str, Any]:
    """A new contact from profile fields, `attributes`, `tags`, `score` and `lists`
    (`[{key, status, confirmed?}]`, each change recorded with `proof`); returns it."""
    _reject_unknown(values, _CREATE_KEYS)
    problems = Problems()
    profile = problems.check(fields.normalise_profile, values) or {}
    attributes = problems.check(_attributes, values.get("attributes") or {}) or {}
    tags = problems.check(normalise_tags, values.get("tags") or []) or []
    score = problems.check(_score, values.get("score", 0))
    changes = problems.check(_list_changes, conn, values.get("lists") or []) or []
    problems.raise_any()
    _check_unique(conn, profile, None)
    now = clock.now()
    row = {
        **profile,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
        "score": score,
        "created_at": now,
        "updated_at": now,
    }
    try:
        contact_id = conn.execute(
            insert(tables.contacts).values(**row).returning(tables.contacts.c.id)
        ).scalar_one()
    except IntegrityError as exc:
        raise _conflict(exc) from None
    _add_tags(conn, contact_id, tags)
    _apply_lists(conn, clock, contact_id, changes, proof)
    return get(conn, contact_id)


def get_row(conn: Connection, contact_id: int, *, lock: bool = False) -> Row[Any]:
    """The contacts row (locked for update when `lock`); `NotFound` if there is none."""
    query = select(tables.contacts).where(tables.contacts.c.id == contact_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise errors.NotFound(f"No contact with id {contact_id}.")
    return row


def get(conn: Connection, contact_id: int) -> dict[str, Any]:
    """One contact, rendered; `NotFound` if there is none with that id."""
    return render(conn, [get_row(conn, contact_id)])[0]


def update_contact(
    conn: Connection,
    clock: Clock,
    contact_id: int,
    changes: Mapping[str, Any],
    proof: consent.Proof,
) -> dict[str, Any]:
    """Merge `changes` into a contact: given profile fields are set (None clears),
    `attributes` merge key by key (None removes a key), `tags` replaces the tags,
    `add_tags`/`remove_tags` edit them, `lists` sets list statuses. Returns the contact."""
    _reject_unknown(changes, _PATCH_KEYS)
    c = tables.contacts
    current = get_row(conn, contact_id, lock=True)
    edit = _TagEdit.parse(changes)
    problems = Problems()
    profile = problems.check(_patched_profile, current, changes) or {}
    values: dict[str, Any] = dict(profile)
    if "attributes" in changes:
        merged = problems.check(_merged_attributes, current.attributes, changes["attributes"])
        values["attributes"] = merged
    if "score" in changes:
        values["score"] = problems.check(_score, changes["score"])
    list_changes = problems.check(_list_changes, conn, changes.get("lists") or []) or []
    problems.check(edit.check)
    problems.raise_any()
    _check_unique(conn, profile, contact_id)
    try:
        conn.execute(update(c).where(c.c.id == contact_id).values(updated_at=clock.now(), **values))
    except IntegrityError as exc:
        raise _conflict(exc) from None
    edit.apply(conn, contact_id)
    _apply_lists(conn, clock, contact_id, list_changes, proof)
    return get(conn, contact_id)


def _patched_profile(current: Row[Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    # A phone number without `+` is read in the contact's country, new or stored.
    given = {k: v for k, v in changes.items() if k in fields.PROFILE_FIELDS}
    normalised = fields.normalise_profile({"country": current.country, **given})
    return {k: v for k, v in normalised.items() if k in given}


def _merged_attributes(stored: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    merged = dict(stored)
    for key, value in _attributes(patch).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass
class _TagEdit:
    replace: Any = None
    add: Any = field(default_factory=list)
    remove: Any = field(default_factory=list)

    @classmethod
    def parse(cls, changes: Mapping[str, Any]) -> _TagEdit:
        replace = (changes["tags"] or []) if "tags" in changes else None
        return cls(replace, changes.get("add_tags") or [], changes.get("remove_tags") or [])

    def check(self) -> None:
        if self.replace is not None and (self.add or self.remove):
            raise errors.InvalidInput.field("tags", "give either tags or add_tags/remove_tags")
        problems = Problems()
        for name in ("replace", "add", "remove"):
            where = "tags" if name == "replace" else f"{name}_tags"
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, problems.check(normalise_tags, value, where))
        problems.raise_any()

    def apply(self, conn: Connection, contact_id: int) -> None:
        t = tables.contact_tags
        if self.replace is not None:
            conn.execute(delete(t).where(t.c.contact_id == contact_id))
            _add_tags(conn, contact_id, self.replace)
        if self.remove:
            conn.execute(delete(t).where(t.c.contact_id == contact_id, t.c.tag.in_(self.remove)))
        if self.add:
            have = set(conn.execute(select(t.c.tag).where(t.c.contact_id == contact_id)).scalars())
            _add_tags(conn, contact_id, [tag for tag in self.add if tag not in have])


def _add_tags(conn: Connection, contact_id: int, tags: Sequence[str]) -> None:
    if tags:
        conn.execute(
            insert(tables.contact_tags), [{"contact_id": contact_id, "tag": t} for t in tags]
        )


def _apply_lists(
    conn: Connection,
    clock: Clock,
    contact_id: int,
    changes: Iterable[ListChange],
    proof: consent.Proof,
) -> None:
    for change in changes:
        lists.set_status(
            conn, clock, change.key, contact_id, change.status, proof, confirmed=change.confirmed
        )


def delete_contact(conn: Connection, contact_id: int) -> None:
    """Delete a contact for good, with its tags, memberships, consents and events."""
    done = conn.execute(delete(tables.contacts).where(tables.contacts.c.id == contact_id))
    if done.rowcount == 0:
        raise errors.NotFound(f"No contact with id {contact_id}.")


# -- rendering --------------------------------------------------------------------------


def render(conn: Connection, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """Contacts rows as API JSON, with tags, lists and anonymous ids in one query each."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    t, a = tables.contact_tags, tables.contact_anonymous_ids
    tags = _grouped(conn, select(t.c.contact_id, t.c.tag).where(t.c.contact_id.in_(ids)))
    anonymous = _grouped(
        conn,
        select(a.c.contact_id, a.c.anonymous_id)
        .where(a.c.contact_id.in_(ids))
        .order_by(a.c.created_at, a.c.anonymous_id),
    )
    memberships = lists.for_contacts(conn, ids)
    return [
        {
            "id": r.id,
            **{name: r._mapping[name] for name in fields.PROFILE_FIELDS},
            "score": r.score,
            "attributes": r.attributes,
            "tags": sorted(tags.get(r.id, [])),
            "lists": memberships.get(r.id, []),
            "anonymous_ids": anonymous.get(r.id, []),
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }
        for r in rows
    ]


def _grouped(conn: Connection, query: Any) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for contact_id, value in conn.execute(query):
        out.setdefault(contact_id, []).append(value)
    return out
