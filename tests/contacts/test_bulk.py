"""bulk.upsert: many contacts in a few set-based statements; and the email fast path."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select

from tidings import errors
from tidings.clock import FakeClock
from tidings.contacts import bulk, fields
from tidings.db import tables


def make_list(engine: Engine, clock: FakeClock, key: str = "news") -> int:
    with engine.begin() as conn:
        now = clock.now()
        values = {"key": key, "name": key.title(), "created_at": now, "updated_at": now}
        return int(conn.execute(insert(tables.lists).values(values)).inserted_primary_key[0])


def upsert(engine: Engine, clock: FakeClock, items: list[dict[str, Any]], **kw: Any) -> Any:
    with engine.begin() as conn:
        return bulk.upsert(conn, clock, items, **kw)


def contacts(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every contact by email (or external id), with its tags."""
    with engine.connect() as conn:
        rows = conn.execute(select(tables.contacts).order_by(tables.contacts.c.id)).all()
        tags = conn.execute(select(tables.contact_tags)).all()
    out = {}
    for row in rows:
        found = dict(row._mapping)
        found["tags"] = sorted(t.tag for t in tags if t.contact_id == row.id)
        out[row.email or row.external_id] = found
    return out


def test_creates_then_updates_keeping_missing_fields_and_merging_attributes(
    engine: Engine, clock: FakeClock
) -> None:
    first = upsert(
        engine,
        clock,
        [
            {"email": "Ann@Example.com", "first_name": "Ann", "attributes": {"plan": "free"}},
            {"email": "bob@example.com", "phone": "+4930123456", "tags": ["vip"]},
        ],
    )
    assert (first.created, first.updated, first.rejected) == (2, 0, [])
    clock.advance(hours=1)
    second = upsert(
        engine,
        clock,
        [
            {"email": "ann@example.com", "last_name": "Lee", "attributes": {"ltv": 120}},
            {"email": "bob@example.com", "first_name": "", "tags": ["new", "vip"]},
        ],
    )
    assert (second.created, second.updated) == (0, 2)
    found = contacts(engine)
    ann, bob = found["ann@example.com"], found["bob@example.com"]
    assert (ann["first_name"], ann["last_name"]) == ("Ann", "Lee")
    assert ann["attributes"] == {"plan": "free", "ltv": 120}
    assert ann["updated_at"] == clock.now() and ann["created_at"] < clock.now()
    assert bob["phone"] == "+4930123456" and bob["first_name"] is None
    assert bob["tags"] == ["new", "vip"]


def test_matches_by_external_id_and_can_change_the_email(engine: Engine, clock: FakeClock) -> None:
    upsert(engine, clock, [{"external_id": "u1", "email": "old@example.com"}])
    result = upsert(engine, clock, [{"external_id": "u1", "email": "new@example.com"}])
    assert (result.created, result.updated) == (0, 1)
    assert list(contacts(engine)) == ["new@example.com"]


def test_an_email_contact_gets_its_external_id(engine: Engine, clock: FakeClock) -> None:
    upsert(engine, clock, [{"email": "ann@example.com"}])
    upsert(engine, clock, [{"email": "ann@example.com", "external_id": "u1"}])
    assert contacts(engine)["ann@example.com"]["external_id"] == "u1"


def test_external_id_of_another_contact_is_rejected_the_rest_kept(
    engine: Engine, clock: FakeClock
) -> None:
    upsert(engine, clock, [{"email": "a@example.com", "external_id": "u1"}, {"email": "b@x.io"}])
    result = upsert(
        engine,
        clock,
        [
            {"email": "b@x.io", "external_id": "u1"},  # u1 is a@example.com
            {"email": "a@example.com", "external_id": "u2"},  # a already has u1
            {"email": "c@example.com", "first_name": "C"},
        ],
    )
    assert [(r.index, r.field) for r in result.rejected] == [(0, "external_id"), (1, "external_id")]
    assert "another contact" in result.rejected[0].message
    assert (result.created, result.updated) == (1, 0)
    found = contacts(engine)
    assert found["b@x.io"]["external_id"] is None
    assert found["a@example.com"]["external_id"] == "u1"


def test_duplicates_in_one_call_last_wins(engine: Engine, clock: FakeClock) -> None:
    result = upsert(
        engine,
        clock,
        [
            {"email": "ann@example.com", "first_name": "First"},
            {"email": "ANN@example.com", "first_name": "Last"},
            {"external_id": "x", "first_name": "One"},
            {"external_id": "x", "first_name": "Two"},
        ],
    )
    assert (result.created, result.updated, result.rejected) == (2, 0, [])
    found = contacts(engine)
    assert found["ann@example.com"]["first_name"] == "Last"
    assert found["x"]["first_name"] == "Two"


def test_bad_rows_are_rejected_with_index_and_reason(engine: Engine, clock: FakeClock) -> None:
    result = upsert(
        engine,
        clock,
        [
            {"email": "not-an-email"},
            {"email": "ok@example.com", "phone": "12"},
            {"first_name": "nobody"},
            {"email": "fine@example.com", "colour": "red"},
            {"email": "good@example.com"},
        ],
    )
    assert [(r.index, r.field) for r in result.rejected] == [
        (0, "email"),
        (1, "phone"),
        (2, "email"),
        (3, "colour"),
    ]
    assert result.created == 1
    assert list(contacts(engine)) == ["good@example.com"]


def test_list_membership_with_consent_for_new_members_only(
    engine: Engine, clock: FakeClock
) -> None:
    list_id = make_list(engine, clock)
    upsert(engine, clock, [{"email": "gone@example.com"}])
    with engine.begin() as conn:
        gone = conn.execute(select(tables.contacts.c.id)).scalar_one()
        now = clock.now()
        conn.execute(
            insert(tables.list_memberships).values(
                list_id=list_id,
                contact_id=gone,
                status="unsubscribed",
                created_at=now,
                updated_at=now,
            )
        )
    items = [{"email": "gone@example.com"}, {"email": "new@example.com"}]
    result = upsert(engine, clock, items, list_id=list_id, source="import:x.csv")
    again = upsert(engine, clock, items, list_id=list_id, source="import:x.csv")
    assert (result.subscribed, again.subscribed) == (1, 0)
    with engine.connect() as conn:
        m, c = tables.list_memberships, tables.consents
        statuses = dict(conn.execute(select(m.c.contact_id, m.c.status)).all())
        consents = conn.execute(select(c.c.contact_id, c.c.status, c.c.source)).all()
    new_id = contacts(engine)["new@example.com"]["id"]
    assert statuses == {gone: "unsubscribed", new_id: "subscribed"}  # never re-subscribed
    assert [tuple(r) for r in consents] == [(new_id, "subscribed", "import:x.csv")]


def test_pending_membership_writes_no_consent(engine: Engine, clock: FakeClock) -> None:
    list_id = make_list(engine, clock)
    upsert(engine, clock, [{"email": "a@example.com"}], list_id=list_id, status="pending")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.consents)).scalar() == 0
        status = conn.execute(select(tables.list_memberships.c.status)).scalar()
    assert status == "pending"


def test_many_rows_in_one_call(engine: Engine, clock: FakeClock) -> None:
    items = [{"email": f"user{i}@example.com", "tags": ["bulk"]} for i in range(3000)]
    assert upsert(engine, clock, items).created == 3000
    items[5]["attributes"] = {"n": 5}
    assert upsert(engine, clock, items).updated == 3000
    assert contacts(engine)["user5@example.com"]["attributes"] == {"n": 5}


def test_find_list(engine: Engine, clock: FakeClock) -> None:
    list_id = make_list(engine, clock, "vip")
    with engine.connect() as conn:
        assert bulk.find_list(conn, "vip") == list_id
        with pytest.raises(errors.NotFound):
            bulk.find_list(conn, "nope")


# -- the email fast path agrees with email-validator -----------------------------------

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
local_parts = st.text(alphabet=ATEXT, min_size=0, max_size=70)
labels = st.text(alphabet="abcxyzABC019-", min_size=0, max_size=66)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join) | st.sampled_from(
    ["example.com", "x.test", "a.local", "b.onion", "c.arpa", "xn--bcher-kva.de", "a.b1", "ex.c-m"]
)
noise = st.sampled_from(["", " ", "\t", "é", "@", "..", "\u00a0", '"', "[1.2.3.4]"])


def slow_email(value: str) -> str | None:
    try:
        return fields._checked_email(value, "email")
    except errors.InvalidInput:
        return None


@settings(max_examples=3000, deadline=None)
@given(local=local_parts, domain=domains, before=noise, after=noise)
@example(local="Ann.Lee", domain="Example.COM", before="", after="")
@example(local="a" * 65, domain="example.com", before="", after="")
@example(local="a", domain=("a" * 63 + ".") * 4 + "com", before="", after="")
def test_email_fast_path_agrees_with_email_validator(
    local: str, domain: str, before: str, after: str
) -> None:
    value = f"{before}{local}@{domain}{after}"
    fast = fields._fast_email(value.strip())
    if fast is not None:
        assert fast == slow_email(value)
    assert _public(value) == slow_email(value)


def _public(value: str) -> str | None:
    try:
        return fields.email(value)
    except errors.InvalidInput:
        return None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_email_fast_path_never_accepts_what_email_validator_refuses(value: str) -> None:
    fast = fields._fast_email(value.strip())
    assert fast is None or fast == slow_email(value)


def test_email_fast_path_takes_ordinary_addresses() -> None:
    for value in ["ann@example.com", "Ann.Lee+news@mail.Example.co.uk", "=1+2@example.com"]:
        assert fields._fast_email(value) == value.lower()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a@example.com", "b@example.com", "c@example.com"]),
            st.dictionaries(st.sampled_from("xyz"), st.integers(0, 9), max_size=2),
        ),
        max_size=8,
    )
)
def test_attributes_merge_like_a_dict_update(
    engine: Engine, clock: FakeClock, calls: list[tuple[str, dict[str, int]]]
) -> None:
    with engine.begin() as conn:
        conn.execute(tables.contact_tags.delete())
        conn.execute(tables.contacts.delete())
    expected: dict[str, dict[str, int]] = {}
    for email, attributes in calls:
        upsert(engine, clock, [{"email": email, "attributes": attributes}])
        expected.setdefault(email, {}).update(attributes)
    assert {e: c["attributes"] for e, c in contacts(engine).items()} == expected


# -- the E.164 fast path agrees with phonenumbers.parse ----------------------------------


def slow_phone(value: str, country: str | None) -> str | None:
    """`fields.phone` as it was before the fast path: parse, is_valid_number, format."""
    try:
        parsed = phonenumbers.parse(value, country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def _public_phone(value: str, country: str | None) -> str | None:
    try:
        return fields.phone(value, country)
    except errors.InvalidInput:
        return None


REGIONS = st.sampled_from([None, "DE", "US", "GB", "IT", "FR", "JP", "BR", "AR", "MX", "RU"])


@settings(max_examples=3000, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=0, max_size=19), country=REGIONS)
@example(digits="4930123456", country=None)
@example(digits="39061234567", country="IT")  # Italian leading zero
@example(digits="5491112345678", country=None)  # Argentine mobile with its 9
@example(digits="49030123456", country="DE")  # a national prefix after the country code
def test_phone_fast_path_agrees_with_phonenumbers(digits: str, country: str | None) -> None:
    value = f"+{digits}"
    fast = fields._parse_e164(value)
    if fast is not None:
        assert fast == phonenumbers.parse(value, country)
    assert _public_phone(value, country) == slow_phone(value, country)


def test_phone_fast_path_on_every_regions_example_numbers() -> None:
    taken = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example_number = phonenumbers.example_number_for_type(region, kind)
            if example_number is None:
                continue
            e164 = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.E164)
            fast = fields._parse_e164(e164)
            taken += fast is not None
            assert fast is None or fast == phonenumbers.parse(e164, None), e164
            assert _public_phone(e164, region) == slow_phone(e164, region)
    assert taken > 400  # nearly every region's numbers take the fast path


def test_one_call_updates_indexed_columns_of_some_contacts_only(
    engine: Engine, clock: FakeClock
) -> None:
    upsert(
        engine,
        clock,
        [
            {"email": "a@example.com", "phone": "+4930123456", "external_id": "a"},
            {"email": "b@example.com", "phone": "+4930123457"},
            {"email": "c@example.com", "external_id": "c"},
        ],
    )
    result = upsert(
        engine,
        clock,
        [
            {"email": "a@example.com", "phone": "+4930123456", "first_name": "A"},  # same
            {"email": "b@example.com", "phone": "+4930999999", "external_id": "b"},  # new
            {"external_id": "c", "email": "c2@example.com", "last_name": "C"},  # new email
        ],
    )
    assert (result.created, result.updated, result.rejected) == (0, 3, [])
    found = contacts(engine)
    a, b, c = found["a@example.com"], found["b@example.com"], found["c2@example.com"]
    assert (a["phone"], a["external_id"], a["first_name"]) == ("+4930123456", "a", "A")
    assert (b["phone"], b["external_id"]) == ("+4930999999", "b")
    assert (c["external_id"], c["last_name"]) == ("c", "C")
    assert a["updated_at"] == b["updated_at"] == c["updated_at"] == clock.now()


def test_nul_characters_reject_the_row_naming_the_field() -> None:
    """Neither database stores U+0000: the row is rejected with a reason, others are kept."""
    prepared = bulk.prepare(
        [
            {"email": "a@example.com", "first_name": "A\x00na"},
            {"email": "b@example.com", "attributes": {"notes": ["ok", "x\x00"]}},
            {"email": "c@example.com", "tags": ["v\x00ip"]},
            {"email": "d@example.com", "attributes": {"path": "C:\\u0000"}},  # a backslash
        ]
    )
    assert [(r.index, r.field) for r in prepared.rejected] == [
        (0, "first_name"),
        (1, "attributes.notes[1]"),
        (2, "tags[0]"),
    ]
    assert [row.email for row in prepared.rows] == ["d@example.com"]
