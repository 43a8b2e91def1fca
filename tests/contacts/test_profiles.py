"""Contact profiles and search, on every engine: create, patch semantics, validation that
changes nothing, duplicates, rendering, filters and keyset pages."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, event, func, insert, select

from tidings import errors
from tidings.clock import FakeClock
from tidings.contacts import consent, lists, pagination, profiles, search
from tidings.db import tables

PROOF = consent.Proof(source="test")
_seq = itertools.count(1)


def make_contact(conn: Connection, clock: FakeClock, **overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    values: dict[str, Any] = {"email": f"person{n}@example.com", **overrides}
    return profiles.create(conn, clock, values, PROOF)


def make_list(conn: Connection, clock: FakeClock, key: str = "news", **overrides: Any) -> Any:
    return lists.create(conn, clock, {"key": key, "name": key.title(), **overrides})


def make_event(conn: Connection, clock: FakeClock, contact_id: int, **overrides: Any) -> int:
    n = next(_seq)
    values = {
        "message_id": f"m-{n}",
        "type": "track",
        "name": "Order Completed",
        "contact_id": contact_id,
        "properties": {},
        "context": {},
        "timestamp": clock.now(),
        "received_at": clock.now(),
        **overrides,
    }
    return int(
        conn.execute(
            insert(tables.events).values(values).returning(tables.events.c.id)
        ).scalar_one()
    )


def count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# -- create and read --------------------------------------------------------------------


def test_create_normalises_and_renders_the_whole_shape(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock, "news")
        contact = make_contact(
            conn,
            clock,
            email="Ada@Example.COM",
            external_id="u-1",
            phone="030 1234567",
            country="de",
            timezone="europe/berlin",
            locale="pt_BR",
            first_name=" Ada ",
            attributes={"plan": "pro", "gone": None},
            tags=["vip", "b", "vip"],
            lists=[{"key": "news", "status": "subscribed"}],
            score=7,
        )
        assert profiles.get(conn, contact["id"]) == contact
    assert contact["email"] == "ada@example.com"
    assert contact["phone"] == "+49301234567"
    assert (contact["country"], contact["timezone"], contact["locale"]) == (
        "DE",
        "Europe/Berlin",
        "pt-BR",
    )
    assert contact["first_name"] == "Ada"
    assert contact["attributes"] == {"plan": "pro"}
    assert contact["tags"] == ["b", "vip"]
    assert contact["lists"] == [{"key": "news", "status": "subscribed"}]
    assert contact["anonymous_ids"] == []
    assert contact["score"] == 7
    assert contact["created_at"] == contact["updated_at"] == clock.now()


def test_every_invalid_field_is_named_and_nothing_is_written(
    engine: Engine, clock: FakeClock
) -> None:
    with engine.begin() as conn, pytest.raises(errors.InvalidInput) as caught:
        make_contact(
            conn,
            clock,
            email="not-an-email",
            timezone="Mars/Base",
            country="XX",
            locale="zz-qq-not",
            tags=["ok", ""],
            lists=[{"key": "missing"}],
            score="high",
        )
    named = {f.field for f in caught.value.fields}
    assert named == {"email", "timezone", "country", "locale", "tags[1]", "lists[0].key", "score"}
    with engine.connect() as conn:
        assert count(conn, tables.contacts) == 0


def test_unknown_fields_are_refused(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn, pytest.raises(errors.InvalidInput) as caught:
        make_contact(conn, clock, nickname="x")
    assert caught.value.fields[0].field == "nickname"


@pytest.mark.parametrize("name", ["email", "external_id"])
def test_duplicates_are_a_conflict_naming_the_field(
    engine: Engine, clock: FakeClock, name: str
) -> None:
    with engine.begin() as conn:
        first = make_contact(conn, clock, external_id="u-1", email="a@example.com")
    values = {"email": "b@example.com", "external_id": "u-2", name: first[name]}
    with engine.begin() as conn, pytest.raises(errors.Conflict) as caught:
        profiles.create(conn, clock, values, PROOF)
    assert [f.field for f in caught.value.fields] == [name]
    with engine.connect() as conn:
        assert count(conn, tables.contacts) == 1


def test_a_writer_racing_past_the_check_still_gets_a_409_naming_the_field(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as conn:
        make_contact(conn, clock, email="a@example.com", external_id="u-1")
    monkeypatch.setattr(profiles, "_check_unique", lambda *args: None)
    for name, value in (("email", "a@example.com"), ("external_id", "u-1")):
        with engine.begin() as conn, pytest.raises(errors.Conflict) as caught:
            make_contact(conn, clock, **{name: value})
        assert caught.value.fields[0].field == name


# -- patch ------------------------------------------------------------------------------


def test_patch_merges_profile_attributes_and_tags(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        contact = make_contact(
            conn,
            clock,
            first_name="Ada",
            last_name="Lovelace",
            country="DE",
            attributes={"plan": "pro", "seats": 3},
            tags=["a", "b"],
        )
    clock.advance(minutes=5)
    with engine.begin() as conn:
        changes = {
            "last_name": None,
            "phone": "030 1234567",  # national: read in the stored country
            "attributes": {"seats": None, "team": "ops"},
            "add_tags": ["c", "a"],
            "remove_tags": ["b"],
        }
        patched = profiles.update_contact(conn, clock, contact["id"], changes, PROOF)
    assert patched["first_name"] == "Ada"
    assert patched["last_name"] is None
    assert patched["phone"] == "+49301234567"
    assert patched["attributes"] == {"plan": "pro", "team": "ops"}
    assert patched["tags"] == ["a", "c"]
    assert patched["updated_at"] == clock.now() != patched["created_at"]


def test_patch_tags_replaces_and_refuses_mixing(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        contact = make_contact(conn, clock, tags=["a", "b"])
        replaced = profiles.update_contact(conn, clock, contact["id"], {"tags": ["z"]}, PROOF)
        assert replaced["tags"] == ["z"]
        cleared = profiles.update_contact(conn, clock, contact["id"], {"tags": None}, PROOF)
        assert cleared["tags"] == []
        with pytest.raises(errors.InvalidInput) as caught:
            profiles.update_contact(
                conn, clock, contact["id"], {"tags": [], "add_tags": ["x"]}, PROOF
            )
        assert caught.value.fields[0].field == "tags"


def test_invalid_patch_changes_nothing(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        contact = make_contact(conn, clock, first_name="Ada", tags=["a"])
    with engine.begin() as conn, pytest.raises(errors.InvalidInput) as caught:
        profiles.update_contact(
            conn,
            clock,
            contact["id"],
            {"first_name": "Bea", "timezone": "Nowhere", "add_tags": ["b"]},
            PROOF,
        )
    assert [f.field for f in caught.value.fields] == ["timezone"]
    with engine.connect() as conn:
        assert profiles.get(conn, contact["id"]) == contact


def test_patching_to_a_taken_email_is_a_conflict(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_contact(conn, clock, email="taken@example.com")
        other = make_contact(conn, clock)
        with pytest.raises(errors.Conflict) as caught:
            profiles.update_contact(conn, clock, other["id"], {"email": "TAKEN@example.com"}, PROOF)
        assert caught.value.fields[0].field == "email"
        # its own address is not a conflict
        same = profiles.update_contact(conn, clock, other["id"], {"email": other["email"]}, PROOF)
        assert same["email"] == other["email"]


def test_missing_contacts_are_not_found(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        with pytest.raises(errors.NotFound):
            profiles.get(conn, 999)
        with pytest.raises(errors.NotFound):
            profiles.update_contact(conn, clock, 999, {"first_name": "x"}, PROOF)
        with pytest.raises(errors.NotFound):
            profiles.delete_contact(conn, 999)


def test_delete_cascades_to_everything_about_the_contact(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock, tags=["a"], lists=[{"key": "news"}])
        make_event(conn, clock, contact["id"])
        profiles.delete_contact(conn, contact["id"])
        for table in (
            tables.contacts,
            tables.contact_tags,
            tables.list_memberships,
            tables.consents,
            tables.events,
        ):
            assert count(conn, table) == 0, table.name


# -- search -----------------------------------------------------------------------------


def ids(page: dict[str, Any]) -> list[int]:
    return [c["id"] for c in page["data"]]


def test_filters_by_profile_tag_and_list(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock, "news")
        a = make_contact(conn, clock, email="a@example.com", tags=["vip", "x"], phone="+4930123456")
        b = make_contact(conn, clock, external_id="u-b", tags=["vip"], lists=[{"key": "news"}])
        c = make_contact(conn, clock, lists=[{"key": "news", "status": "unsubscribed"}])

        def find(**kw: Any) -> list[int]:
            return ids(search.contacts(conn, search.Search(**kw)))

        assert find(email="A@EXAMPLE.com") == [a["id"]]
        assert find(phone="+49 30 123456") == [a["id"]]
        assert find(external_id="u-b") == [b["id"]]
        assert find(tags=["vip"]) == [a["id"], b["id"]]
        assert find(tags=["vip", "x"]) == [a["id"]]
        assert find(list_key="news") == [b["id"], c["id"]]
        assert find(list_key="news", list_status="unsubscribed") == [c["id"]]
        assert find(list_key="nope") == []


def test_attribute_filters_respect_json_types(engine: Engine, clock: FakeClock) -> None:
    values = ["pro", 30, "30", True, 1, None, 30.5, {"nested": 1}]
    with engine.begin() as conn:
        made = [make_contact(conn, clock, attributes={"plan": v, "k:ey": "v"}) for v in values]
        make_contact(conn, clock)  # no such attribute
        by_value = [c["id"] for c in made]

        def find(*filters: str) -> list[int]:
            return ids(search.contacts(conn, search.Search(attributes=filters)))

        assert find("plan:pro") == [by_value[0]]
        assert find("plan:30") == [by_value[1]]
        assert find('plan:"30"') == [by_value[2]]
        assert find("plan:true") == [by_value[3]]
        assert find("plan:1") == [by_value[4]]
        assert find("plan:30.5") == [by_value[6]]
        assert find("plan:pro", "k:ey:v") == []  # names stop at the first ':'
        assert find("plan:pro", "plan:30") == []
        # null matches an explicit null only (create drops null attributes, so none here)
        assert find("plan:null") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"list_status": "subscribed"}, "list_status"),
        ({"list_key": "news", "list_status": "maybe"}, "list_status"),
        ({"attributes": ["no-colon"]}, "attribute"),
        ({"attributes": ['a"b:1']}, "attribute"),
        ({"attributes": ["a:[1]"]}, "attribute"),
    ],
)
def test_bad_filters_name_their_field(engine: Engine, kwargs: dict[str, Any], field: str) -> None:
    with engine.connect() as conn, pytest.raises(errors.InvalidInput) as caught:
        search.contacts(conn, search.Search(**kwargs))
    assert caught.value.fields[0].field == field


def test_tampered_or_foreign_cursors_are_refused(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        for _ in range(3):
            make_contact(conn, clock)
        cursor = search.contacts(conn, search.Search(), limit=1)["next_cursor"]
        assert cursor
        token, _, check = cursor.partition(".")
        forged = pagination.encode("events:1", 1)
        for bad in ("garbage", token + "." + check[::-1], token[:-2] + "." + check, forged):
            with pytest.raises(errors.InvalidInput) as caught:
                search.contacts(conn, search.Search(), cursor=bad)
            assert caught.value.fields[0].field == "cursor"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tagged=st.lists(st.booleans(), min_size=0, max_size=12),
    limit=st.integers(min_value=1, max_value=5),
)
def test_pages_walk_every_match_exactly_once(
    engine: Engine, clock: FakeClock, tagged: list[bool], limit: int
) -> None:
    with engine.begin() as conn:
        conn.execute(tables.contacts.delete())
        made = [make_contact(conn, clock, tags=["t"] if t else []) for t in tagged]
    expected = [c["id"] for c, t in zip(made, tagged, strict=True) if t]
    seen: list[int] = []
    cursor = None
    with engine.connect() as conn:
        for _ in range(len(made) + 2):
            page = search.contacts(conn, search.Search(tags=["t"]), cursor=cursor, limit=limit)
            assert len(page["data"]) <= limit
            seen += ids(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == expected


# -- events -----------------------------------------------------------------------------


def test_events_newest_first_with_filters_and_pages(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        contact = make_contact(conn, clock)
        other = make_contact(conn, clock)
        start = clock.now()
        tied = [make_event(conn, clock, contact["id"]) for _ in range(2)]  # same timestamp
        older = make_event(conn, clock, contact["id"], timestamp=start - timedelta(days=1))
        page_view = make_event(
            conn, clock, contact["id"], type="page", name="Home", timestamp=start + timedelta(1)
        )
        make_event(conn, clock, other["id"])
    expected = [page_view, tied[1], tied[0], older]
    with engine.connect() as conn:
        seen, cursor = [], None
        while True:
            page = search.events(conn, contact["id"], cursor=cursor, limit=1)
            seen += [e["id"] for e in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
        assert [e["id"] for e in search.events(conn, contact["id"], type="page")["data"]] == [
            page_view
        ]
        named = search.events(conn, contact["id"], name="Order Completed")["data"]
        assert [e["id"] for e in named] == expected[1:]
        assert set(named[0]) == {*search.EVENT_FIELDS}
        with pytest.raises(errors.NotFound):
            search.events(conn, 999)


def test_a_page_costs_the_same_queries_whatever_its_size(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        for i in range(6):
            make_contact(conn, clock, tags=["a", f"t{i}"], lists=[{"key": "news"}])
    statements: list[str] = []

    def count_statement(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count_statement)
    try:
        costs = []
        for limit in (1, 6):
            statements.clear()
            with engine.connect() as conn:
                page = search.contacts(conn, search.Search(), limit=limit)
            assert len(page["data"]) == limit
            costs.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count_statement)
    assert costs[0] == costs[1] <= 5  # (BEGIN,) contacts, tags, anonymous ids, lists
