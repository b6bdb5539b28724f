"""The README's configuration table, generated from the settings models.

``python -m tests.support.config_table --write`` rewrites the table in README.md; the test suite
fails when the README and the models disagree.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from common.durations import format_duration, parse_duration
from common.secrets import is_secret

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"

# (service, module, class) — every model a service builds at start.
MODELS = [
    ("producer", "producer.settings", "ProducerSettings"),
    ("consumer", "consumer.settings", "ConsumerSettings"),
    ("routine", "routine.settings", "RoutineSettings"),
    ("tester", "tester.settings", "TesterSettings"),
]


def settings_fields() -> dict[str, tuple[FieldInfo, list[str]]]:
    """Every variable, with its field and the services that read it."""
    found: dict[str, tuple[FieldInfo, list[str]]] = {}
    for service, module, name in MODELS:
        model = getattr(importlib.import_module(module), name)
        for field_name, field in model.model_fields.items():
            variable = field_name.upper()
            if variable in found:
                found[variable][1].append(service)
            else:
                found[variable] = (field, [service])
    return found


def _default(field: FieldInfo) -> str:
    if field.is_required() or field.default is PydanticUndefined:
        return "**required**"
    value = field.default
    if value is None:
        return "unset"
    if value == "":
        return '""'
    if any(getattr(meta, "func", None) is parse_duration for meta in field.metadata):
        return f"`{format_duration(value)}`"
    return f"`{value}`"


def render() -> str:
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for variable, (field, services) in settings_fields().items():
        description = (field.description or "").replace("|", "\\|")
        if is_secret(field):
            description += (
                f"; secret: may come from the file named by `{variable}_FILE` (which wins); "
                "never logged"
            )
        rows.append(f"| `{variable}` | {_default(field)} | {', '.join(services)} | {description} |")
    return "\n".join(rows)


def readme_table(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    return match.group(1) if match else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args()
    table = render()
    if not args.write:
        print(table)  # noqa: T201 - a command-line tool's output
        return
    text = README.read_text()
    if START not in text:
        raise SystemExit(f"{README} has no {START} marker")
    updated = re.sub(
        re.escape(START) + r".*?" + re.escape(END), f"{START}\n{table}\n{END}", text, flags=re.S
    )
    README.write_text(updated)


if __name__ == "__main__":
    main()
