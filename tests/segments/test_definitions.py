"""Segment definitions: checked in full (paths), references and cycles refused, nothing
stored on error, built at once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from tests.segments.factories import make_contact, members
from tidings import errors
from tidings.clock import FakeClock
from tidings.db import tables
from tidings.segments import definitions


def seg(conn: Connection, clock: FakeClock, key: str, rule: Any) -> dict[str, Any]:
    return definitions.create(conn, clock, {"key": key, "name": key.title(), "rule": rule})


def field_of(exc: pytest.ExceptionInfo[errors.InvalidInput]) -> list[str]:
    return [f.field for f in exc.value.fields]


def test_create_builds_at_once(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        de = make_contact(conn, clock, country="DE")
        make_contact(conn, clock, country="FR")
        made = seg(conn, clock, "germany", {"attribute": "country", "eq": "DE"})
        assert made["member_count"] == 1
        assert made["rebuilt_at"] == clock.now()
        assert members(conn, "germany") == {de}
        assert [s["key"] for s in definitions.list_all(conn)] == ["germany"]
        assert definitions.get(conn, "germany")["rule"] == {"attribute": "country", "eq": "DE"}


def test_bad_rules_name_their_path_and_store_nothing(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        rule = {"all": [{"tag": "vip"}, {"score": {"gte": 1}}, {"attribute": "country", "zz": 1}]}
        with pytest.raises(errors.InvalidInput) as bad:
            seg(conn, clock, "bad", rule)
        assert field_of(bad) == ["rule.all[2].attribute.zz"]
        with pytest.raises(errors.InvalidInput) as unknown:
            seg(conn, clock, "bad", {"any": [{"tag": "x"}, {"segment": "nope"}]})
        assert field_of(unknown) == ["rule.any[1].segment"]
        with pytest.raises(errors.InvalidInput) as key:
            seg(conn, clock, "Not A Slug", {"tag": "x"})
        assert field_of(key) == ["key"]
        with pytest.raises(errors.InvalidInput):
            definitions.create(conn, clock, {"key": "x", "rule": {"tag": "x"}})
        assert conn.execute(select(func.count()).select_from(tables.segments)).scalar() == 0


def test_cycles_are_refused_with_the_path(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        seg(conn, clock, "a", {"tag": "x"})
        seg(conn, clock, "b", {"all": [{"tag": "y"}, {"segment": "a"}]})
        seg(conn, clock, "c", {"segment": "b"})
        with pytest.raises(errors.InvalidInput) as loop:
            definitions.update_segment(conn, clock, "a", {"rule": {"not": {"segment": "c"}}})
        assert field_of(loop) == ["rule.not.segment"]
        assert "a -> c -> b -> a" in loop.value.message
        with pytest.raises(errors.InvalidInput) as itself:
            seg(conn, clock, "d", {"any": [{"tag": "x"}, {"segment": "d"}]})
        assert field_of(itself) == ["rule.any[1].segment"]
        assert definitions.get(conn, "a")["rule"] == {"tag": "x"}


def test_update_rebuilds_and_delete_respects_users(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        vip = make_contact(conn, clock, score=60)
        seg(conn, clock, "base", {"score": {"gte": 100}})
        seg(conn, clock, "top", {"segment": "base"})
        assert members(conn, "base") == set()
        clock.advance(minutes=1)
        changed = definitions.update_segment(conn, clock, "base", {"rule": {"score": {"gte": 50}}})
        assert changed["member_count"] == 1 and changed["updated_at"] == clock.now()
        assert members(conn, "base") == {vip}
        assert definitions.update_segment(conn, clock, "base", {"name": "Base!"})["name"] == "Base!"
        with pytest.raises(errors.Conflict):
            definitions.delete_segment(conn, "base")
        definitions.delete_segment(conn, "top")
        definitions.delete_segment(conn, "base")
        with pytest.raises(errors.NotFound):
            definitions.get(conn, "base")
        assert (
            conn.execute(select(func.count()).select_from(tables.segment_memberships)).scalar() == 0
        )


def test_taken_key_is_a_conflict(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        seg(conn, clock, "a", {"tag": "x"})
        with pytest.raises(errors.Conflict):
            seg(conn, clock, "a", {"tag": "y"})
