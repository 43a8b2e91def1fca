"""`tidings flows apply | list | show | activate | pause | resume | archive | enrol |
move-runs | stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, func, insert, select

from tidings import cli
from tidings.clock import FakeClock
from tidings.db import tables

WELCOME = """\
key: welcome
name: Welcome series
trigger: api
steps:
  - id: hello
    send_email: {template: welcome-1}
  - wait: 2d
  - id: opened
    if: {opened: hello}
    then: [{send_email: {template: welcome-tips}}]
    else: [{send_email: {template: welcome-again}}]
"""

CART = {
    "key": "cart",
    "name": "Abandoned cart",
    "trigger": {"event": "Cart Updated"},
    "entry": {"reentry": "after_exit", "key": "properties.cart_id"},
    "steps": [{"id": "pause", "wait": "1h"}, {"id": "remind", "send_email": {"template": "cart"}}],
}


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, db_url: str) -> int:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables and problem lines stay whole
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return int(exit_.value.code or 0)


def flow_files(tmp_path: Path, **extra: str) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "welcome.yaml").write_text(WELCOME)
    (folder / "cart.json").write_text(json.dumps(CART))
    for name, text in extra.items():
        (folder / name.replace("_", ".")).write_text(text)
    return folder


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_apply_a_directory_then_read_and_manage_it(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = flow_files(tmp_path)
    assert run(["flows", "apply", str(folder)], monkeypatch, db_url) == 0
    out = capsys.readouterr().out
    assert "created welcome (version 1, draft)" in out and "created cart" in out
    assert run(["flows", "apply", str(folder), "--activate"], monkeypatch, db_url) == 0
    out = capsys.readouterr().out
    assert "unchanged welcome (version 1, active)" in out
    (folder / "welcome.yaml").write_text(WELCOME.replace("Welcome series", "Welcome!"))
    assert run(["flows", "apply", str(folder / "welcome.yaml")], monkeypatch, db_url) == 0
    assert "updated welcome (version 2, active)" in capsys.readouterr().out
    assert count(engine, tables.flow_versions) == 3

    assert run(["flows", "list"], monkeypatch, db_url) == 0
    listing = capsys.readouterr().out
    assert "welcome" in listing and "Cart Updated" in listing and "active" in listing

    assert run(["flows", "show", "welcome", "--version", "1"], monkeypatch, db_url) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# welcome: active, version 1 of 2")
    document = yaml.safe_load(shown)
    assert document["name"] == "Welcome series"
    assert list(document)[:2] == ["key", "name"]
    assert all(list(step)[0] == "id" for step in document["steps"])
    # what show prints applies as it is, and is the stored version
    (tmp_path / "shown.yaml").write_text(shown)
    assert run(["flows", "apply", str(tmp_path / "shown.yaml")], monkeypatch, db_url) == 0
    assert "updated welcome (version 3, active)" in capsys.readouterr().out
    assert run(["flows", "show", "cart", "--format", "json"], monkeypatch, db_url) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["entry"] == CART["entry"]
    assert "cart: active, version 1 of 1" in captured.err

    assert run(["flows", "pause", "cart"], monkeypatch, db_url) == 0
    assert "Flow cart is paused." in capsys.readouterr().out
    assert run(["flows", "pause", "cart"], monkeypatch, db_url) == 2
    assert "is paused" in capsys.readouterr().err
    assert run(["flows", "resume", "cart"], monkeypatch, db_url) == 0
    assert run(["flows", "archive", "cart"], monkeypatch, db_url) == 0
    assert "0 runs in progress exited." in capsys.readouterr().out
    assert run(["flows", "activate", "cart"], monkeypatch, db_url) == 2
    assert run(["flows", "show", "nowhere"], monkeypatch, db_url) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_directory_with_a_bad_file_stores_nothing(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = WELCOME.replace("key: welcome", "key: broken").replace("wait: 2d", "wait: soon")
    bad = bad.replace("template: welcome-tips", "template: Not A Slug")
    folder = flow_files(tmp_path, bad_yaml=bad)
    assert run(["flows", "apply", str(folder)], monkeypatch, db_url) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) >= 2
    assert all("bad.yaml: steps[" in line for line in lines), lines
    assert any("steps[1].wait" in line for line in lines)
    assert any("steps[2].then[0].send_email.template" in line for line in lines)
    assert count(engine, tables.flows) == count(engine, tables.flow_versions) == 0


def test_a_key_in_two_files_stores_nothing(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = flow_files(tmp_path, copy_json=json.dumps(CART))
    assert run(["flows", "apply", str(folder)], monkeypatch, db_url) == 2
    err = capsys.readouterr().err
    assert "key: flow 'cart' is defined in more than one file" in err
    assert count(engine, tables.flows) == 0
    assert run(["flows", "apply", str(tmp_path / "none.yaml")], monkeypatch, db_url) == 2


def test_enrol_stats_and_move_runs(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    engine: Engine,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = clock.now()
    with engine.begin() as conn:
        people = [
            int(
                conn.execute(
                    insert(tables.contacts)
                    .values(attributes={}, created_at=now, updated_at=now)
                    .returning(tables.contacts.c.id)
                ).scalar_one()
            )
            for _ in range(2)
        ]
    folder = flow_files(tmp_path)
    assert run(["flows", "apply", str(folder), "--activate"], monkeypatch, db_url) == 0
    argv = ["flows", "enrol", "welcome", *map(str, people), "--properties", '{"a": 1}']
    assert run(argv, monkeypatch, db_url) == 0
    assert "Enrolled 2, skipped 0." in capsys.readouterr().out
    assert run(["flows", "enrol", "welcome", str(people[0])], monkeypatch, db_url) == 0
    assert f"contact {people[0]}: " in capsys.readouterr().out
    assert run(["flows", "enrol", "welcome", "999999"], monkeypatch, db_url) == 2
    assert "contact_ids[0]" in capsys.readouterr().err
    bad_json = ["flows", "enrol", "welcome", "1", "--properties", "[1]"]
    assert run(bad_json, monkeypatch, db_url) == 2
    assert "--properties" in capsys.readouterr().err

    assert run(["flows", "stats", "welcome"], monkeypatch, db_url) == 0
    out = capsys.readouterr().out
    assert "opened" in out and "Runs: 2 entered, 2 in progress" in out
    assert run(["flows", "move-runs", "welcome"], monkeypatch, db_url) == 0
    assert "Moved 0 runs to version 1." in capsys.readouterr().out
    assert run(["flows", "move-runs", "welcome", "--to-version", "5"], monkeypatch, db_url) == 2
    assert run(["flows", "stats", "nowhere"], monkeypatch, db_url) == 2
