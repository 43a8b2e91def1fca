"""`tidings segments list | apply | rebuild`."""

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from tidings import cli
from tidings.clock import FakeClock
from tidings.db import tables


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, db_url: str) -> int:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", db_url)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return int(exit_.value.code or 0)


def add_contact(engine: Engine, clock: FakeClock, country: str) -> None:
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            insert(tables.contacts).values(
                country=country, attributes={}, created_at=now, updated_at=now
            )
        )


def test_apply_creates_then_updates_and_rebuild_counts(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_contact(engine, clock, "DE")
    add_contact(engine, clock, "FR")
    file = tmp_path / "segments.json"
    file.write_text(
        json.dumps(
            [
                {"key": "germany", "name": "Germany", "rule": {"attribute": "country", "eq": "DE"}},
                {"key": "not-germany", "name": "Rest", "rule": {"not": {"segment": "germany"}}},
            ]
        )
    )
    assert run(["segments", "apply", str(file)], monkeypatch, db_url) == 0
    assert "Created segment germany." in capsys.readouterr().out
    assert run(["segments", "apply", str(file)], monkeypatch, db_url) == 0  # idempotent
    assert "Updated segment not-germany." in capsys.readouterr().out
    assert run(["segments", "list"], monkeypatch, db_url) == 0
    listing = capsys.readouterr().out
    assert "germany" in listing and "not-germany" in listing
    assert run(["segments", "rebuild", "germany"], monkeypatch, db_url) == 0
    assert "0 membership changes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('[{"key": "x", "name": "X", "rule": {"bogus": 1}}]', "rule.bogus"),
        ('[{"key": "x", "name": "X", "rule": {"segment": "nowhere"}}]', "nowhere"),
    ],
)
def test_bad_files_are_one_line_exit_2_and_store_nothing(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    file = tmp_path / "bad.json"
    file.write_text(content)
    assert run(["segments", "apply", str(file)], monkeypatch, db_url) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err
    with engine.connect() as conn:
        assert conn.execute(tables.segments.select()).first() is None


def test_missing_file_and_unknown_segment_exit_2(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    assert run(["segments", "apply", str(tmp_path / "none.json")], monkeypatch, db_url) == 2
    assert run(["segments", "rebuild", "nowhere"], monkeypatch, db_url) == 2
