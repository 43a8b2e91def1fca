"""Lists and memberships: statuses, double opt-in, consent records written exactly when a
status changes, bulk changes in set-based SQL, counts and member pages."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from tidings import errors
from tidings.clock import FakeClock
from tidings.contacts import consent, lists, profiles
from tidings.db import tables

PROOF = consent.Proof(source="api:tid_test", ip="203.0.113.9", user_agent="UA", text="Yes!")
_seq = itertools.count(1)


def make_contact(conn: Connection, clock: FakeClock, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"email": f"member{next(_seq)}@example.com", **overrides}
    return profiles.create(conn, clock, values, PROOF)


def make_list(conn: Connection, clock: FakeClock, key: str = "news", **overrides: Any) -> Any:
    return lists.create(conn, clock, {"key": key, "name": key.title(), **overrides})


def consents(conn: Connection) -> list[dict[str, Any]]:
    c = tables.consents
    return [dict(r._mapping) for r in conn.execute(select(c).order_by(c.c.id))]


def status_of(conn: Connection, contact_id: int) -> dict[str, str]:
    return {m["key"]: m["status"] for m in profiles.get(conn, contact_id)["lists"]}


# -- lists ------------------------------------------------------------------------------


def test_create_get_update_delete_a_list(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        made = make_list(conn, clock, "product-news", description="Monthly")
        assert made["member_counts"] == {"pending": 0, "subscribed": 0, "unsubscribed": 0}
        assert (made["name"], made["double_opt_in"]) == ("Product-News", False)
        clock.advance(hours=1)
        changed = lists.update_list(conn, clock, "product-news", {"double_opt_in": True})
        assert changed["double_opt_in"] and changed["updated_at"] == clock.now()
        assert [x["key"] for x in lists.list_all(conn)] == ["product-news"]
        lists.delete_list(conn, "product-news")
        with pytest.raises(errors.NotFound):
            lists.get(conn, "product-news")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"key": "Has Spaces", "name": "x"}, "key"),
        ({"key": "ok"}, "name"),
        ({"key": "ok", "name": " "}, "name"),
        ({"key": "ok", "name": "x", "double_opt_in": "yes"}, "double_opt_in"),
    ],
)
def test_invalid_lists_name_the_field(
    engine: Engine, clock: FakeClock, values: dict[str, Any], field: str
) -> None:
    with engine.begin() as conn, pytest.raises(errors.InvalidInput) as caught:
        lists.create(conn, clock, values)
    assert caught.value.fields[0].field == field


def test_duplicate_key_is_a_conflict(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        with pytest.raises(errors.Conflict) as caught:
            make_list(conn, clock)
    assert caught.value.fields[0].field == "key"


# -- memberships ------------------------------------------------------------------------


def test_each_status_change_writes_one_consent_record(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock)
        cid = contact["id"]
        first = lists.set_status(conn, clock, "news", cid, "subscribed", PROOF)
        again = lists.set_status(conn, clock, "news", cid, "subscribed", PROOF)
        clock.advance(days=1)
        off = lists.set_status(conn, clock, "news", cid, "unsubscribed", PROOF)
        records = consents(conn)
    assert (first["changed"], again["changed"], off["changed"]) == (True, False, True)
    assert [r["status"] for r in records] == ["subscribed", "unsubscribed"]
    latest = records[-1]
    assert latest["source"] == "api:tid_test"
    assert (latest["ip"], latest["user_agent"], latest["text"]) == ("203.0.113.9", "UA", "Yes!")
    assert latest["text_hash"] == hashlib.sha256(b"Yes!").hexdigest()
    assert latest["at"] == clock.now()
    assert latest["contact_id"] == cid


def test_double_opt_in_records_pending_until_confirmed(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock, "doi", double_opt_in=True)
        a, b = make_contact(conn, clock), make_contact(conn, clock)
        assert lists.set_status(conn, clock, "doi", a["id"], "subscribed", PROOF)["status"] == (
            "pending"
        )
        done = lists.set_status(conn, clock, "doi", b["id"], "subscribed", PROOF, confirmed=True)
        assert done["status"] == "subscribed"
        # asking again without confirmation never demotes a subscribed contact
        again = lists.set_status(conn, clock, "doi", b["id"], "subscribed", PROOF)
        assert (again["status"], again["changed"]) == ("subscribed", False)
        assert [r["status"] for r in consents(conn)] == ["pending", "subscribed"]


def test_removing_a_member_is_recorded(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock, lists=[{"key": "news"}])
        lists.remove(conn, clock, "news", contact["id"], PROOF)
        assert status_of(conn, contact["id"]) == {}
        assert [r["status"] for r in consents(conn)] == ["subscribed", consent.REMOVED]
        with pytest.raises(errors.NotFound):
            lists.remove(conn, clock, "news", contact["id"], PROOF)


def test_unknown_contact_or_list_is_not_found(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock)
        with pytest.raises(errors.NotFound):
            lists.set_status(conn, clock, "news", 999, "subscribed", PROOF)
        with pytest.raises(errors.NotFound):
            lists.set_status(conn, clock, "nope", contact["id"], "subscribed", PROOF)
        with pytest.raises(errors.InvalidInput):
            lists.set_status(conn, clock, "news", contact["id"], "maybe", PROOF)


def test_bulk_changes_only_what_differs(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        subscribed = make_contact(conn, clock, lists=[{"key": "news"}])
        unsubscribed = make_contact(conn, clock, lists=[{"key": "news", "status": "unsubscribed"}])
        fresh = make_contact(conn, clock)
        ids = [subscribed["id"], unsubscribed["id"], fresh["id"], fresh["id"]]
        before = len(consents(conn))
        done = lists.set_status_many(conn, clock, "news", ids, "subscribed", PROOF)
        assert (done["changed"], done["unchanged"]) == (2, 1)
        for cid in ids:
            assert status_of(conn, cid) == {"news": "subscribed"}
        added = consents(conn)[before:]
        assert sorted(r["contact_id"] for r in added) == sorted([unsubscribed["id"], fresh["id"]])
        assert {(r["status"], r["source"], r["text_hash"]) for r in added} == {
            ("subscribed", "api:tid_test", consent.text_hash("Yes!"))
        }
        assert lists.get(conn, "news")["member_counts"]["subscribed"] == 3


def test_bulk_on_double_opt_in_keeps_subscribed_contacts(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock, "doi", double_opt_in=True)
        confirmed = make_contact(conn, clock, lists=[{"key": "doi", "confirmed": True}])
        fresh = make_contact(conn, clock)
        done = lists.set_status_many(
            conn, clock, "doi", [confirmed["id"], fresh["id"]], "subscribed", PROOF
        )
        assert (done["status"], done["changed"]) == ("pending", 1)
        assert status_of(conn, confirmed["id"]) == {"doi": "subscribed"}
        assert status_of(conn, fresh["id"]) == {"doi": "pending"}


def test_bulk_with_an_unknown_contact_changes_nothing(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock)
    with engine.begin() as conn, pytest.raises(errors.InvalidInput) as caught:
        lists.set_status_many(conn, clock, "news", [contact["id"], 424242], "subscribed", PROOF)
    assert caught.value.fields[0].field == "contact_ids"
    assert "424242" in caught.value.fields[0].message
    with engine.connect() as conn:
        assert status_of(conn, contact["id"]) == {}
        assert consents(conn) == []


def test_members_page_by_status(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        made = [
            make_contact(conn, clock, lists=[{"key": "news", "status": s}])
            for s in ["subscribed", "unsubscribed", "subscribed", "subscribed"]
        ]
    with engine.connect() as conn:
        seen, cursor = [], None
        while True:
            page = lists.members(conn, "news", status="subscribed", cursor=cursor, limit=2)
            seen += [m["contact_id"] for m in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [made[0]["id"], made[2]["id"], made[3]["id"]]
        assert page["data"][-1]["email"] == made[3]["email"]
        counts = lists.get(conn, "news")["member_counts"]
        assert counts == {"pending": 0, "subscribed": 3, "unsubscribed": 1}


def test_deleting_a_list_keeps_consent_records(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock, lists=[{"key": "news"}])
        lists.delete_list(conn, "news")
        page = consent.for_contact(conn, contact["id"])
    assert [(r["list"], r["status"]) for r in page["data"]] == [(None, "subscribed")]


def test_consents_for_a_contact_are_newest_first(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        make_list(conn, clock)
        contact = make_contact(conn, clock)
        for status in ["subscribed", "unsubscribed", "subscribed"]:
            clock.advance(minutes=1)
            lists.set_status(conn, clock, "news", contact["id"], status, PROOF)
        seen, cursor = [], None
        while True:
            page = consent.for_contact(conn, contact["id"], cursor=cursor, limit=2)
            seen += [(r["status"], r["at"]) for r in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert [s for s, _ in seen] == ["subscribed", "unsubscribed", "subscribed"]
    assert [at for _, at in seen] == sorted((at for _, at in seen), reverse=True)
    assert seen[0][1] == clock.now()


def test_proof_checks_ip_and_lengths() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        consent.Proof(source="x", ip="999.1.1.1", text="t" * (consent.MAX_TEXT + 1)).checked()
    assert [f.field for f in caught.value.fields] == ["consent.ip", "consent.text"]
