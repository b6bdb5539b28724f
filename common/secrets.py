"""Secret settings: read from ``NAME_FILE`` (the Docker and Kubernetes secrets convention), and
kept out of logs and error messages.

A setting is secret when its field is declared with :data:`SECRET` (``AMQP_URI``,
``POSTGRES_PASSWORD``, ``CALLBACK_SIGNING_SECRETS``, ``CALLBACK_BEARER_TOKEN``). For each, the
variable ``NAME_FILE`` names a file holding the value; when set, it wins over ``NAME``, so a
deployment can mount a secret without first removing a development value from ``.env``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

SECRET: dict[str, Any] = {"secret": True}
"""``json_schema_extra`` of a secret field."""

FILE_SUFFIX = "_FILE"
MAX_SECRET_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A ``NAME_FILE`` that cannot be read: a configuration error (exit 2)."""


def is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True


def secret_names(model: type[BaseSettings]) -> list[str]:
    """The variable names of ``model``'s secret settings, upper case."""
    return [name.upper() for name, field in model.model_fields.items() if is_secret(field)]


def read_secret_file(variable: str, path: str) -> str:
    """The file's content without its trailing newline (editors and ``echo`` add one)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as error:
        raise SecretFileError(f"{variable}: cannot read {path!r}: {error.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{variable}: {path!r} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{variable}: {path!r} is not UTF-8 text") from None
    return text.rstrip("\r\n")


class SecretFilesSource(PydanticBaseSettingsSource):
    """Values of secret fields from the files their ``NAME_FILE`` variables name.

    ``NAME_FILE`` is looked up where ``NAME`` would be: the environment, then ``.env``.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], *variables: Mapping[str, str | None]
    ) -> None:
        super().__init__(settings_cls)
        self._variables: dict[str, str] = {}
        for found in reversed(variables):  # the first mapping wins
            self._variables.update(
                {key.lower(): value for key, value in found.items() if value is not None}
            )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            path = self._variables.get(f"{name}{FILE_SUFFIX}".lower())
            if path is None:
                continue
            variable = f"{name.upper()}{FILE_SUFFIX}"
            if not path:
                raise SecretFileError(f"{variable} is set but empty")
            values[name] = read_secret_file(variable, path)
        return values


def env_mapping(source: PydanticBaseSettingsSource) -> Mapping[str, str | None]:
    """The variables an env or dotenv source read (both keep them in ``env_vars``)."""
    found = getattr(source, "env_vars", None)
    return found if isinstance(found, Mapping) else {}


def mask_uri(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (each URI of a comma-separated list)."""
    return ",".join(_mask_one(part) for part in uri.split(","))


def _mask_one(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    if parts.password is None:
        return uri
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
