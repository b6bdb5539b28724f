"""The README stays true: its configuration table is the settings models'."""

import pytest

from tests.support import config_table

pytestmark = pytest.mark.unit


def test_readme_configuration_table_matches_the_settings_models() -> None:
    in_readme = config_table.readme_table(config_table.README.read_text())
    assert in_readme == config_table.render(), (
        "README.md's configuration table is out of date: "
        "run `python -m tests.support.config_table --write`"
    )


def test_every_setting_is_described() -> None:
    undescribed = [
        variable
        for variable, (field, _) in config_table.settings_fields().items()
        if not field.description
    ]
    assert undescribed == []


def test_the_readme_shows_the_two_commands() -> None:
    text = config_table.README.read_text()
    assert "docker compose up -d" in text
    assert "./scripts/test" in text
