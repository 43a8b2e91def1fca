import pytest
from pydantic import ValidationError

from tidings import errors
from tidings.config import DEFAULT_SECRET, Settings


def test_every_setting_is_documented() -> None:
    undocumented = [
        n for n, f in Settings.model_fields.items() if not (f.description or "").strip()
    ]
    assert undocumented == []


def test_settings_come_from_tidings_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("TIDINGS_MAX_EVENT_BYTES", "4096")
    settings = Settings()
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.max_event_bytes == 4096


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises((errors.ConfigError, ValidationError)):
        Settings(env="production")
    assert Settings(env="production", secret_key="s" * 40).env == "production"  # type: ignore[arg-type]
    assert Settings().secret_key.get_secret_value() == DEFAULT_SECRET


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_DB_POOL_SIZE", "0")
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings()
