"""Merging contacts, and the identity rules checked against a plain-Python model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, insert, select, update

from tests.events.test_apply import append_event
from tidings.clock import FakeClock
from tidings.config import Settings
from tidings.contacts import identity
from tidings.db import tables
from tidings.worker import Worker


def make_contact(conn: Connection, clock: FakeClock, **overrides: Any) -> int:
    values = {"attributes": {}, "created_at": clock.now(), "updated_at": clock.now()}
    return int(
        conn.execute(
            insert(tables.contacts).values({**values, **overrides}).returning(tables.contacts.c.id)
        ).scalar_one()
    )


def make_list(conn: Connection, clock: FakeClock, key: str) -> int:
    now = clock.now()
    return int(
        conn.execute(
            insert(tables.lists)
            .values(key=key, name=key, created_at=now, updated_at=now)
            .returning(tables.lists.c.id)
        ).scalar_one()
    )


def join(conn: Connection, clock: FakeClock, list_id: int, contact_id: int, status: str) -> None:
    now = clock.now()
    conn.execute(
        insert(tables.list_memberships).values(
            list_id=list_id, contact_id=contact_id, status=status, created_at=now, updated_at=now
        )
    )


def row(conn: Connection, contact_id: int) -> dict[str, Any] | None:
    c = tables.contacts
    found = conn.execute(select(c).where(c.c.id == contact_id)).first()
    return dict(found._mapping) if found else None


def test_merge_moves_everything_and_deletes_the_source(engine: Engine, clock: FakeClock) -> None:
    early = clock.now()
    clock.advance(days=1)
    with engine.begin() as conn:
        target = make_contact(
            conn, clock, external_id="u1", first_name="Ada", score=5, attributes={"plan": "pro"}
        )
        source = make_contact(
            conn,
            clock,
            email="ada@example.com",
            first_name="Anon",
            last_name="Lovelace",
            score=2,
            attributes={"plan": "free", "color": "red"},
            created_at=early,
        )
        conn.execute(
            insert(tables.contact_anonymous_ids),
            [{"anonymous_id": "a1", "contact_id": source, "created_at": early}],
        )
        conn.execute(
            insert(tables.contact_tags),
            [
                {"contact_id": source, "tag": "vip"},
                {"contact_id": source, "tag": "both"},
                {"contact_id": target, "tag": "both"},
            ],
        )
        conn.execute(
            insert(tables.consents).values(
                contact_id=source, status="subscribed", source="form:x", at=early
            )
        )
        event = append_event(conn, clock, anonymous_id="a1")
        conn.execute(update(tables.events).values(contact_id=source))
    clock.advance(minutes=1)
    with engine.begin() as conn:
        assert identity.merge_contacts(conn, clock, source, target) is True
    with engine.connect() as conn:
        assert row(conn, source) is None
        merged = row(conn, target)
        assert merged is not None
        assert merged["first_name"] == "Ada"  # the target's values win
        assert merged["last_name"] == "Lovelace" and merged["email"] == "ada@example.com"
        assert merged["attributes"] == {"plan": "pro", "color": "red"}
        assert merged["score"] == 7
        assert merged["created_at"] == early and merged["updated_at"] == clock.now()
        t = tables
        assert conn.execute(select(t.events.c.contact_id)).scalar_one() == target
        assert conn.execute(select(t.contact_anonymous_ids.c.contact_id)).scalar_one() == target
        assert conn.execute(select(t.consents.c.contact_id)).scalar_one() == target
        tags = conn.execute(
            select(t.contact_tags.c.tag).where(t.contact_tags.c.contact_id == target)
        )
        assert sorted(tags.scalars()) == ["both", "vip"]
    assert event


def test_two_known_contacts_are_not_merged(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        one = make_contact(conn, clock, external_id="u1")
        two = make_contact(conn, clock, external_id="u2")
        assert identity.merge_contacts(conn, clock, one, two) is False
        assert identity.merge_contacts(conn, clock, one, one) is False
        assert identity.merge_contacts(conn, clock, one, 999) is False
        assert row(conn, one) is not None and row(conn, two) is not None


@pytest.mark.parametrize(
    ("ours", "theirs", "result"),
    [
        ("subscribed", "pending", "subscribed"),
        ("pending", "subscribed", "subscribed"),
        ("pending", "pending", "pending"),
        ("unsubscribed", "subscribed", "unsubscribed"),
        ("subscribed", "unsubscribed", "unsubscribed"),
        ("pending", "unsubscribed", "unsubscribed"),
    ],
)
def test_list_status_after_a_merge(ours: str, theirs: str, result: str) -> None:
    assert identity.combined_status(ours, theirs) == result


def test_merge_combines_list_memberships(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        target = make_contact(conn, clock, external_id="u1")
        source = make_contact(conn, clock)
        lists = {key: make_list(conn, clock, key) for key in ("up", "out", "keep", "moved")}
        for key, mine, theirs in [
            ("up", "pending", "subscribed"),
            ("out", "subscribed", "unsubscribed"),
            ("keep", "unsubscribed", "subscribed"),
        ]:
            join(conn, clock, lists[key], target, mine)
            join(conn, clock, lists[key], source, theirs)
        join(conn, clock, lists["moved"], source, "pending")
    clock.advance(hours=1)
    with engine.begin() as conn:
        assert identity.merge_contacts(conn, clock, source, target)
    m = tables.list_memberships
    with engine.connect() as conn:
        rows = conn.execute(select(m.c.list_id, m.c.contact_id, m.c.status, m.c.updated_at))
        by_list = {r.list_id: r for r in rows}
    assert len(by_list) == 4 and {r.contact_id for r in by_list.values()} == {target}
    assert {key: by_list[i].status for key, i in lists.items()} == {
        "up": "subscribed",
        "out": "unsubscribed",
        "keep": "unsubscribed",
        "moved": "pending",
    }
    assert by_list[lists["up"]].updated_at == clock.now()
    assert by_list[lists["keep"]].updated_at < clock.now()


def test_fold_fills_gaps_and_keeps_the_newest_traits_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    target = identity.Contact(1, {"external_id": "u1", "email": None}, {"a": 1}, traits_at=now)
    source = identity.Contact(
        2,
        {"external_id": None, "email": "x@example.com"},
        {"a": 2, "b": 2},
        traits_at=now + timedelta(hours=1),
    )
    identity.fold(target, source)
    assert target.profile["email"] == "x@example.com" and target.external_id == "u1"
    assert target.attributes == {"a": 1, "b": 2}
    assert target.traits_at == now + timedelta(hours=1)


# -- the rules against a reference model --------------------------------------------------

USERS = ["u1", "u2", "u3"]
ANONS = ["a1", "a2", "a3"]
EMAILS = ["e1@example.com", "e2@example.com", "e3@example.com"]
T0 = datetime.fromisoformat("2026-01-05T09:00:00+00:00")


@dataclass(frozen=True)
class Ev:
    type: str
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None
    email: str | None
    minute: int


@dataclass(eq=False)
class Person:
    external_id: str | None
    email: str | None = None
    anonymous_ids: set[str] = field(default_factory=set)
    events: set[int] = field(default_factory=set)
    traits_at: int | None = None
    alive: bool = True


class Model:
    """The identity rules of docs/identity.md, written as plainly as possible."""

    def __init__(self) -> None:
        self.people: list[Person] = []

    def find(self, **match: str) -> Person | None:
        ((name, value),) = match.items()
        found = [
            p
            for p in self.people
            if p.alive
            and (value in p.anonymous_ids if name == "anon" else getattr(p, name) == value)
        ]
        return found[0] if found else None

    def merge(self, source: Person, target: Person) -> bool:
        if source is target:
            return True
        if source.external_id is not None:
            return False
        target.email = target.email or source.email
        target.anonymous_ids |= source.anonymous_ids
        target.events |= source.events
        stamps = [t for t in (source.traits_at, target.traits_at) if t is not None]
        target.traits_at = max(stamps) if stamps else None
        source.alive = False
        return True

    def choose(self, user: str | None, known: Person | None, cands: list[Person]) -> Person | None:
        if user:
            if known:
                return known
            for c in cands:
                if c.external_id is None:
                    c.external_id = user
                    return c
            return None
        return next((c for c in cands if c.external_id), None) or next(iter(cands), None)

    def apply(self, number: int, ev: Ev) -> None:
        strong = ev.type == "identify"
        known = self.find(external_id=ev.user_id) if ev.user_id else None
        device = self.find(anon=ev.anonymous_id) if ev.anonymous_id else None
        previous = None
        if ev.previous_id:
            previous = self.find(external_id=ev.previous_id) or self.find(anon=ev.previous_id)
        others = _distinct([device, previous])
        holder = self.find(email=ev.email) if ev.email else None
        target = self.choose(ev.user_id, known, _distinct([*others, holder if strong else None]))
        if target is None and holder is not None:
            target = self.choose(ev.user_id, None, [holder])
        if target is None:
            target = Person(ev.user_id)
            self.people.append(target)
        for other in others:
            self.merge(other, target)
        for anon, owner in ((ev.anonymous_id, device), (ev.previous_id, previous)):
            if anon and owner is None and anon != ev.user_id:
                target.anonymous_ids.add(anon)
        stale = target.traits_at is not None and ev.minute < target.traits_at
        if ev.email:
            holder = self.find(email=ev.email)
            ok = holder is None or holder is target
            if not ok and holder and (target.email is None or (strong and not stale)):
                ok = self.merge(holder, target)
            if ok and (target.email is None or (strong and not stale)):
                target.email = ev.email
        if strong and not stale:
            target.traits_at = ev.minute
        target.events.add(number)

    def contacts(self) -> set[tuple[Any, ...]]:
        return {
            (p.external_id, p.email, frozenset(p.anonymous_ids), frozenset(p.events))
            for p in self.people
            if p.alive
        }


def _distinct(found: Iterable[Person | None]) -> list[Person]:
    out: list[Person] = []
    for p in found:
        if p is not None and p not in out:
            out.append(p)
    return out


def _event(conn: Connection, clock: FakeClock, number: int, ev: Ev) -> None:
    props: dict[str, Any] = {}
    context: dict[str, Any] = {}
    if ev.type == "identify" and ev.email:
        props = {"email": ev.email}
    elif ev.type == "alias":
        props = {"previousId": ev.previous_id}
    elif ev.email:
        context = {"traits": {"email": ev.email}}
    append_event(
        conn,
        clock,
        ev.type,
        user_id=ev.user_id,
        anonymous_id=ev.anonymous_id,
        properties=props,
        context=context,
        timestamp=T0 + timedelta(minutes=ev.minute),
        message_id=str(number),
    )


def _stored(engine: Engine) -> set[tuple[Any, ...]]:
    c, a, e = tables.contacts, tables.contact_anonymous_ids, tables.events
    with engine.connect() as conn:
        anons: dict[int, set[str]] = {}
        for r in conn.execute(select(a.c.contact_id, a.c.anonymous_id)):
            anons.setdefault(r.contact_id, set()).add(r.anonymous_id)
        events: dict[int, set[int]] = {}
        for r in conn.execute(select(e.c.contact_id, e.c.message_id)):
            events.setdefault(r.contact_id, set()).add(int(r.message_id))
        assert None not in events, "every event has a contact"
        return {
            (
                r.external_id,
                r.email,
                frozenset(anons.get(r.id, ())),
                frozenset(events.get(r.id, ())),
            )
            for r in conn.execute(select(c.c.id, c.c.external_id, c.c.email))
        }


def _forget_contacts(engine: Engine) -> None:
    """Back to the bare log: the state a replay starts from."""
    with engine.begin() as conn:
        conn.execute(update(tables.events).values(contact_id=None))
        conn.execute(delete(tables.contacts))
        conn.execute(delete(tables.worker_cursors))


events_strategy = st.one_of(
    st.builds(
        Ev,
        st.sampled_from(["identify", "track", "page"]),
        st.none() | st.sampled_from(USERS),
        st.none() | st.sampled_from(ANONS),
        st.none(),
        st.none() | st.sampled_from(EMAILS),
        st.integers(0, 4),
    ),
    st.builds(
        Ev,
        st.just("alias"),
        st.sampled_from(USERS),
        st.none() | st.sampled_from(ANONS),
        st.sampled_from(USERS + ANONS),
        st.none(),
        st.integers(0, 4),
    ),
).filter(lambda ev: bool(ev.user_id or ev.anonymous_id))


@hypothesis.settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    log=st.lists(events_strategy, min_size=1, max_size=14),
    batch_sizes=st.tuples(st.sampled_from([1, 2, 3, 5, 1000]), st.sampled_from([1, 4, 1000])),
)
def test_applying_the_log_matches_the_model_and_replays_identically(
    engine: Engine,
    clock: FakeClock,
    settings: Settings,
    log: list[Ev],
    batch_sizes: tuple[int, int],
) -> None:
    with engine.begin() as conn:
        conn.execute(delete(tables.events))
    _forget_contacts(engine)
    model = Model()
    with engine.begin() as conn:
        for number, ev in enumerate(log):
            _event(conn, clock, number, ev)
            model.apply(number, ev)
    first = settings.model_copy(update={"worker_batch_size": batch_sizes[0]})
    assert Worker(first, engine, clock).run_once() == len(log)
    applied = _stored(engine)
    assert applied == model.contacts()
    _forget_contacts(engine)
    second = settings.model_copy(update={"worker_batch_size": batch_sizes[1]})
    assert Worker(second, engine, clock).run_once() == len(log)
    assert _stored(engine) == applied


def test_merges_of_one_batch_move_everything_at_once(
    engine: Engine, clock: FakeClock, worker: Worker
) -> None:
    with engine.begin() as conn:
        identify(conn, clock, "u1", email="u1@example.com")
        for device in ("a1", "a2", "a3"):
            append_event(conn, clock, anonymous_id=device)
    worker.run_once()
    with engine.connect() as conn:
        ids = {c.anonymous_id: c.contact_id for c in _anonymous_owners(conn)}
    with engine.begin() as conn:
        news = make_list(conn, clock, "news")
        join(conn, clock, news, ids["a1"], "subscribed")
        join(conn, clock, news, ids["a2"], "unsubscribed")
        conn.execute(
            insert(tables.contact_tags),
            [{"contact_id": ids["a1"], "tag": "vip"}, {"contact_id": ids["a2"], "tag": "vip"}],
        )
        conn.execute(
            insert(tables.consents).values(
                contact_id=ids["a3"], status="subscribed", source="form:x", at=clock.now()
            )
        )
    clock.advance(minutes=1)
    with engine.begin() as conn:  # one batch: a2 into a1 (anonymous), then both into u1
        identify(conn, clock, None, anonymous_id="a2", email="a1@example.com")
        append_event(
            conn, clock, anonymous_id="a1", context={"traits": {"email": "a1@example.com"}}
        )
        append_event(conn, clock, user_id="u1", anonymous_id="a1")
        append_event(conn, clock, "alias", user_id="u1", properties={"previousId": "a3"})
    assert worker.run_once() == 4
    with engine.connect() as conn:
        (user,) = conn.execute(select(tables.contacts)).all()
        assert user.external_id == "u1" and user.email == "u1@example.com"
        t = tables
        owners = {r.contact_id for r in conn.execute(select(t.events.c.contact_id))}
        assert owners == {user.id}
        assert {r.contact_id for r in _anonymous_owners(conn)} == {user.id}
        assert conn.execute(select(t.consents.c.contact_id)).scalar_one() == user.id
        assert conn.execute(select(t.contact_tags)).all() == [(user.id, "vip")]
        membership = conn.execute(select(t.list_memberships)).one()
        assert (membership.contact_id, membership.status) == (user.id, "unsubscribed")
        assert membership.updated_at == clock.now()


def _anonymous_owners(conn: Connection) -> list[Any]:
    a = tables.contact_anonymous_ids
    return list(conn.execute(select(a.c.anonymous_id, a.c.contact_id)).all())


def identify(conn: Connection, clock: FakeClock, user_id: str | None, **kw: Any) -> int:
    anonymous_id = kw.pop("anonymous_id", None)
    return append_event(
        conn, clock, "identify", user_id=user_id, anonymous_id=anonymous_id, properties=kw
    )
