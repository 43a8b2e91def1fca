"""The CLI's own commands; errors end with one line on stderr and exit code 2."""

import pytest
from sqlalchemy import Engine

from tidings import cli, keys
from tidings.keys import KeyVerifier


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, db_url: str) -> int:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", db_url)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    return int(exit_.value.code or 0)


def test_keys_create_prints_a_working_key_once(
    monkeypatch: pytest.MonkeyPatch, db_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create", "--scope", "write", "--name", "shop"], monkeypatch, db_url) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert KeyVerifier(engine, 0).verify(secret).scope == "write"
    assert "shown once" in out.err
    assert run(["keys", "list"], monkeypatch, db_url) == 0
    listing = capsys.readouterr().out
    assert keys.prefix_of(secret) in listing and secret not in listing


def test_bad_scope_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create", "--scope", "root"], monkeypatch, db_url) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: scope") and "\n" not in err


def test_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDINGS_LOG_LEVEL", "LOUD")
    assert run(["keys", "list"], monkeypatch, db_url) == 2
    assert capsys.readouterr().err.startswith("error: setting log_level")


def test_revoking_an_unknown_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "revoke", "tid_nothere"], monkeypatch, db_url) == 2
    assert "tid_nothere" in capsys.readouterr().err


def test_db_upgrade_is_idempotent(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    assert run(["db", "upgrade"], monkeypatch, db_url) == 0
    assert run(["db", "upgrade"], monkeypatch, db_url) == 0


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    assert run(["keys", "create"], monkeypatch, db_url) == 2  # --scope missing
