"""The configuration tables, generated from the settings models: every setting in
docs/configuration.md, the ones people change most in README.md.

``python -m tests.support.config_table --write`` rewrites both tables; the test suite fails when a
document and the models disagree.
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

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"

# The settings a newcomer changes first, in the README's order; the rest is in CONFIGURATION.
MOST_CHANGED = (
    "BROKER",
    "AMQP_URI",
    "PUBSUB_PROJECT_ID",
    "QUEUE_NAME",
    "STORE",
    "POSTGRES_HOST",
    "POSTGRES_PASSWORD",
    "REDIS_URL",
    "TESTER_ENDPOINT",
    "CALLBACK_ENDPOINT",
    "MAX_CONSUMERS",
    "OBJECT_TTL",
    "ROUTINE_INTERVAL",
    "LOG_LEVEL",
)

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


def render(only: tuple[str, ...] | None = None) -> str:
    """The table of every setting, or of ``only`` in that order."""
    fields = settings_fields()
    unknown = sorted(set(only or ()) - set(fields))
    if unknown:
        raise ValueError(f"no settings model reads {', '.join(unknown)}")
    chosen = [(name, fields[name]) for name in only] if only else list(fields.items())
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for variable, (field, services) in chosen:
        description = (field.description or "").replace("|", "\\|")
        if is_secret(field):
            description += (
                f"; secret: may come from the file named by `{variable}_FILE` (which wins); "
                "never logged"
            )
        rows.append(f"| `{variable}` | {_default(field)} | {', '.join(services)} | {description} |")
    return "\n".join(rows)


def documents() -> dict[Path, str]:
    """Each document with a generated table, and the table it must hold."""
    return {CONFIGURATION: render(), README: render(MOST_CHANGED)}


def document_table(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), text, re.S)
    return match.group(1) if match else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite the tables in docs/configuration.md and README.md",
    )
    args = parser.parse_args()
    if not args.write:
        print(render())  # noqa: T201 - a command-line tool's output
        return
    for document, table in documents().items():
        text = document.read_text()
        if START not in text:
            raise SystemExit(f"{document} has no {START} marker")
        before, _, rest = text.partition(START)
        _, _, after = rest.partition(END)
        document.write_text(f"{before}{START}\n{table}\n{END}{after}")


if __name__ == "__main__":
    main()
