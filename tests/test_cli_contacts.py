"""`tidings contacts import/export`: results, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.contacts.test_bulk import contacts, make_list
from tidings import cli
from tidings.clock import FakeClock

CSV = "Email Address,First Name,TAGS\nann@example.com,Ann,vip\nbroken,Bob,\n"


@pytest.fixture
def runner(db_url: str) -> CliRunner:
    return CliRunner(env={"TIDINGS_DATABASE_URL": db_url})


def test_import_then_export(
    runner: CliRunner, engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    make_list(engine, clock, "news")
    path = tmp_path / "mc.csv"
    path.write_text(CSV)
    result = runner.invoke(cli.app, ["contacts", "import", str(path), "--list", "news"])
    assert result.exit_code == 0, result.output
    assert "2 rows: 1 created, 0 updated, 1 rejected." in result.stdout
    assert contacts(engine)["ann@example.com"]["tags"] == ["vip"]
    assert (tmp_path / "mc.rejects.csv").exists()

    out = tmp_path / "out.csv"
    result = runner.invoke(cli.app, ["contacts", "export", "--out", str(out), "--list", "news"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert [(r["email"], r["first_name"], r["tags"]) for r in rows] == [
        ("ann@example.com", "Ann", "vip")
    ]


def test_import_with_map_and_rejects_path(
    runner: CliRunner, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("Mail,Nick\nann@example.com,annie\n")
    rejects = tmp_path / "bad" / "r.csv"
    rejects.parent.mkdir()
    args = ["contacts", "import", str(path), "--map", "Mail=email", "--map", "Nick=attributes.nick"]
    result = runner.invoke(cli.app, [*args, "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    assert contacts(engine)["ann@example.com"]["attributes"] == {"nick": "annie"}
    assert not rejects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.csv"], "error: file: nope.csv does not exist"),
        (["{csv}", "--map", "TAGS=colour"], "error: --map: 'colour' is not a field"),
        (["{csv}", "--map", "Missing=email"], "error: --map: no column 'missing' in the file"),
        (["{csv}", "--list", "nope"], "error: No list with key 'nope'."),
    ],
)
def test_import_errors_exit_2_with_one_line(
    runner: CliRunner, engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "mc.csv"
    path.write_text(CSV)
    args = [a.replace("{csv}", str(path)) for a in args]
    result = runner.invoke(cli.app, ["contacts", "import", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert contacts(engine) == {}


def test_export_unknown_list_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["contacts", "export", "--list", "nope"])
    assert result.exit_code == 2
    assert result.stderr == "error: No list with key 'nope'.\n"
