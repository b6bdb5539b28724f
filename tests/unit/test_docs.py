"""The documents stay true: their configuration tables are the settings models'."""

from pathlib import Path

import pytest

from tests.support import config_table

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("document", [config_table.CONFIGURATION, config_table.README])
def test_configuration_tables_match_the_settings_models(document: Path) -> None:
    expected = config_table.documents()[document]
    assert config_table.document_table(document.read_text()) == expected, (
        f"{document}'s configuration table is out of date: "
        "run `python -m tests.support.config_table --write`"
    )


def test_the_full_table_lists_every_setting_and_the_readme_a_few() -> None:
    everything = config_table.settings_fields()
    full = config_table.document_table(config_table.CONFIGURATION.read_text())
    readme = config_table.document_table(config_table.README.read_text())
    assert all(f"| `{name}` |" in full for name in everything)
    shown = [name for name in everything if f"| `{name}` |" in readme]
    assert sorted(shown) == sorted(config_table.MOST_CHANGED)


def test_an_unknown_setting_cannot_be_shown() -> None:
    with pytest.raises(ValueError, match="NO_SUCH_SETTING"):
        config_table.render(("LOG_LEVEL", "NO_SUCH_SETTING"))


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
    assert "./scripts/run" in text
    assert "./scripts/test" in text
