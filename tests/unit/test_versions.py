"""The start-up check of the libraries whose internals a fast path uses."""

from importlib import metadata

import pytest

from common.versions import (
    GUARDED_HTTP,
    TESTED,
    FastPath,
    UntestedLibrary,
    check_fast_paths,
    minor_of,
)
from producer.confirms import PublishMode
from producer.publish_modes import FAST_PATH as PIPELINE_FAST_PATH
from producer.settings import ProducerSettings

pytestmark = pytest.mark.unit


def fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str) -> None:
    real = metadata.version

    def version(package: str) -> str:
        if package in versions:
            if versions[package] == "missing":
                raise metadata.PackageNotFoundError(package)
            return versions[package]
        return real(package)

    monkeypatch.setattr(metadata, "version", version)


def test_the_installed_libraries_are_the_tested_ones() -> None:
    check_fast_paths([PIPELINE_FAST_PATH, GUARDED_HTTP])
    assert {p: minor_of(metadata.version(p)) for p in TESTED} == TESTED


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        (
            {"aiormq": "7.3.0"},
            "aiormq 7.3.0 is installed, but the fast path was tested with aiormq 7.2.x; "
            "install the tested version, or set PUBLISH_MODE=standard",
        ),
        (
            {"aiormq": "7.20.1"},  # same leading digits, other minor
            "aiormq 7.20.1 is installed, but the fast path was tested with aiormq 7.2.x; "
            "install the tested version, or set PUBLISH_MODE=standard",
        ),
        (
            {"pamqp": "missing"},
            "pamqp none is installed, but the fast path was tested with pamqp 4.0.x; "
            "install the tested version, or set PUBLISH_MODE=standard",
        ),
    ],
)
def test_another_minor_names_package_found_tested_and_fallback(
    monkeypatch: pytest.MonkeyPatch, installed: dict[str, str], message: str
) -> None:
    fake_versions(monkeypatch, **installed)
    with pytest.raises(UntestedLibrary) as raised:
        check_fast_paths([PIPELINE_FAST_PATH])
    assert str(raised.value) == message


@pytest.mark.parametrize("version", ["0.55.0", "0.53.2", "1.0.0", "missing"])
def test_another_uvicorn_says_install_the_tested_version(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """The slow-client guard has no public twin: the line says only what to install."""
    fake_versions(monkeypatch, uvicorn=version)
    with pytest.raises(UntestedLibrary) as raised:
        check_fast_paths([GUARDED_HTTP])
    found = "none" if version == "missing" else version
    assert str(raised.value) == (
        f"uvicorn {found} is installed, but the fast path was tested with uvicorn 0.54.x; "
        "install the tested version"
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (PublishMode.PIPELINE, (GUARDED_HTTP, PIPELINE_FAST_PATH)),
        (PublishMode.STANDARD, (GUARDED_HTTP,)),
    ],
)
def test_the_producer_checks_uvicorn_in_every_publish_mode(
    mode: PublishMode, expected: tuple[FastPath, ...]
) -> None:
    settings = ProducerSettings(
        amqp_uri="amqp://guest:guest@127.0.0.1:5672/", queue_name="q", publish_mode=mode
    )
    assert settings.fast_paths() == expected


def test_a_patch_release_of_the_tested_minor_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, aiormq="7.2.0", pamqp="4.0.9", uvicorn="0.54.7")
    check_fast_paths([PIPELINE_FAST_PATH, GUARDED_HTTP])


def test_no_fast_path_selected_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, aiormq="8.0.0", pamqp="5.0.0")
    check_fast_paths([])


def test_only_the_libraries_a_path_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, pamqp="5.0.0")
    check_fast_paths([FastPath(("aiormq",), "PUBLISH_MODE=standard")])


def test_aiohttp_is_no_longer_behind_a_version_guard() -> None:
    """No service code uses aiohttp internals any more (``STATUS_CLIENT=fast`` was retired)."""
    assert "aiohttp" not in TESTED
