"""Configuration: the contract's names and Go-style durations, read in-process."""

from pathlib import Path

import pytest

from common.settings import load_settings
from routine.settings import RoutineSettings

pytestmark = pytest.mark.unit

BASE_ENV = {
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_DB": "postgres",
    "POSTGRES_USER": "postgres",
}


def test_durations_and_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in {**BASE_ENV, "ROUTINE_INTERVAL": "1m30s", "OBJECT_TTL": "500ms"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(RoutineSettings, "routine")
    assert settings.routine_interval == 90.0
    assert settings.object_ttl == 0.5
    assert (
        settings.routine_batch_pause == RoutineSettings.model_fields["routine_batch_pause"].default
    )
    assert settings.postgres_port == 5432
    assert settings.postgres_dsn == "postgresql://postgres@127.0.0.1:5432/postgres"


def test_dotenv_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "POSTGRES_HOST=db\nPOSTGRES_DB=lastseen\nPOSTGRES_USER=u\nPOSTGRES_PASSWORD=p@ss/word\n"
        "ROUTINE_INTERVAL=3s\n"
    )
    monkeypatch.setenv("ROUTINE_INTERVAL", "7")
    settings = load_settings(RoutineSettings, "routine")
    assert settings.routine_interval == 7.0
    assert settings.postgres_dsn == "postgresql://u:p%40ss%2Fword@db:5432/lastseen"


@pytest.mark.parametrize(
    ("value", "seconds"), [("50ms", 0.05), ("0", 0.0), ("0.2", 0.2), ("10s", 10)]
)
def test_the_pause_between_delete_batches_is_a_duration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, seconds: float
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, setting in {**BASE_ENV, "ROUTINE_BATCH_PAUSE": value}.items():
        monkeypatch.setenv(name, setting)
    assert load_settings(RoutineSettings, "routine").routine_batch_pause == seconds
