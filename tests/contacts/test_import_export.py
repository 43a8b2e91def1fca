"""CSV import (header recognition, mapping, rejects, idempotence, resume) and export
(formula neutralisation, round trip)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tests.contacts.test_bulk import contacts, make_list
from tidings import errors
from tidings.clock import FakeClock
from tidings.contacts import bulk, exporter, importer
from tidings.db import tables

MAILCHIMP = (
    "\ufeff"
    '"Email Address","First Name","Last Name","Phone Number",MEMBER_RATING,OPTIN_TIME,'
    "LATITUDE,TIMEZONE,CC,LEID,TAGS\n"
    'ann@example.com,Ann,Lee,+4930123456,2,"2024-01-01 10:00:00",52.52,'
    'Europe/Berlin,DE,111,"""Customer"",""VIP"""\n'
    "not-an-email,Bob,Smith,,1,,,,,222,\n"
    'eve@example.com,Eve,,030 1234567,5,,,,DE,333,"""VIP"""\n'
    "carl@example.com,Carl,,12,,,,,,444,\n"
)

HUBSPOT = (
    "Record ID;First Name;Last Name;Email;Phone Number;Lifecycle Stage;Country/Region;"
    "Time Zone;Lead Status;Create Date\n"
    "501;Ann;Lee;ANN@example.com;;customer;Germany;America/New_York;Open;2024-02-01\n"
    "502;Dan;Ray;dan@example.com;;lead;US;;New;2024-02-02\n"
)


def write(tmp_path: Path, text: str, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def run(engine: Engine, clock: FakeClock, path: Path, **kw: Any) -> importer.ImportReport:
    job_keys = {"list_key", "mapping", "rejects_path"}
    job = importer.ImportJob(path, **{k: v for k, v in kw.items() if k in job_keys})
    rest = {k: v for k, v in kw.items() if k not in job_keys}
    return importer.import_csv(engine, clock, job, **rest)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_mailchimp_export(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    path = write(tmp_path, MAILCHIMP)
    report = run(engine, clock, path)
    assert (report.rows, report.created, report.rejected) == (4, 2, 2)
    found = contacts(engine)
    ann, eve = found["ann@example.com"], found["eve@example.com"]
    assert (ann["first_name"], ann["last_name"], ann["phone"]) == ("Ann", "Lee", "+4930123456")
    assert (ann["timezone"], ann["country"], ann["tags"]) == (
        "Europe/Berlin",
        "DE",
        ["Customer", "VIP"],
    )
    assert ann["attributes"] == {
        "member_rating": "2",
        "optin_time": "2024-01-01 10:00:00",
        "latitude": "52.52",
        "leid": "111",
    }
    assert eve["phone"] == "+49301234567"  # national number read in the contact's country
    rejects = read_csv(tmp_path / "contacts.rejects.csv")
    assert [r["Email Address"] for r in rejects] == ["not-an-email", "carl@example.com"]
    assert rejects[0]["LEID"] == "222" and rejects[0]["reason"].startswith("email:")
    assert rejects[1]["reason"].startswith("phone:")


def test_hubspot_export_with_semicolons(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    report = run(engine, clock, write(tmp_path, HUBSPOT))
    assert (report.created, report.rejected) == (2, 0)
    ann = contacts(engine)["ann@example.com"]
    assert (ann["external_id"], ann["lifecycle_stage"], ann["country"]) == ("501", "customer", "DE")
    assert ann["timezone"] == "America/New_York"
    assert ann["attributes"] == {"lead_status": "Open", "create_date": "2024-02-01"}
    assert contacts(engine)["dan@example.com"]["country"] == "US"


def test_tab_separated(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    path = write(tmp_path, "email\tfirst_name\tPlan\na@example.com\tA\tpro\n")
    run(engine, clock, path)
    assert contacts(engine)["a@example.com"]["attributes"] == {"plan": "pro"}


def test_mapping_overrides(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'Mail,Name,Segments,Phone Number,Internal\nann@example.com,Ann,"a, b",garbage,x\n',
    )
    mapping = importer.parse_mapping(
        [
            "Mail=email",
            "name=first_name",
            "Segments=tags",
            "Phone Number=ignore",
            "Internal=attributes.note",
        ]
    )
    report = run(engine, clock, path, mapping=tuple(mapping.items()))
    assert (report.created, report.rejected) == (1, 0)
    ann = contacts(engine)["ann@example.com"]
    assert (ann["first_name"], ann["phone"], ann["tags"]) == ("Ann", None, ["a", "b"])
    assert ann["attributes"] == {"note": "x"}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["Mail=colour"], "'colour' is not a field"),
        (["Mail"], "is not column=field"),
        (["Mail=attributes."], "is not a field"),
    ],
)
def test_bad_mapping(pairs: list[str], message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        importer.parse_mapping(pairs)


def test_mapping_of_a_missing_column_changes_nothing(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    path = write(tmp_path, MAILCHIMP)
    with pytest.raises(errors.InvalidInput, match="no column 'nope'"):
        run(engine, clock, path, mapping=(("nope", "email"),))
    with pytest.raises(errors.NotFound):
        run(engine, clock, path, list_key="missing")
    assert contacts(engine) == {}


def test_reimport_is_idempotent(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    path = write(tmp_path, MAILCHIMP)
    list_id = make_list(engine, clock)
    first = run(engine, clock, path, list_key="news")
    second = run(engine, clock, path, list_key="news")
    assert (first.created, first.updated, first.subscribed) == (2, 0, 2)
    assert (second.created, second.updated, second.subscribed) == (0, 2, 0)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(tables.contacts)).scalar()
        consent = conn.execute(select(tables.consents.c.source, tables.consents.c.list_id)).all()
    assert count == 2
    assert {tuple(c) for c in consent} == {("import:contacts.csv", list_id)}
    assert len(read_csv(tmp_path / "contacts.rejects.csv")) == 2  # rewritten, not appended


class Interrupt(Exception):
    pass


def test_resume_after_an_interrupt(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    lines = ["email,first_name"] + [f"user{i}@example.com,U{i}" for i in range(25)]
    lines[8] = "broken,Bad"
    path = write(tmp_path, "\n".join(lines) + "\n")

    def stop_after_first(done: int, total: int) -> None:
        assert 0 < done < total
        raise Interrupt

    with pytest.raises(Interrupt):
        run(engine, clock, path, chunk_rows=10, progress=stop_after_first)
    assert len(contacts(engine)) == 9  # the first chunk is committed, one reject
    job = importer.ImportJob(path)
    assert importer.progress_file_exists(job)

    seen: list[int] = []
    report = run(
        engine, clock, path, chunk_rows=10, resume=True, progress=lambda d, t: seen.append(d)
    )
    assert report.resumed_at_row == 10
    assert (report.rows, report.created, report.updated, report.rejected) == (25, 24, 0, 1)
    assert seen[-1] == path.stat().st_size
    assert len(contacts(engine)) == 24
    assert not importer.progress_file_exists(job)  # done: nothing left to resume
    assert [r["email"] for r in read_csv(tmp_path / "contacts.rejects.csv")] == ["broken"]


def test_should_stop_ends_after_the_current_chunk(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    path = write(tmp_path, "email\n" + "".join(f"u{i}@example.com\n" for i in range(30)))
    report = run(engine, clock, path, chunk_rows=10, should_stop=lambda: True)
    assert report.interrupted and report.rows == 10
    report = run(engine, clock, path, chunk_rows=10, resume=True)
    assert not report.interrupted and (report.rows, report.created) == (30, 30)


def test_missing_and_empty_files(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match="does not exist"):
        run(engine, clock, tmp_path / "nope.csv")
    with pytest.raises(errors.InvalidInput, match="is empty"):
        run(engine, clock, write(tmp_path, ""))


def test_recognised_headers() -> None:
    header = ["Email Address", "TIMEZONE", "Time Zone", "CC", "Record ID", "TAGS", "State/Region"]
    plan = importer.plan_columns(header, {})
    assert [(c.kind, c.name) for c in plan] == [
        ("profile", "email"),
        ("profile", "timezone"),
        ("profile", "timezone"),
        ("profile", "country"),
        ("profile", "external_id"),
        ("tags", ""),
        ("attribute", "state_region"),
    ]
    assert importer.snake_case("leadStatus") == "lead_status"


# -- export -----------------------------------------------------------------------------


def export(engine: Engine, **kw: Any) -> str:
    out = io.StringIO()
    exporter.export_csv(engine, out, **kw)
    return out.getvalue()


def test_export_neutralises_formulas(engine: Engine, clock: FakeClock) -> None:
    with engine.begin() as conn:
        bulk.upsert(
            conn,
            clock,
            [
                {
                    "email": "=1+2@example.com",
                    "first_name": "@SUM(A1)",
                    "last_name": "-2+3",
                    "phone": "+4930123456",
                    "attributes": {"cmd": "=cmd|' /C calc'!A0", "n": -1},
                    "tags": ["+x"],
                }
            ],
        )
    rows = list(csv.DictReader(io.StringIO(export(engine))))
    assert rows[0]["email"] == "'=1+2@example.com"
    assert (rows[0]["first_name"], rows[0]["last_name"]) == ("'@SUM(A1)", "'-2+3")
    assert rows[0]["phone"] == "+4930123456"  # a plain number cannot run anything
    assert rows[0]["attributes.cmd"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["attributes.n"] == "-1" and rows[0]["tags"] == "'+x"


@pytest.mark.parametrize("cell", ["=x", "'=x", "''=x", "'t Hooft", "''", "-", "\t1", "a=b"])
def test_neutralise_and_unescape_are_inverse(cell: str) -> None:
    assert exporter.unescape(exporter.neutralise(cell)) == cell
    assert exporter.neutralise(cell)[:1] not in ("=", "+", "-", "@", "\t", "\r")


def test_export_filters_by_list(engine: Engine, clock: FakeClock) -> None:
    list_id = make_list(engine, clock)
    with engine.begin() as conn:
        bulk.upsert(conn, clock, [{"email": "in@example.com"}], list_id=list_id)
        bulk.upsert(conn, clock, [{"email": "out@example.com", "attributes": {"a": 1}}])
    rows = list(csv.DictReader(io.StringIO(export(engine, list_key="news"))))
    assert [r["email"] for r in rows] == ["in@example.com"]
    assert "attributes.a" not in rows[0]
    with pytest.raises(errors.NotFound):
        export(engine, list_key="nope")


texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
tags = st.text(
    st.characters(blacklist_categories=("Cs", "Z", "Cc"), blacklist_characters=',"\x00'),
    min_size=1,
    max_size=8,
)
attribute_values = st.one_of(
    texts,
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=2),
)
people = st.lists(
    st.fixed_dictionaries(
        {
            "first_name": texts,
            "last_name": texts,
            "lifecycle_stage": texts,
            "attributes": st.dictionaries(
                st.sampled_from(["plan", "note", "a.b", "x y"]), attribute_values, max_size=3
            ),
            "tags": st.lists(tags, max_size=3),
        }
    ),
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=people)
def test_export_then_import_gives_the_same_contacts(
    engine: Engine, clock: FakeClock, tmp_path: Path, people: list[dict[str, Any]]
) -> None:
    _empty(engine)
    items = [
        {"email": f"p{i}@example.com", "external_id": f"x{i}", **p} for i, p in enumerate(people)
    ]
    items.append({"email": "=1+2@example.com", "phone": "+4930123456", "country": "DE"})
    with engine.begin() as conn:
        assert not bulk.upsert(conn, clock, items).rejected
    before = _comparable(contacts(engine))
    path = tmp_path / "export.csv"
    path.write_text(export(engine), encoding="utf-8", newline="")
    _empty(engine)
    report = run(engine, clock, path)
    assert report.rejected == 0
    assert _comparable(contacts(engine)) == before


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (
            tables.contact_tags,
            tables.consents,
            tables.list_memberships,
            tables.contacts,
        ):
            conn.execute(table.delete())


def _comparable(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    skip = {"id", "created_at", "updated_at"}
    return {k: {f: v for f, v in c.items() if f not in skip} for k, c in found.items()}


# -- the helper process gives the same results as reading in this process ---------------

MIXED = (
    "External ID,Email,Phone Number,Notes,CC,TAGS\n"
    'u1,one@example.com,+4930123456,"two\nlines",DE,"""A"",""B"""\n'
    "u2,bad-email,,x,,\n"
    "\n"
    "u3,three@example.com,030 1234567,,DE,C\n"
    "u4,taken@example.com,,,,\n"  # taken@ belongs to another contact
    'u5,five@example.com,12,"a ""quoted"" cell",,\n'
    "u6,six@example.com,,,XX,\n"
    "u7,seven@example.com,,,,D\n"
)


def _outcome(engine: Engine, tmp_path: Path, report: importer.ImportReport) -> Any:
    rejects = tmp_path / "contacts.rejects.csv"
    found = _comparable(contacts(engine))
    return report, found, rejects.read_text(encoding="utf-8") if rejects.exists() else None


@pytest.mark.parametrize("chunk_rows", [2, 5000])
def test_helper_process_gives_the_same_results(
    engine: Engine, clock: FakeClock, tmp_path: Path, chunk_rows: int
) -> None:
    path = write(tmp_path, MIXED)
    outcomes = []
    for helper_process in (False, True):
        _empty(engine)
        with engine.begin() as conn:
            bulk.upsert(conn, clock, [{"email": "taken@example.com", "external_id": "u0"}])
        first = run(engine, clock, path, chunk_rows=chunk_rows, helper_process=helper_process)
        assert (first.rows, first.created, first.rejected) == (7, 3, 4)
        second = run(engine, clock, path, chunk_rows=chunk_rows, helper_process=helper_process)
        outcomes.append((first, *_outcome(engine, tmp_path, second)))
    assert outcomes[0] == outcomes[1]
    rejects = read_csv(tmp_path / "contacts.rejects.csv")
    assert [(r["External ID"], r["reason"].split(":")[0]) for r in rejects] == [
        ("u2", "email"),
        ("u4", "external_id"),  # found by the database step: its cells are read again
        ("u5", "phone"),
        ("u6", "country"),
    ]
    assert rejects[1]["Email"] == "taken@example.com"
    assert contacts(engine)["one@example.com"]["attributes"] == {"notes": "two\nlines"}


def test_resume_with_the_helper_process(engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    lines = ["email,first_name"] + [f"user{i}@example.com,U{i}" for i in range(25)]
    lines[8] = "broken,Bad"
    path = write(tmp_path, "\n".join(lines) + "\n")

    def stop_after_first(done: int, total: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        run(engine, clock, path, chunk_rows=10, progress=stop_after_first, helper_process=True)
    assert len(contacts(engine)) == 9
    report = run(engine, clock, path, chunk_rows=10, resume=True, helper_process=True)
    assert report.resumed_at_row == 10
    assert (report.rows, report.created, report.updated, report.rejected) == (25, 24, 0, 1)
    assert [r["email"] for r in read_csv(tmp_path / "contacts.rejects.csv")] == ["broken"]


def test_helper_process_reports_file_errors(
    engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,first_name\n" + b"a@example.com,A\n" * 30 + b"b@example.com,J\xf6rg\n")
    with pytest.raises(errors.InvalidInput, match="not UTF-8 near byte"):
        run(engine, clock, path, chunk_rows=10, helper_process=True)
    assert len(contacts(engine)) == 1  # the chunks before the bad line are committed


def test_large_files_use_the_helper_process(
    engine: Engine, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.contacts import import_reading

    chosen: list[bool] = []
    real = import_reading.chunks_ahead

    def spy(source: import_reading.CsvSource, helper_process: bool) -> Any:
        chosen.append(helper_process)
        return real(source, helper_process)

    monkeypatch.setattr(importer, "chunks_ahead", spy)
    monkeypatch.setattr(importer, "HELPER_PROCESS_BYTES", 100)
    path = write(tmp_path, "email\n" + "".join(f"u{i}@example.com\n" for i in range(3)))
    run(engine, clock, path)
    path = write(tmp_path, "email\n" + "".join(f"u{i}@example.com\n" for i in range(30)))
    run(engine, clock, path)
    assert chosen == [False, True]
