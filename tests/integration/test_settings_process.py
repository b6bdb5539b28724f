"""Configuration: the contract's names, Go-style durations, and one clean line on bad values."""

from pathlib import Path

import pytest

from tests.support.processes import run_module

BASE_ENV = {
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_DB": "postgres",
    "POSTGRES_USER": "postgres",
}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("overrides", "variable", "expectation"),
    [
        ({"ROUTINE_INTERVAL": "soon"}, "ROUTINE_INTERVAL", "duration such as 3s"),
        ({"ROUTINE_INTERVAL": "-3s"}, "ROUTINE_INTERVAL", "duration such as 3s"),
        ({"ROUTINE_INTERVAL": "0s"}, "ROUTINE_INTERVAL", "greater than 0"),
        ({"OBJECT_TTL": "30 seconds"}, "OBJECT_TTL", "duration such as 3s"),
        ({"POSTGRES_PORT": "http"}, "POSTGRES_PORT", "valid integer"),
        ({"POSTGRES_PORT": "70000"}, "POSTGRES_PORT", "less than or equal to 65535"),
        ({"ROUTINE_BATCH_SIZE": "0"}, "ROUTINE_BATCH_SIZE", "greater than or equal to 1"),
        ({"ROUTINE_BATCH_PAUSE": "a bit"}, "ROUTINE_BATCH_PAUSE", "duration such as 3s"),
        ({"ROUTINE_BATCH_PAUSE": "-50ms"}, "ROUTINE_BATCH_PAUSE", "duration such as 3s"),
        ({"ROUTINE_BATCH_PAUSE": "nan"}, "ROUTINE_BATCH_PAUSE", "duration such as 3s"),
        ({"ROUTINE_BATCH_PAUSE": "1m"}, "ROUTINE_BATCH_PAUSE", "less than or equal to 10"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "'debug'"),
        ({"POSTGRES_HOST": ""}, "POSTGRES_HOST", "at least 1 character"),
        ({"POSTGRES_HOST": None}, "POSTGRES_HOST", "required but not set"),
    ],
)
def test_bad_configuration_stops_with_one_clean_line(
    tmp_path: Path, overrides: dict[str, str | None], variable: str, expectation: str
) -> None:
    env = {**BASE_ENV, **overrides}
    env = {k: v for k, v in env.items() if v is not None}
    result = run_module("routine", env, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("routine: configuration error: ")
    assert variable in lines[0]
    assert expectation in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_database_that_refuses_the_login_stops_with_one_line(tmp_path: Path) -> None:
    """A missing database (or a wrong password) is not worth retrying: exit 1 naming the
    settings to check, no traceback."""
    env = {**BASE_ENV, "POSTGRES_DB": "lastseen_no_such_database", "STARTUP_TIMEOUT": "30s"}
    result = run_module("routine", env, tmp_path, timeout=20)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if "dependency_unavailable" in line]
    assert len(errors) == 1 and "POSTGRES_DB" in errors[0], result.stdout
